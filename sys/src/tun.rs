//! The demux's TUN device.
//!
//! A thin wrapper over `/dev/net/tun`: `TUNSETIFF` with `IFF_TUN | IFF_NO_PI`, optionally
//! `IFF_MULTI_QUEUE` so that each data thread owns one queue of the same interface. Link state
//! (up, MTU, queue length) is set with the classic `SIOCSIFMTU` / `SIOCSIFTXQLEN` /
//! `SIOCSIFFLAGS` ioctls on a throwaway socket; addresses and routes are the operator's (or
//! the lab's) business.
//!
//! Two modes. Plain: each read and write moves exactly one IP packet. Offload (`IFF_VNET_HDR`,
//! `TUNSETVNETHDRSZ` 10, `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)`): each read and
//! write moves one 10-byte `virtio_net_hdr` followed by a packet that may be a TCP super-packet
//! of up to 64 KiB (the demux's `offload` module reads and writes them). [`Tun::open`] asks for offload when told to and
//! falls back to plain mode, with a log line, when the kernel refuses it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of the `struct virtio_net_hdr` an offload-mode TUN is configured for
/// (`TUNSETVNETHDRSZ`): every read and write starts with this many header bytes.
pub const VNET_HEADER_LEN: usize = 10;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const SIOCSIFTXQLEN: libc::c_ulong = 0x8943;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// One queue of a TUN interface.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    offload: bool,
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqMtu {
    name: [u8; libc::IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

fn ifname_bytes(name: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1..=15 bytes without NUL"),
        ));
    }
    let mut out = [0u8; libc::IFNAMSIZ];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

impl Tun {
    /// Opens (creating if needed) TUN interface `name`. With `multi_queue`, further queues of the
    /// same interface can be opened by calling this again with the same name. With `offload`,
    /// asks for virtio-net headers and TCP segmentation offload, and falls back to plain mode
    /// (logging why) if the kernel refuses; [`Tun::offload`] tells which mode is in use.
    pub fn open(name: &str, multi_queue: bool, offload: bool) -> io::Result<Tun> {
        if offload {
            match Tun::open_mode(name, multi_queue, true) {
                Ok(tun) => return Ok(tun),
                Err(e) => tracing::warn!("TUN offload unavailable, one packet per read/write instead: {e}"),
            }
        }
        Tun::open_mode(name, multi_queue, false)
    }

    /// Opens one more queue of multi-queue interface `name`, in the mode its first queue is in
    /// (`offload` as [`Tun::offload`] said): the kernel refuses a queue whose flags differ.
    pub fn open_queue(name: &str, offload: bool) -> io::Result<Tun> {
        Tun::open_mode(name, true, offload)
    }

    fn open_mode(name: &str, multi_queue: bool, offload: bool) -> io::Result<Tun> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open /dev/net/tun ({e}): braid-demux needs root or CAP_NET_ADMIN and the tun module"
                    ),
                )
            })?;
        let mut flags = IFF_TUN | IFF_NO_PI;
        if multi_queue {
            flags |= IFF_MULTI_QUEUE;
        }
        if offload {
            flags |= IFF_VNET_HDR;
        }
        let mut req = IfReqFlags {
            name: ifname_bytes(name)?,
            flags,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReqFlags` lays out (name
        // then a short of flags, padded to the kernel's 40-byte size); the fd is open.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReqFlags) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                ": creating or attaching to a TUN device needs root or CAP_NET_ADMIN"
            } else {
                ""
            };
            return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}{hint}")));
        }
        if offload {
            let header_len = VNET_HEADER_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; the fd is open.
            if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &header_len as *const libc::c_int) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("TUNSETVNETHDRSZ {name}: {e}")));
            }
            let features: libc::c_ulong = (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6).into();
            // SAFETY: TUNSETOFFLOAD takes the feature bits as the argument value itself.
            if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, features) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("TUNSETOFFLOAD {name}: {e}")));
            }
        }
        let end = req.name.iter().position(|b| *b == 0).unwrap_or(req.name.len());
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        Ok(Tun { file, name, offload })
    }

    /// Whether every read and write carries a virtio_net_hdr (offload mode).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// The interface name the kernel assigned.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the interface MTU and the length of each of its queues (packets the kernel holds
    /// for a reader before it drops), and brings it up.
    pub fn set_mtu_and_up(&self, mtu: u16, queue_len: u32) -> io::Result<()> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            let mut mtu_req = IfReqMtu {
                name: ifname_bytes(&self.name)?,
                mtu: mtu.into(),
                _pad: [0; 20],
            };
            // SAFETY: SIOCSIFMTU takes a `struct ifreq` with the MTU as int after the name.
            if unsafe { libc::ioctl(sock, libc::SIOCSIFMTU, &mut mtu_req as *mut IfReqMtu) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut queue_req = IfReqMtu {
                name: ifname_bytes(&self.name)?,
                mtu: libc::c_int::try_from(queue_len).unwrap_or(libc::c_int::MAX),
                _pad: [0; 20],
            };
            // SAFETY: SIOCSIFTXQLEN takes a `struct ifreq` with the queue length as int after the
            // name, the same layout as the MTU.
            if unsafe { libc::ioctl(sock, SIOCSIFTXQLEN, &mut queue_req as *mut IfReqMtu) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut flags = IfReqFlags {
                name: ifname_bytes(&self.name)?,
                flags: 0,
                _pad: [0; 22],
            };
            // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write the flags short of a `struct ifreq`.
            if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut flags as *mut IfReqFlags) } < 0 {
                return Err(io::Error::last_os_error());
            }
            flags.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            // SAFETY: as above.
            if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut flags as *mut IfReqFlags) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })();
        // SAFETY: `sock` is a descriptor this function opened and nobody else holds.
        unsafe { libc::close(sock) };
        result
    }

    /// Reads one packet (in offload mode: one vnet header and one packet). `Ok(None)` when no packet is waiting (the fd is non-blocking).
    #[inline]
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// Writes one packet (in offload mode: one vnet header and one packet). A full queue
    /// (`EAGAIN`) or a packet the kernel refuses comes back as an error for the caller to count.
    #[inline]
    pub fn write(&self, packet: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `packet` is valid for reads of `packet.len()` bytes.
            let n = unsafe { libc::write(self.file.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Writes `header` and `packet` as one packet with `writev(2)`, so a packet received
    /// elsewhere gets its vnet header without being copied. Errors as [`Tun::write`].
    #[inline]
    pub fn write_with_header(&self, header: &[u8], packet: &[u8]) -> io::Result<()> {
        let iov = [
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        loop {
            // SAFETY: both iovecs describe live slices the kernel only reads.
            let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// How many packets the kernel has dropped on their way into interface `name` because its
/// queues were full (`tx_dropped`: for a TUN, the kernel transmits what the demux reads), or
/// `None` if the statistics cannot be read.
pub fn queue_drops(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/tx_dropped"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
