//! Kernel steering: the kernel hands each packet a site sends to the data thread owning its flow.
//!
//! Design: the demux's data threads each own a queue of one multi-queue TUN, and each flow has
//! one owner thread. Left to itself the kernel picks a TUN queue by its own hash (or by the
//! queue that last wrote the flow), so about half the packets reach a thread that must copy
//! them over to their owner. Here the owner function runs in the kernel instead: a small eBPF
//! socket-filter program ([`program`]) attached to the TUN (`TUNSETSTEERINGEBPF`) returns the
//! owner's index for every packet the kernel sends out through the interface, and queue *i* is
//! the *i*-th queue opened. The choice is a pure function of the packet, so a flow always takes
//! one queue.
//!
//! The GENEVE sockets are deliberately not steered by their inner packets: a gateway's
//! datagrams arrive coalesced (GSO passing through, GRO), a reuseport program sees only the
//! first of a coalesced train, and a flow whose packets sometimes ride in another flow's train
//! would reach its owner by two paths, in either order. Their kernel hash (by outer addresses
//! and ports) keeps one path per gateway, so inbound packets keep being handed over.
//!
//! The handoff between threads stays as the fallback for a packet the program places
//! differently from the demux, so steering only saves work, it never decides correctness.
//! Loading needs `CAP_BPF` (or `CAP_SYS_ADMIN`); without it the caller logs why and the kernel's
//! own choice stands.

pub mod program;

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use program::Insn;
pub use program::{owner_program, OWNER_MIX};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `_IOR('T', 224, int)`.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
const LICENSE: &[u8] = b"Apache-2.0\0";
const VERIFIER_LOG_BYTES: usize = 64 * 1024;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, zero-padded past what any kernel reads.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    _rest: [u64; 8],
}

/// The `BPF_PROG_TEST_RUN` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` value laid out as the part of `union
    // bpf_attr` that `command` reads, passed with its exact size; the kernel writes back at most
    // that many bytes, and every pointer inside it is set by the callers to live buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A loaded owner program.
#[derive(Debug)]
pub struct OwnerProgram {
    fd: OwnedFd,
}

impl OwnerProgram {
    /// Loads the owner program for `threads` threads. An error says what the kernel refused,
    /// with the verifier's log when it has one.
    pub fn load(threads: u32) -> io::Result<OwnerProgram> {
        let insns = owner_program(threads);
        match load(&insns, None) {
            Ok(fd) => Ok(OwnerProgram { fd }),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(io::Error::new(
                e.kind(),
                format!("loading the steering program needs CAP_BPF or CAP_SYS_ADMIN: {e}"),
            )),
            Err(e) => {
                let mut log = vec![0u8; VERIFIER_LOG_BYTES];
                let again = load(&insns, Some(&mut log));
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "the kernel refused the steering program: {e} ({:?}): {}",
                        again.err(),
                        text.trim()
                    ),
                ))
            }
        }
    }

    /// Makes the program choose the queue of multi-queue TUN `tun` (any queue's descriptor)
    /// for every packet the kernel sends out through it.
    pub fn steer_tun(&self, tun: &impl AsRawFd) -> io::Result<()> {
        let fd: libc::c_int = self.fd.as_raw_fd();
        // SAFETY: TUNSETSTEERINGEBPF reads one int (a program descriptor) through the pointer.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETSTEERINGEBPF, &fd as *const libc::c_int) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETSTEERINGEBPF: {e}")));
        }
        Ok(())
    }

    /// Runs the program once in the kernel (`BPF_PROG_TEST_RUN`) on IP packet `data` and
    /// returns what it returned: the owner.
    pub fn run(&self, data: &[u8]) -> io::Result<u32> {
        // The kernel builds the test packet from an Ethernet frame and hands a socket filter
        // what follows the Ethernet header.
        let mut frame = vec![0u8; 14 + data.len()];
        let ethertype: u16 = if data.first().map(|b| b >> 4) == Some(6) {
            0x86dd
        } else {
            0x0800
        };
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        frame[14..].copy_from_slice(data);
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ..TestRunAttr::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok(attr.retval)
    }
}

fn load(insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..11].copy_from_slice(b"braid_owner");
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}
