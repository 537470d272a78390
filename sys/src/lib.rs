//! The system calls of braid's data path, behind safe APIs.
//!
//! Design: this is the only data-path crate with unsafe code. Every `unsafe` block that the
//! gateways and the demux run lives here; `braid-core`, `braid-ipsec`, `braid-demux` and
//! `braid-gw` are `#![forbid(unsafe_code)]` and reach the kernel only through this crate (or
//! through safe crates such as `std`, `socket2` and `rustix`). Each module wraps one kind of
//! system call behind a safe API whose types keep the invariants the calls need (buffers
//! allocated once and owned by the batch, descriptors owned by the wrapper), and every unsafe
//! block carries a `// SAFETY:` comment saying why it is sound.
//!
//! * [`udp`]: batched UDP socket I/O (`recvmmsg`/`sendmmsg`) with GSO and GRO, socket setup and
//!   `poll(2)` over data sockets.
//! * [`tun`]: the TUN device (`TUNSETIFF`, offload ioctls, link state), `read`/`write`/`writev`.
//! * [`memory`]: large fixed arrays advised onto transparent huge pages (`madvise`) and CPU
//!   prefetch hints.
//! * [`signal`]: the SIGTERM/SIGINT handler that asks a daemon to stop (`sigaction`).
//! * [`steer`]: the eBPF program that makes the kernel deliver each packet to the data thread
//!   owning its flow (`bpf(2)`, `TUNSETSTEERINGEBPF`, `SO_ATTACH_REUSEPORT_EBPF`).
//!
//! * [`allocations`]: a global allocator that counts each thread's allocations, for the tests
//!   that show per-packet work allocates nothing.
//! * [`process`]: starting daemons detached from their starter's process group and descriptors
//!   (`close_range(2)` between fork and exec), for the controller's supervisor and the lab.
//!
//! Nothing here allocates per packet. Tooling outside the data path (the controller's lab and
//! supervisor, the bench harness) keeps its own, separately reviewed, unsafe code.

pub mod allocations;
pub mod memory;
pub mod process;
pub mod signal;
pub mod steer;
pub mod tun;
pub mod udp;
