//! Checks shared by the `offload_segment` and `offload_coalesce` targets: what a segment the
//! demux writes must look like, and what a coalesced batch must amount to.
//!
//! Design: a batch is coalesced exactly as the inbound thread does (`start_batch`, `push` in
//! order, `emits`, `assemble` into a 64 KiB scratch buffer); every super-packet is then split
//! again with the demux's own `Segmenter` (TSO of the kernel's GRO result, as the kernel
//! would), and each piece must be one of the pushed packets: same flow, sequence number and
//! payload, each pushed packet used once. So nothing is invented, lost or duplicated, and
//! [`coalesce_and_check`] can hand back the batch as the wire would carry it.

use std::collections::{HashMap, VecDeque};

use braid_demux::offload::kernel_model::split_udp_super_packet;
use braid_demux::offload::{Coalescer, Emit, GsoType, Segmenter, VnetHeader, MAX_SUPER_PACKET, VNET_HEADER_LEN};

use crate::packet::{fold, ipv4_header_ok, Segment, TCP};

/// A segment written by the `Segmenter` must be a plain, fully checksummed TCP packet whose
/// headers are `headers_len` long; returns its payload.
pub fn check_segment(packet: &[u8], headers_len: usize) -> &[u8] {
    let s = Segment::locate(packet).expect("a segment is a plain IP packet");
    assert_eq!(s.end, packet.len(), "segment length disagrees with its IP header");
    assert_eq!(s.proto, TCP);
    if s.version == 4 {
        assert!(ipv4_header_ok(packet), "segment IPv4 header checksum");
    }
    assert!(s.checksum_ok(packet), "segment TCP checksum");
    assert_eq!(s.start + s.tcp_header_len(packet).expect("TCP header"), headers_len);
    &packet[headers_len..]
}

/// Addresses and ports: what the coalescer calls a flow.
fn flow(packet: &[u8], s: &Segment) -> Vec<u8> {
    let addrs = if s.version == 4 {
        &packet[12..20]
    } else {
        &packet[8..40]
    };
    [addrs, &packet[s.start..s.start + 4]].concat()
}

fn seq(packet: &[u8], s: &Segment) -> [u8; 4] {
    packet[s.start + 4..s.start + 8].try_into().unwrap()
}

/// Coalesces `packets` as one batch and checks the plan; returns what the TUN would carry, in
/// emission order, with every super-packet segmented again.
///
/// With `udp`, runs of UDP datagrams are merged too, and each UDP super-packet is split again
/// by the kernel's rules (`kernel_model`): the pieces must be its member datagrams, byte for
/// byte and in order.
pub fn coalesce_and_check(packets: &[Vec<u8>], udp: bool) -> Vec<Vec<u8>> {
    let n = packets.len();
    let mut coalescer = Coalescer::new(n.max(1));
    coalescer.set_udp(udp);
    coalescer.start_batch(n);
    for (i, p) in packets.iter().enumerate() {
        coalescer.push(i, p);
    }
    let emits: Vec<Emit> = coalescer.emits().collect();
    let mut used = vec![false; n];
    for e in &emits {
        if let Emit::Packet(i) = *e {
            assert!(!used[i], "packet {i} emitted twice");
            used[i] = true;
        }
    }
    let received: usize = packets.iter().map(Vec::len).sum();
    let mut scratch = vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET];
    let mut index = Members::new(packets);
    let mut wire = Vec::new();
    for e in emits {
        match e {
            Emit::Packet(i) => wire.push(packets[i].clone()),
            Emit::SuperPacket { run, segments } if coalescer.is_udp(run) => {
                assert!(udp, "UDP merged with UDP merging off");
                let len = coalescer.assemble(run, |i| &packets[i][..], &mut scratch);
                let pieces = split_udp_super_packet(&scratch[..len]);
                let members: Vec<usize> = coalescer.members(run).collect();
                assert_eq!(pieces.len(), segments);
                assert_eq!(members.len(), segments);
                for (piece, &i) in pieces.iter().zip(&members) {
                    // The datagram pushed ends where its IP length says (the kernel trims what
                    // follows). DF is set on every merged IPv4 datagram, so the kernel
                    // renumbers their identifications (and so their header checksums):
                    // everything else must be the datagram pushed.
                    let end = Segment::locate(&packets[i])
                        .expect("a merged datagram is plain UDP")
                        .end;
                    let pushed = &packets[i][..end];
                    let (got, pushed) = if piece[0] >> 4 == 4 {
                        assert!(ipv4_header_ok(piece), "a UDP piece's IPv4 header checksum");
                        (without_ipv4_ident(piece), without_ipv4_ident(pushed))
                    } else {
                        (piece.clone(), pushed.to_vec())
                    };
                    assert_eq!(got, pushed, "a UDP piece differs from datagram {i}");
                    assert!(!used[i], "datagram {i} emitted twice");
                    used[i] = true;
                }
                assert_eq!(coalescer.wire_bytes(run), pieces.iter().map(Vec::len).sum::<usize>());
                wire.extend(pieces);
            }
            Emit::SuperPacket { run, segments } => {
                assert!(segments >= 2);
                let len = coalescer.assemble(run, |i| &packets[i][..], &mut scratch);
                assert!(
                    len - VNET_HEADER_LEN <= received,
                    "super-packet of {len} bytes from {received}"
                );
                let claimed = coalescer.wire_bytes(run);
                assert!(claimed <= received);
                let pieces = resegment(&scratch[..len], segments);
                let mut members = 0;
                for piece in &pieces {
                    members += index.take(&mut used, piece);
                }
                assert_eq!(members, claimed, "wire_bytes disagrees with the members");
                wire.extend(pieces);
            }
        }
    }
    assert!(used.iter().all(|&u| u), "a pushed packet was never emitted");
    wire
}

