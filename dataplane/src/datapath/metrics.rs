//! Packet and byte counters by verdict (drop reason) and direction
//! (DP_METRICS, per CPU).

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray};
use dataplane_common::{Counter, Direction, DropReason, MAP_METRICS, metric_index};

use super::{map_err, take};
use crate::error::Result;

pub struct Metrics {
    map: PerCpuArray<MapData, Counter>,
}

/// One counter, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub reason: DropReason,
    pub direction: Direction,
    pub packets: u64,
    pub bytes: u64,
}

impl Metrics {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Metrics { map: take(ebpf, MAP_METRICS)? })
    }

    /// Every (reason, direction) counter.
    pub fn read(&self) -> Result<Vec<Metric>> {
        let mut rows = Vec::new();
        for reason in DropReason::ALL {
            for direction in Direction::ALL {
                let values =
                    self.map.get(&metric_index(reason, direction), 0).map_err(map_err(MAP_METRICS))?;
                let (packets, bytes) = values.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
                rows.push(Metric { reason, direction, packets, bytes });
            }
        }
        Ok(rows)
    }
}
