//! The demux's TSO in userspace (`braid_demux::offload::Segmenter`) and `complete_checksum`
//! on what the kernel hands the outbound thread: a `virtio_net_hdr` and a packet.
//!
//! Input: the 10-byte vnet header, a byte choosing the output buffer (0: exactly
//! `max_segment_len`, else that many bytes short of it, which must be refused without
//! consuming anything), then the packet.
//!
//! Checks: a header that parses writes back to the same bytes; for an ordinary packet needing
//! its checksum completed, only the checksum field changes and it then verifies (with an
//! independent RFC 1071 sum); for a super-packet, exactly `segments()` segments come out, each
//! no longer than `max_segment_len`, a plain TCP packet with valid IPv4 header and TCP
//! checksums, sequence numbers advancing by the payload already sent, and their payloads
//! concatenate to the input's; then the segments, pushed in batches of `BATCH` into the
//! coalescer (as the peer demux's inbound thread receives them), re-coalesce to the same
//! payload (`braid_fuzz::offload::coalesce_and_check`).

#![no_main]

use braid_demux::datapath::BATCH;
use braid_demux::offload::{complete_checksum, GsoType, OffloadError, Segmenter, VnetHeader};
use braid_fuzz::offload::{check_segment, coalesce_and_check};
use braid_fuzz::packet::{fold, sum, Segment};
use braid_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

/// Super-packets that make more segments are only checked up to `Segmenter::new` (the kernel
/// sends at most 64 KiB / MSS, about 45).
const MAX_SEGMENTS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let header_bytes = input.take(10);
    let short = usize::from(input.u8());
    let packet = input.rest();
    let Ok(header) = VnetHeader::parse(header_bytes) else {
        return;
    };
    let mut written = [0u8; 10];
    header.write(&mut written);
    assert_eq!(&written[..], header_bytes);

    if header.gso_type == GsoType::None {
        check_complete_checksum(&header, packet);
        return;
    }
    let Ok(mut segmenter) = Segmenter::new(&header, packet) else {
        return;
    };
    let s = Segment::locate(packet).expect("a segmentable packet is plain TCP");
    let headers_len = s.start + s.tcp_header_len(packet).expect("TCP header");
    let payload = &packet[headers_len..s.end];
    let max = segmenter.max_segment_len();
    let count = segmenter.segments();
    assert!(count >= 1 && count <= payload.len().max(1));
    if count > MAX_SEGMENTS {
        // The same code as for fewer segments, thousands of times over: only slows the run.
        return;
    }

    if short > 0 {
        let mut small = vec![0u8; max.saturating_sub(short)];
        assert_eq!(segmenter.next_into(&mut small), Err(OffloadError::BadGsoSize));
        assert_eq!(segmenter.remaining(), count);
    }
    let seq0 = u32::from_be_bytes(packet[s.start + 4..s.start + 8].try_into().unwrap());
    let mut out = vec![0u8; max];
    let mut segments = Vec::with_capacity(count);
    let mut sent = 0usize;
    while let Some(len) = segmenter.next_into(&mut out).expect("a buffer of max_segment_len") {
        assert!(len <= max);
        let piece = check_segment(&out[..len], headers_len);
        let seq = u32::from_be_bytes(out[s.start + 4..s.start + 8].try_into().unwrap());
        assert_eq!(seq, seq0.wrapping_add(sent as u32));
        assert_eq!(piece, &payload[sent..sent + piece.len()]);
        sent += piece.len();
        segments.push(out[..len].to_vec());
        assert_eq!(segmenter.remaining(), count - segments.len());
    }
    assert_eq!(segments.len(), count);
    assert_eq!(sent, payload.len());

    // In batches as the inbound thread receives them (one `recvmmsg` of up to BATCH).
    let again: Vec<u8> = segments
        .chunks(BATCH)
        .flat_map(|batch| coalesce_and_check(batch, true))
        .flat_map(|p| Segment::locate(&p).unwrap().tcp_payload(&p).unwrap().to_vec())
        .collect();
    assert_eq!(again, payload, "re-coalesced payload differs");
});

fn check_complete_checksum(header: &VnetHeader, packet: &[u8]) {
    let mut done = packet.to_vec();
    if complete_checksum(header, &mut done).is_err() || !header.needs_csum() {
        assert_eq!(done, packet);
        return;
    }
    let start = usize::from(header.csum_start);
    let field = start + usize::from(header.csum_offset);
    for (i, (a, b)) in packet.iter().zip(&done).enumerate() {
        assert!(a == b || i == field || i == field + 1, "byte {i} changed");
    }
    // The field held the pseudo-header sum; with the result in its place the whole verifies.
    // (Checksum fields sit at even offsets; the kernel never sends an odd `csum_offset`.)
    if header.csum_offset % 2 == 1 {
        return;
    }
    let old = u64::from(u16::from_be_bytes([packet[field], packet[field + 1]]));
    assert_eq!(
        fold(sum(old, &done[start..])),
        0xffff,
        "completed checksum does not verify"
    );
}
