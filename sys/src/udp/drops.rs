//! What a socket's kernel dropped on arrival because its receive buffer was full.
//!
//! The kernel counts these per socket (`SO_MEMINFO`'s `SK_MEMINFO_DROPS`) and per namespace
//! (`RcvbufErrors`), never where the datagram's sender or receiver would see them. A data
//! thread that falls behind therefore loses datagrams silently unless it reads the count:
//! [`ReceiveDrops`] does, at the caller's pace (a timer tick, not per packet), and hands back
//! what the count grew by so it can be added to an ordinary drop counter.
//!
//! The kernel counts messages: a GRO train (up to 64 datagrams) dropped whole counts once, so
//! the figure is a floor on the datagrams lost, and any growth means the socket overflowed.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `SK_MEMINFO_DROPS` in the array `SO_MEMINFO` returns (`include/uapi/linux/sock_diag.h`).
const SK_MEMINFO_DROPS: usize = 8;
/// `SK_MEMINFO_VARS`: the array's length on the kernels this knows.
const SK_MEMINFO_VARS: usize = 9;

/// The kernel's count of messages `socket` dropped for want of receive-buffer room, since it
/// was opened (it wraps at 2^32).
pub fn receive_drops(socket: &impl AsFd) -> io::Result<u32> {
    let mut meminfo = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&meminfo) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `meminfo`, which is that long, and
    // stores the length it wrote into `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            meminfo.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < (SK_MEMINFO_DROPS + 1) * std::mem::size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO without a drop count",
        ));
    }
    Ok(meminfo[SK_MEMINFO_DROPS])
}

/// Follows one socket's kernel drop count and reports its growth.
#[derive(Debug)]
pub struct ReceiveDrops {
    /// The count at the last reading; `None` until a reading succeeds (or if the kernel
    /// cannot report it).
    last: Option<u32>,
}

impl ReceiveDrops {
    /// Starts following `socket` from its current count.
    pub fn new(socket: &impl AsFd) -> ReceiveDrops {
        ReceiveDrops {
            last: receive_drops(socket).ok(),
        }
    }

    /// Messages dropped since the last call (0 if the count cannot be read).
    pub fn take(&mut self, socket: &impl AsFd) -> u64 {
        let Ok(now) = receive_drops(socket) else {
            return 0;
        };
        self.grew_to(now)
    }

    /// The pure half of [`ReceiveDrops::take`]: records the count `now` and returns its growth,
    /// across the counter's wrap at 2^32.
    pub fn grew_to(&mut self, now: u32) -> u64 {
        let grew = self.last.map_or(0, |last| now.wrapping_sub(last));
        self.last = Some(now);
        u64::from(grew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_survives_the_kernel_counter_wrapping() {
        let mut drops = ReceiveDrops { last: None };
        assert_eq!(drops.grew_to(u32::MAX - 1), 0, "the first reading is the baseline");
        assert_eq!(drops.grew_to(u32::MAX), 1);
        assert_eq!(drops.grew_to(4), 5);
        assert_eq!(drops.grew_to(4), 0);
    }
}
