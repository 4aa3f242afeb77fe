//! Counting verdicts into `DP_METRICS` (per-CPU, keyed by reason and direction).

use dataplane_common::{Direction, DropReason, metric_index};

use crate::maps::METRICS;

/// Adds one packet of `len` bytes to the (reason, dir) counter.
#[inline(always)]
pub fn count(reason: DropReason, dir: Direction, len: u32) {
    if let Some(cell) = METRICS.get_ptr_mut(metric_index(reason, dir)) {
        // SAFETY: per-CPU cell returned by the kernel for this CPU; no other
        // writer runs concurrently on it.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += len as u64;
        }
    }
}
