//! braid-demux: the site's steering point.
//!
//! Every packet the site routes into the demux's TUN is classified ([`braid_core::wire`]),
//! steered to a gateway pair by the sans-IO [`steer`] core (flow table + Maglev over a keyed
//! symmetric hash) and sent to that pair's gateway in GENEVE over UDP; GENEVE coming back is
//! checked and written to the TUN. [`datapath`] holds the data threads (one per core by default,
//! each owning a TUN queue, a GENEVE socket and the flows it owns; their decisions are the
//! sans-IO [`datapath::processor`]), [`tun`] the device (re-exported from `braid-sys`, which
//! holds every system call that needs unsafe code; this crate has none), [`offload`]
//! segmentation and coalescing in userspace, [`settings`] what a demux is told by the cluster
//! configuration. Each data thread marks a progress stamp every canary round
//! ([`datapath::DataPath::progress`]); the binary's main thread feeds systemd's watchdog only
//! while every stamp is fresh ([`braid_core::service`]).

#![forbid(unsafe_code)]

/// The unit tests count heap allocations per thread (the data path's must be none).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: braid_sys::allocations::CountingAllocator = braid_sys::allocations::CountingAllocator;

pub mod canary;
pub mod control;
pub mod datapath;
pub mod offload;
pub mod settings;
pub mod steer;

pub use braid_sys::tun;
