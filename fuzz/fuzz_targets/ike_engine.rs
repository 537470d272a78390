//! An `ike::Engine` pair driven by a fuzzer-chosen script: the engines must never panic, and
//! the events they emit must make sense to a data path (see `braid_fuzz::engine`).
//!
//! Input: a setup byte picking both configurations (suites, who initiates, wrong PSK, narrowed
//! traffic selectors, wrong identity), then operations: deliver / drop / replay / mutate /
//! truncate the messages the engines send each other, inject fuzzer bytes (raw, or behind the
//! live IKE SA's SPIs), let time pass through `handle_timeout`, `rekey_child`, `peer_alive`,
//! restarts and ESP through the installed CHILD SAs. Every `handle` result is ignored (drops
//! are fine); `poll_transmit` and `poll_event` are drained after each operation.

#![no_main]

use std::time::Instant;

use braid_fuzz::engine::Sim;
use braid_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Bytes::new(data);
    let setup = r.u8();
    let mut sim = Sim::new(setup, Instant::now(), false);
    sim.run_script(&mut r);
});
