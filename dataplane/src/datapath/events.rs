//! Drop and policy events for `dataplane monitor`: the ring buffer the
//! programs write them to (DP_EVENTS), the switch that turns reporting on
//! (DP_MONITOR) and the per-CPU budget that limits it (DP_EVENT_RATE);
//! events are fanned out to every listening client. The datapath reports
//! only while at least one client listens ([`Monitor::subscribe`] turns it
//! on, dropping the last [`Subscription`] turns it off).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use dataplane_common::{
    Direction, DropReason, Event, EventRate, MAP_EVENT_RATE, MAP_EVENTS, MAP_MONITOR, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;

use super::{lock, map_err, take};
use crate::error::{Error, Result};
use crate::store::State;

pub struct Events {
    /// Taken by the reader task when it starts.
    ring: Mutex<Option<RingBuf<MapData>>>,
    switch: Mutex<Array<MapData, u32>>,
    rate: PerCpuArray<MapData, EventRate>,
}

impl Events {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Events {
            ring: Mutex::new(Some(take(ebpf, MAP_EVENTS)?)),
            switch: Mutex::new(take(ebpf, MAP_MONITOR)?),
            rate: take(ebpf, MAP_EVENT_RATE)?,
        })
    }

    /// The ring buffer, for the one reader task.
    pub fn take_ring(&self) -> Result<RingBuf<MapData>> {
        lock(&self.ring)
            .take()
            .ok_or_else(|| Error::Internal("the event ring buffer has a reader already".into()))
    }

    /// Turns event reporting on (a monitor listens) or off.
    pub fn set_reporting(&self, on: bool) -> Result<()> {
        lock(&self.switch).set(0, u32::from(on), 0).map_err(map_err(MAP_MONITOR))
    }

    /// Events the per-CPU budget suppressed, summed over CPUs.
    pub fn suppressed(&self) -> Result<u64> {
        Ok(self.rate.get(&0, 0).map_err(map_err(MAP_EVENT_RATE))?.iter().map(|r| r.suppressed).sum())
    }
}

/// Events a slow client may lag behind before it misses some.
const BACKLOG: usize = 4096;

/// One event as the API streams it (a line of JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MonitorEvent {
    /// Nanoseconds since boot (bpf_ktime_get_ns).
    pub time_ns: u64,
    pub reason: String,
    pub direction: String,
    pub proto: String,
    pub source: String,
    pub destination: String,
    /// Sandbox owning the source / destination address, when one does.
    pub source_sandbox: Option<String>,
    pub destination_sandbox: Option<String>,
}

impl MonitorEvent {
    /// Names the parts of a raw event; sandboxes are found by address in `state`.
    pub fn from_raw(ev: &Event, state: Option<&State>) -> Self {
        let reason = DropReason::ALL.get(ev.reason as usize).map(|r| r.name()).unwrap_or("UNKNOWN");
        let direction = Direction::ALL.get(ev.dir as usize).map(|d| d.name()).unwrap_or("unknown");
        let proto = match ev.proto {
            PROTO_TCP => "tcp".to_string(),
            PROTO_UDP => "udp".to_string(),
            PROTO_ICMP => "icmp".to_string(),
            0 => "other".to_string(),
            p => format!("ip-proto-{p}"),
        };
        let end = |addr: [u8; 4], port: u16| {
            let ip = Ipv4Addr::from(addr);
            if matches!(ev.proto, PROTO_TCP | PROTO_UDP) {
                format!("{ip}:{}", u16::from_be(port))
            } else {
                ip.to_string()
            }
        };
        let owner = |addr: [u8; 4]| {
            let ip = Ipv4Addr::from(addr);
            let st = state?;
            let ep = st.endpoints.iter().find(|e| e.ip == ip)?;
            st.sandboxes.iter().find(|s| s.id == ep.sandbox_id).map(|s| s.name.clone())
        };
        MonitorEvent {
            time_ns: ev.ts_ns,
            reason: reason.to_string(),
            direction: direction.to_string(),
            proto,
            source: end(ev.saddr, ev.sport),
            destination: end(ev.daddr, ev.dport),
            source_sandbox: owner(ev.saddr),
            destination_sandbox: owner(ev.daddr),
        }
    }

    /// One line for humans.
    pub fn line(&self) -> String {
        let who = |addr: &str, sb: &Option<String>| match sb {
            Some(n) => format!("{addr} ({n})"),
            None => addr.to_string(),
        };
        format!(
            "DROP {:<26} {:<7} {:<5} {} -> {}",
            self.reason,
            self.direction,
            self.proto,
            who(&self.source, &self.source_sandbox),
            who(&self.destination, &self.destination_sandbox)
        )
    }
}

/// The fan-out of datapath events.
pub struct Monitor {
    tx: broadcast::Sender<Event>,
    listeners: AtomicUsize,
}

/// A listening client; reporting stops when the last one goes.
pub struct Subscription {
    pub rx: broadcast::Receiver<Event>,
    monitor: Arc<Monitor>,
    set: Arc<dyn Fn(bool) + Send + Sync>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.monitor.listeners.fetch_sub(1, Ordering::SeqCst) == 1 {
            (self.set)(false);
        }
    }
}

impl Monitor {
    pub fn new() -> Arc<Self> {
        Arc::new(Monitor { tx: broadcast::channel(BACKLOG).0, listeners: AtomicUsize::new(0) })
    }

    /// A new listener; `set(true)` turns reporting on for the first one.
    pub fn subscribe(self: &Arc<Self>, set: Arc<dyn Fn(bool) + Send + Sync>) -> Subscription {
        let rx = self.tx.subscribe();
        if self.listeners.fetch_add(1, Ordering::SeqCst) == 0 {
            set(true);
        }
        Subscription { rx, monitor: Arc::clone(self), set }
    }

    /// Reads the ring buffer until the daemon stops.
    pub fn spawn_reader(self: &Arc<Self>, ring: RingBuf<MapData>) -> std::io::Result<()> {
        // SAFETY: the ring buffer owns its map fd, which stays open (and the
        // same) for as long as the AsyncFd holds it.
        let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let Ok(mut guard) = fd.readable_mut().await else { return };
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    if item.len() >= std::mem::size_of::<Event>() {
                        // SAFETY: the kernel wrote one `Event` (repr(C), plain data) per record.
                        let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
                        let _ = me.tx.send(ev);
                    }
                }
                guard.clear_ready();
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_events_are_named() {
        let ev = Event {
            ts_ns: 7,
            reason: DropReason::PolicyIcc as u32,
            dir: Direction::FromSandbox as u32,
            proto: PROTO_TCP,
            saddr: [10, 0, 0, 2],
            daddr: [10, 0, 0, 3],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            ..Event::default()
        };
        let m = MonitorEvent::from_raw(&ev, None);
        assert_eq!(m.reason, "POLICY_ICC");
        assert_eq!(m.direction, "egress");
        assert_eq!(m.source, "10.0.0.2:40000");
        assert_eq!(m.destination, "10.0.0.3:80");
        assert!(m.line().contains("POLICY_ICC"));
    }
}

/// The last line of a monitor stream the daemon ends (it is stopping).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct StreamEnd {
    pub end: String,
}

impl StreamEnd {
    pub fn stopping() -> Self {
        StreamEnd { end: "the dataplane daemon is stopping".into() }
    }
}
