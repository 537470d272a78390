//! The gateway's WireGuard suite (`braid_gw::wireguard::WireGuardSuite`): `decapsulate` of
//! arbitrary datagrams from arbitrary sources and of real, modified and replayed data packets,
//! on an established pair; the script and the checks are `braid_fuzz::gw`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| braid_fuzz::gw::run_wireguard(data));
