//! Bounds-checked access to packet bytes: every header read goes through
//! [`ptr_at`], which the verifier can follow.

use aya_ebpf::{helpers::bpf_csum_diff, programs::TcContext};

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

/// The Internet checksum of the `len` bytes at `bytes` (a multiple of 4;
/// a buffer on the stack or in a map value), as the bytes to store in
/// memory order; None if the helper refuses.
///
/// # Safety
/// `bytes` must point to `len` readable bytes.
#[inline(always)]
pub unsafe fn checksum(bytes: *const u8, len: u32) -> Option<[u8; 2]> {
    // SAFETY: the caller's promise; the helper only reads.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, bytes as *mut u32, len, 0) };
    if sum < 0 {
        return None;
    }
    let mut s = sum as u64;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    Some((!(s as u16)).to_ne_bytes())
}
