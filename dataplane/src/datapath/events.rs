//! Drop and policy events for `dataplane monitor`: the ring buffer the
//! programs write them to (DP_EVENTS), the switch that turns reporting on
//! (DP_MONITOR) and the per-CPU budget that limits it (DP_EVENT_RATE);
//! events are fanned out to every listening client. The datapath reports
//! only while at least one client listens ([`Monitor::subscribe`] turns it
//! on, dropping the last [`Subscription`] turns it off).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use dataplane_common::{Event, EventRate, MAP_EVENT_RATE, MAP_EVENTS, MAP_MONITOR};
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;

use super::write::put;
use super::{lock, map_err, take};
use crate::error::{Error, Result};

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
        put(&mut *lock(&self.switch), 0, u32::from(on)).map_err(map_err(MAP_MONITOR))
    }

    /// Events the per-CPU budget suppressed, summed over CPUs.
    pub fn suppressed(&self) -> Result<u64> {
        Ok(self.rate.get(&0, 0).map_err(map_err(MAP_EVENT_RATE))?.iter().map(|r| r.suppressed).sum())
    }
}

/// Events a slow client may lag behind before it misses some.
const BACKLOG: usize = 4096;

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
