//! The gateway's IPsec suite (`braid_gw::ipsec::IpsecSuite`): `decapsulate` of arbitrary
//! datagrams (IKE, ESP-in-UDP, keepalives, junk) from arbitrary sources and of real, modified
//! and replayed ESP packets, on an established pair; the script and the checks are
//! `braid_fuzz::gw`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| braid_fuzz::gw::run_ipsec(data));
