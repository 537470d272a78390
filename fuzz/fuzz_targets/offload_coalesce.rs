//! The demux's GRO in userspace (`braid_demux::offload::Coalescer`) on a batch of packets as
//! the inbound thread pushes them (inner packets of accepted GENEVE datagrams).
//!
//! Input: a mode byte (bit 0: fill in every packet's TCP/UDP checksum first, so mutated
//! segments still qualify for merging; bit 1: merge UDP datagrams too, as the demux does on a
//! kernel that takes UDP super-packets), then up to 64 packets, each a u16 LE length (modulo
//! 2049) and that many bytes.
//!
//! Checks (`braid_fuzz::offload::coalesce_and_check`): every pushed packet is emitted exactly
//! once, alone or inside one super-packet; a super-packet is never longer than the bytes
//! pushed, has a valid vnet header (TCP GSO, NEEDS_CSUM, `csum_start` at the TCP header, the
//! pseudo-header sum in the checksum field, `hdr_len` the headers), and segments again into
//! exactly its `segments` packets, each a valid TCP packet that equals a pushed one in flow,
//! sequence number and payload; `wire_bytes` is the length of those members. A UDP
//! super-packet, split as the kernel splits it, gives back its member datagrams byte for byte.
//! Per flow, the payload emitted is the payload pushed, in the same order.

#![no_main]

use std::collections::HashMap;

use braid_fuzz::offload::coalesce_and_check;
use braid_fuzz::packet::{Segment, TCP};
use braid_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

const MAX_PACKETS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mode = input.u8();
    let mut packets = Vec::new();
    while !input.is_empty() && packets.len() < MAX_PACKETS {
        let mut p = input.bytes(2048).to_vec();
        if mode & 1 != 0 {
            if let Some(s) = Segment::locate(&p) {
                s.fill_checksum(&mut p);
            }
        }
        packets.push(p);
    }
    let wire = coalesce_and_check(&packets, mode & 2 != 0);
    assert_eq!(
        flow_payloads(&wire),
        flow_payloads(&packets),
        "a flow's bytes changed or were reordered"
    );
});

/// The TCP payload of every plain TCP packet, concatenated per flow (addresses and ports).
fn flow_payloads(packets: &[Vec<u8>]) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut flows: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for p in packets {
        let Some(s) = Segment::locate(p).filter(|s| s.proto == TCP) else {
            continue;
        };
        let Some(payload) = s.tcp_payload(p) else { continue };
        let addrs = if s.version == 4 { &p[12..20] } else { &p[8..40] };
        let key = [addrs, &p[s.start..s.start + 4]].concat();
        flows.entry(key).or_default().extend_from_slice(payload);
    }
    flows
}
