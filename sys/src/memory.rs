//! Fixed arrays for large lookup tables (the demux's flow table), backed by transparent huge pages where possible.
//!
//! A flow table of a million flows spans tens of megabytes read at random; with 4 KiB pages
//! nearly every lookup also misses the TLB. [`filled_slice`] reserves the array first, asks Linux
//! to back it with transparent huge pages (`madvise(MADV_HUGEPAGE)`, which matters when the
//! system's THP mode is `madvise`), and only then writes it, so the first touch already faults in
//! 2 MiB pages. The advice is best effort: if the kernel declines, the table simply uses small
//! pages. Arrays are allocated once, at construction.
//!
//! [`prefetch`] lets batch lookups start the cache misses of several packets at once.

/// Below this many bytes huge pages cannot help (one 2 MiB page is the unit).
const HUGE_PAGE: usize = 2 << 20;

/// A boxed slice of `len` copies of `value`, huge-page backed when large enough.
pub fn filled_slice<T: Clone>(len: usize, value: T) -> Box<[T]> {
    let mut v = Vec::with_capacity(len);
    advise_huge_pages(v.as_ptr() as usize, len * std::mem::size_of::<T>());
    v.resize(len, value);
    v.into_boxed_slice()
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, bytes: usize) {
    if bytes < HUGE_PAGE {
        return;
    }
    // madvise needs a page-aligned start; advising the aligned interior is enough.
    let page = 4096;
    let aligned = start.next_multiple_of(page);
    let len = (start + bytes).saturating_sub(aligned) / page * page;
    if len == 0 {
        return;
    }
    // SAFETY: the range lies inside an allocation this function's caller owns and has not yet
    // initialised; MADV_HUGEPAGE only changes how the kernel backs those pages, never their
    // contents or validity, and a failure is harmless (small pages stay in use).
    unsafe {
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: usize, _bytes: usize) {}

/// Hints the CPU to start loading the cache lines of `value` (a no-op off x86-64).
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = value as *const T as *const i8;
        let last = first.wrapping_add(std::mem::size_of::<T>().saturating_sub(1));
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch is only a hint: it never
        // faults or changes memory, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_small_and_large_arrays() {
        let small = filled_slice(10, 7u8);
        assert_eq!(&*small, &[7u8; 10]);
        let large = filled_slice(HUGE_PAGE + 3, 0xabu8);
        assert_eq!(large.len(), HUGE_PAGE + 3);
        assert!(large.iter().all(|&b| b == 0xab));
    }
}
