//! Counting heap allocations per thread, so tests can show that per-packet work allocates
//! nothing.
//!
//! [`CountingAllocator`] wraps the system allocator and counts, in a thread-local counter,
//! every allocation and reallocation the calling thread makes. A test binary installs it with
//! `#[global_allocator]` and measures a closure with [`allocations_during`]; other threads
//! (tests running in parallel) do not disturb the count. The daemons do not install it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Allocations made by this thread since it started. Constant-initialised with no
    /// destructor, so the allocator can touch it without allocating or recursing.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // A thread being torn down may have lost its thread-locals; its allocations go uncounted.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

/// The system allocator, counting each thread's allocations (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; counting touches only a thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's layout is passed on as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation here is),
        // and the caller upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations (and reallocations) the calling thread has made so far. Counts only when
/// [`CountingAllocator`] is the global allocator; otherwise always 0.
pub fn allocations_so_far() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

/// Runs `work` and returns its result with the allocations the calling thread made meanwhile.
pub fn allocations_during<R>(work: impl FnOnce() -> R) -> (R, u64) {
    let before = allocations_so_far();
    let result = work();
    (result, allocations_so_far() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    #[test]
    fn counts_what_this_thread_allocates_and_nothing_else() {
        let (v, n) = allocations_during(|| {
            let mut v: Vec<u64> = Vec::with_capacity(4);
            v.extend([1, 2, 3, 4, 5]); // a fifth element grows it: a reallocation
            std::hint::black_box(v)
        });
        assert_eq!(v.len(), 5);
        assert_eq!(n, 2, "one allocation and one reallocation");
        let ((), n) = allocations_during(|| {
            let mut sum = 0u64;
            for x in [1u64, 2, 3] {
                sum += std::hint::black_box(x);
            }
            std::hint::black_box(sum);
        });
        assert_eq!(n, 0, "arithmetic allocates nothing");
        let other = std::thread::spawn(|| {
            let ((), n) = allocations_during(|| {
                std::hint::black_box(vec![0u8; 64]);
            });
            n
        });
        let ((), here) = allocations_during(|| std::thread::sleep(std::time::Duration::from_millis(20)));
        assert_eq!(other.join().unwrap(), 1, "the other thread counts its own");
        assert_eq!(here, 0, "and this thread does not see it");
    }
}
