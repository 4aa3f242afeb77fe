//! Bounds-checked access to packet bytes: every header read goes through
//! [`ptr_at`], which the verifier can follow.

use aya_ebpf::programs::TcContext;

/// Pointer to a `T` at byte `offset` of the packet, or `None` when the
/// packet is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}
