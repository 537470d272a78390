//! Clocks and identifiers shared by both ends of a test.
//!
//! Send timestamps are `CLOCK_MONOTONIC` nanoseconds. Network namespaces on one kernel share that
//! clock, so a receiver can turn them into one-way latency exactly when sender and receiver run
//! on the same kernel — which both ends detect by comparing the kernel's boot id.

use std::io;

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The running kernel's boot id, or an empty string when it cannot be read.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether two boot ids prove both ends read the same monotonic clock.
pub fn clocks_shared(a: &str, b: &str) -> bool {
    !a.is_empty() && a == b
}

/// A random 64-bit value from the kernel, used as a test id.
pub fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: the pointer and length describe `bytes`, which lives across the call.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_ns() >= a + 1_000_000);
    }

    #[test]
    fn empty_boot_ids_never_count_as_shared() {
        assert!(!clocks_shared("", ""));
        assert!(clocks_shared("x", "x"));
        assert!(!clocks_shared("x", "y"));
    }
}