/// An IPv4 packet without its identification and header checksum.
fn without_ipv4_ident(packet: &[u8]) -> Vec<u8> {
    [&packet[..4], &packet[6..10], &packet[12..]].concat()
}

/// Splits an assembled super-packet (vnet header first) back into its `segments` segments.
fn resegment(assembled: &[u8], segments: usize) -> Vec<Vec<u8>> {
    let vnet = VnetHeader::parse(assembled).expect("the coalescer writes a valid vnet header");
    assert!(vnet.needs_csum());
    assert_ne!(vnet.gso_type, GsoType::None);
    let packet = &assembled[VNET_HEADER_LEN..];
    let s = Segment::locate(packet).expect("a super-packet is a plain IP packet");
    assert_eq!(s.end, packet.len());
    assert_eq!(usize::from(vnet.csum_start), s.start);
    let field = s.start + usize::from(vnet.csum_offset);
    let partial = u16::from_be_bytes([packet[field], packet[field + 1]]);
    assert_eq!(
        partial,
        fold(s.pseudo),
        "the checksum field must hold the pseudo-header sum"
    );
    let headers_len = s.start + s.tcp_header_len(packet).expect("TCP header");
    assert_eq!(usize::from(vnet.hdr_len), headers_len);
    let mut segmenter = Segmenter::new(&vnet, packet).expect("a super-packet segments");
    assert_eq!(segmenter.segments(), segments);
    let mut out = vec![0u8; segmenter.max_segment_len()];
    let mut pieces = Vec::new();
    while let Some(len) = segmenter.next_into(&mut out).expect("buffer of max_segment_len") {
        check_segment(&out[..len], headers_len);
        pieces.push(out[..len].to_vec());
    }
    assert_eq!(pieces.len(), segments);
    pieces
}

/// Flow, sequence number and payload of a plain TCP packet: what a segment must share with
/// the pushed packet it stands for.
type Key = (Vec<u8>, [u8; 4], Vec<u8>);

fn key(packet: &[u8]) -> Option<(Key, usize)> {
    let s = Segment::locate(packet).filter(|s| s.proto == TCP)?;
    let payload = s.tcp_payload(packet)?.to_vec();
    Some(((flow(packet, &s), seq(packet, &s), payload), s.end))
}

/// The pushed plain TCP packets by [`Key`], in push order, so a segment finds the packet it
/// stands for without a scan (a batch from the segmenter has thousands of packets).
struct Members {
    by_key: HashMap<Key, VecDeque<(usize, usize)>>,
}

impl Members {
    fn new(packets: &[Vec<u8>]) -> Self {
        let mut by_key: HashMap<Key, VecDeque<(usize, usize)>> = HashMap::new();
        for (i, p) in packets.iter().enumerate() {
            if let Some((key, end)) = key(p) {
                by_key.entry(key).or_default().push_back((i, end));
            }
        }
        Members { by_key }
    }

    /// Marks the first unused pushed packet that `piece` stands for and returns its length on
    /// the wire.
    fn take(&mut self, used: &mut [bool], piece: &[u8]) -> usize {
        let (key, _) = key(piece).expect("a segment is plain TCP");
        if let Some(queue) = self.by_key.get_mut(&key) {
            while let Some((i, end)) = queue.pop_front() {
                if !used[i] {
                    used[i] = true;
                    return end;
                }
            }
        }
        panic!("a coalesced segment matches no pushed packet: {piece:02x?}");
    }
}
