//! GRO in userspace: the TCP segments, and the UDP datagrams, of one received batch merged
//! into super-packets.
//!
//! Design: the data path [`Coalescer::push`]es every packet of a batch in arrival order, then
//! walks [`Coalescer::emits`] and writes each one to the TUN: an untouched packet (behind a
//! zero vnet header) or a super-packet that [`Coalescer::assemble`] builds in one scratch
//! buffer. Planning copies nothing; the coalescer keeps only packet indices, the first packet's
//! headers per run and two small per-packet arrays, all allocated once.
//!
//! A packet joins the run that is open for its flow (same IP version, addresses and ports)
//! when it continues it exactly, the rules the kernel's own GRO applies:
//! * plain TCP with data, flags ACK (PSH allowed, and it ends the run), a valid checksum (the
//!   kernel will trust the merged packet's checksum, so a corrupted segment must not hide in
//!   it), IPv4 without options and with DF set;
//! * the sequence number the run expects next, the same acknowledgment, window, urgent pointer
//!   and option bytes, the same IPv4 TOS/TTL/flags or IPv6 class/label/hop limit;
//! * a payload no longer than the run's first (a shorter one ends the run) and a total within
//!   64 KiB.
//!
//! Any other packet of a flow closes that flow's open run and is emitted on its own, so a
//! flow's packets always leave in the order they arrived; only packets of different flows may
//! overtake each other. A merged run is written with a vnet header saying TCPv4/TCPv6 GSO,
//! `gso_size` = the first payload's size and NEEDS_CSUM with the TCP checksum field holding the
//! pseudo-header sum, which is what the kernel expects of a partially checksummed packet.
//!
//! **UDP** ([`Coalescer::set_udp`], wireguard-go's "UDP GRO" on the TUN): consecutive
//! datagrams of one flow (same addresses and ports) with the same payload size, the last of a
//! run possibly shorter (it ends the run), a valid non-zero checksum, IPv4 without options and
//! with DF set, and the same IPv4 TOS/TTL or IPv6 class/label/hop limit, become one
//! super-packet of at most [`braid_core::udp::MAX_GSO_SEGMENTS`] datagrams, written with
//! `VIRTIO_NET_HDR_GSO_UDP_L4` (Linux 6.2 and later); the kernel cuts it back into the same
//! datagrams (IPv4 identifications renumbered from the first) as late as it can. Small
//! datagrams are where this pays: one TUN write for a whole run instead of one per datagram.

use braid_core::wire::checksum;
use braid_core::wire::ipv4::Ipv4Packet;
use braid_core::wire::ipv6::{Ipv6Packet, IPV6_HEADER_LEN};

use braid_core::flow::proto;
use braid_core::udp::MAX_GSO_SEGMENTS;

use super::layout::{FlowKey, L4Layout, TCP_CHECKSUM_AT, TCP_FLAGS_AT, UDP_CHECKSUM_AT};
use super::vnet::{GsoType, VnetHeader, FLAG_NEEDS_CSUM, VNET_HEADER_LEN};
use super::MAX_SUPER_PACKET;

/// The longest headers a run keeps: IPv6 (40) plus TCP with full options (60).
const MAX_HEADERS: usize = 100;
/// TCP ACK and PSH flags.
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// One thing to write to the TUN, in order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Emit {
    /// Packet `index` as it was pushed, behind [`VnetHeader::NONE`].
    Packet(usize),
    /// Run `run` merged by [`Coalescer::assemble`]; it carries `segments` packets.
    SuperPacket { run: usize, segments: usize },
}

/// Plans the coalescing of one batch of up to `capacity` packets.
#[derive(Debug)]
pub struct Coalescer {
    runs: Vec<Run>,
    /// Per packet index: the next packet of the same run.
    next: Vec<u16>,
    /// Per packet index: its TCP payload length when it is part of a run.
    payload_len: Vec<u16>,
    /// Whether UDP datagrams are merged too.
    udp: bool,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    first: u16,
    last: u16,
    count: u16,
    flow: Option<FlowKey>,
    open: bool,
    layout: L4Layout,
    headers: [u8; MAX_HEADERS],
    gso_size: u16,
    payload_total: u32,
    next_seq: u32,
    push: bool,
}

/// What a packet offers to a run.
#[derive(Clone, Copy)]
struct Candidate {
    layout: L4Layout,
    seq: u32,
    payload_len: u16,
    push: bool,
}

impl Candidate {
    fn check(layout: L4Layout, packet: &[u8]) -> Option<Candidate> {
        let headers_len = layout.headers_len();
        if headers_len > MAX_HEADERS || (layout.version == 4 && (layout.ip_header_len != 20 || packet[6] & 0x40 == 0)) {
            return None;
        }
        let t = layout.ip_header_len;
        let flags = packet[t + TCP_FLAGS_AT];
        let payload_len = layout.len - headers_len;
        if flags & !PSH != ACK || payload_len == 0 {
            return None;
        }
        let tcp = &packet[t..layout.len];
        let pseudo = layout.pseudo_header(packet, tcp.len());
        if checksum::finish(checksum::accumulate(pseudo, tcp)) != 0 {
            return None;
        }
        Some(Candidate {
            layout,
            seq: u32::from_be_bytes([packet[t + 4], packet[t + 5], packet[t + 6], packet[t + 7]]),
            payload_len: payload_len as u16,
            push: flags & PSH != 0,
        })
    }
}

impl Run {
    fn single(index: u16, flow: Option<FlowKey>, layout: L4Layout) -> Run {
        Run {
            first: index,
            last: index,
            count: 1,
            flow,
            open: false,
            layout,
            headers: [0; MAX_HEADERS],
            gso_size: 0,
            payload_total: 0,
            next_seq: 0,
            push: false,
        }
    }

    fn start(index: u16, flow: FlowKey, packet: &[u8], c: &Candidate) -> Run {
        let mut run = Run::single(index, Some(flow), c.layout);
        let headers_len = c.layout.headers_len();
        run.headers[..headers_len].copy_from_slice(&packet[..headers_len]);
        run.open = !c.push;
        run.push = c.push;
        run.gso_size = c.payload_len;
        run.payload_total = u32::from(c.payload_len);
        run.next_seq = c.seq.wrapping_add(u32::from(c.payload_len));
        run
    }

    fn accepts(&self, packet: &[u8], c: &Candidate) -> bool {
        self.open
            && self.layout.version == c.layout.version
            && self.layout.headers_len() == c.layout.headers_len()
            && c.seq == self.next_seq
            && c.payload_len <= self.gso_size
            && self.layout.headers_len() + self.payload_total as usize + usize::from(c.payload_len) <= MAX_SUPER_PACKET
            && self.same_headers(packet)
    }

    fn start_datagram(index: u16, flow: FlowKey, packet: &[u8], layout: L4Layout, payload_len: u16) -> Run {
        let mut run = Run::single(index, Some(flow), layout);
        let headers_len = layout.headers_len();
        run.headers[..headers_len].copy_from_slice(&packet[..headers_len]);
        run.open = true;
        run.gso_size = payload_len;
        run.payload_total = u32::from(payload_len);
        run
    }

    fn accepts_datagram(&self, packet: &[u8], layout: L4Layout, payload_len: u16) -> bool {
        self.open
            && self.layout.proto == proto::UDP
            && self.layout.version == layout.version
            && self.layout.headers_len() == layout.headers_len()
            && payload_len <= self.gso_size
            && usize::from(self.count) < MAX_GSO_SEGMENTS
            && self.layout.headers_len() + self.payload_total as usize + usize::from(payload_len) <= MAX_SUPER_PACKET
            && self.same_ip(packet)
    }

    /// Whether the IP header fields that must not change within a run are unchanged.
    fn same_ip(&self, packet: &[u8]) -> bool {
        let h = &self.headers;
        if self.layout.version == 4 {
            h[0..2] == packet[0..2] && h[6..10] == packet[6..10]
        } else {
            h[0..4] == packet[0..4] && h[6..8] == packet[6..8]
        }
    }

    /// Whether everything that must not change within a run is unchanged.
    fn same_headers(&self, packet: &[u8]) -> bool {
        let h = &self.headers;
        let ip_same = self.same_ip(packet);
        let t = self.layout.ip_header_len;
        let end = self.layout.headers_len();
        let flags = t + TCP_FLAGS_AT;
        ip_same
            && h[t + 8..flags] == packet[t + 8..flags]
            && h[flags] & !PSH == packet[flags] & !PSH
            && h[flags + 1..t + TCP_CHECKSUM_AT] == packet[flags + 1..t + TCP_CHECKSUM_AT]
            && h[t + TCP_CHECKSUM_AT + 2..end] == packet[t + TCP_CHECKSUM_AT + 2..end]
    }
}

/// The payload length of a UDP datagram that may join a run: IPv4 without options and with
/// DF set (so renumbered identifications mean nothing), a payload, and a non-zero checksum
/// that verifies (the kernel will trust the merged packet's).
fn datagram_candidate(layout: L4Layout, packet: &[u8]) -> Option<u16> {
    if layout.headers_len() > MAX_HEADERS
        || (layout.version == 4 && (layout.ip_header_len != 20 || packet[6] & 0x40 == 0))
    {
        return None;
    }
    let t = layout.ip_header_len;
    let payload_len = layout.len - layout.headers_len();
    let udp = &packet[t..layout.len];
    if payload_len == 0 || udp[UDP_CHECKSUM_AT..UDP_CHECKSUM_AT + 2] == [0, 0] {
        return None;
    }
    let pseudo = layout.pseudo_header(packet, udp.len());
    (checksum::finish(checksum::accumulate(pseudo, udp)) == 0).then_some(payload_len as u16)
}

impl Coalescer {
    /// A coalescer for batches of up to `capacity` packets (at most 65535).
    pub fn new(capacity: usize) -> Coalescer {
        let capacity = capacity.min(usize::from(u16::MAX));
        Coalescer {
            runs: Vec::with_capacity(capacity),
            next: vec![0; capacity],
            payload_len: vec![0; capacity],
            udp: false,
        }
    }

    /// Merges UDP datagrams too (off by default): for a TUN whose kernel takes
    /// `VIRTIO_NET_HDR_GSO_UDP_L4` writes.
    pub fn set_udp(&mut self, on: bool) {
        self.udp = on;
    }

    /// Whether UDP datagrams are merged.
    pub fn udp(&self) -> bool {
        self.udp
    }

    /// Whether run `run` is made of UDP datagrams.
    pub fn is_udp(&self, run: usize) -> bool {
        self.runs[run].layout.proto == proto::UDP
    }

    /// The packet indices of run `run`, in order.
    pub fn members(&self, run: usize) -> impl Iterator<Item = usize> + '_ {
        let r = &self.runs[run];
        let mut member = usize::from(r.first);
        (0..r.count).map(move |_| {
            let this = member;
            member = usize::from(self.next[member]);
            this
        })
    }

    /// Forgets the previous batch and makes room for one of `packets` packets (at most
    /// 65535). Allocates only when a batch is larger than every one before it.
    pub fn start_batch(&mut self, packets: usize) {
        self.runs.clear();
        let packets = packets.min(usize::from(u16::MAX));
        if packets > self.next.len() {
            self.next.resize(packets, 0);
            self.payload_len.resize(packets, 0);
            self.runs.reserve(packets);
        }
    }

    /// Adds packet `index` of the batch, a whole IP packet. Packets must be pushed in arrival
    /// order, each index once per batch, and `index` must be below the size given to
    /// [`Self::new`] or [`Self::start_batch`].
    ///
    /// # Panics
    /// If `index` is not below the capacity or more packets than that are pushed: caller bugs.
    pub fn push(&mut self, index: usize, packet: &[u8]) {
        assert!(
            index < self.next.len() && self.runs.len() < self.next.len(),
            "coalescer overfilled"
        );
        let index16 = index as u16;
        if self.udp {
            if let Ok(layout) = L4Layout::udp(packet) {
                self.push_datagram(index, packet, layout);
                return;
            }
        }
        let Ok(layout) = L4Layout::tcp(packet) else {
            self.runs.push(Run::single(index16, None, L4Layout::default()));
            return;
        };
        let flow = layout.flow_key(packet);
        let open = self.runs.iter().rposition(|r| r.open && r.flow == Some(flow));
        let candidate = Candidate::check(layout, packet);
        if let (Some(j), Some(c)) = (open, &candidate) {
            let run = &mut self.runs[j];
            if run.accepts(packet, c) {
                self.next[usize::from(run.last)] = index16;
                self.payload_len[index] = c.payload_len;
                run.last = index16;
                run.count += 1;
                run.payload_total += u32::from(c.payload_len);
                run.next_seq = run.next_seq.wrapping_add(u32::from(c.payload_len));
                run.push |= c.push;
                run.open = !c.push && c.payload_len == run.gso_size;
                return;
            }
        }
        if let Some(j) = open {
            self.runs[j].open = false;
        }
        self.runs.push(match candidate {
            Some(c) => {
                self.payload_len[index] = c.payload_len;
                Run::start(index16, flow, packet, &c)
            }
            None => Run::single(index16, Some(flow), layout),
        });
    }

    /// [`Coalescer::push`] for a UDP datagram.
    fn push_datagram(&mut self, index: usize, packet: &[u8], layout: L4Layout) {
        let index16 = index as u16;
        let flow = layout.flow_key(packet);
        let open = self.runs.iter().rposition(|r| r.open && r.flow == Some(flow));
        let payload_len = datagram_candidate(layout, packet);
        if let (Some(j), Some(len)) = (open, payload_len) {
            let run = &mut self.runs[j];
            if run.accepts_datagram(packet, layout, len) {
                self.next[usize::from(run.last)] = index16;
                self.payload_len[index] = len;
                run.last = index16;
                run.count += 1;
                run.payload_total += u32::from(len);
                run.open = len == run.gso_size;
                return;
            }
        }
        if let Some(j) = open {
            self.runs[j].open = false;
        }
        self.runs.push(match payload_len {
            Some(len) => {
                self.payload_len[index] = len;
                Run::start_datagram(index16, flow, packet, layout, len)
            }
            None => Run::single(index16, Some(flow), layout),
        });
    }

    /// What to write, in order.
    pub fn emits(&self) -> impl Iterator<Item = Emit> + '_ {
        self.runs.iter().enumerate().map(|(run, r)| match r.count {
            1 => Emit::Packet(usize::from(r.first)),
            segments => Emit::SuperPacket {
                run,
                segments: usize::from(segments),
            },
        })
    }

    /// The bytes run `run` stands for on the wire: every member packet's headers and payload.
    pub fn wire_bytes(&self, run: usize) -> usize {
        let r = &self.runs[run];
        usize::from(r.count) * r.layout.headers_len() + r.payload_total as usize
    }

    /// Writes run `run` into `out` as a vnet header followed by one super-packet, and returns
    /// the length written. `packet_at(i)` must return the bytes pushed as packet `i`.
    ///
    /// # Panics
    /// If `out` is shorter than [`VNET_HEADER_LEN`] + [`MAX_SUPER_PACKET`] or `run` is not a
    /// [`Emit::SuperPacket`] of this batch: caller bugs.
    pub fn assemble<'a>(&self, run: usize, packet_at: impl Fn(usize) -> &'a [u8], out: &mut [u8]) -> usize {
        assert!(
            out.len() >= VNET_HEADER_LEN + MAX_SUPER_PACKET,
            "super-packet buffer too small"
        );
        let r = &self.runs[run];
        let layout = r.layout;
        let headers_len = layout.headers_len();
        let udp = layout.proto == proto::UDP;
        let checksum_at = if udp { UDP_CHECKSUM_AT } else { TCP_CHECKSUM_AT };
        let vnet = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type: match (udp, layout.version) {
                (true, _) => GsoType::UdpL4,
                (false, 4) => GsoType::TcpV4,
                (false, _) => GsoType::TcpV6,
            },
            hdr_len: headers_len as u16,
            gso_size: r.gso_size,
            csum_start: layout.ip_header_len as u16,
            csum_offset: checksum_at as u16,
        };
        vnet.write(out);
        let packet = &mut out[VNET_HEADER_LEN..];
        packet[..headers_len].copy_from_slice(&r.headers[..headers_len]);
        let mut at = headers_len;
        let mut member = usize::from(r.first);
        for _ in 0..r.count {
            let len = usize::from(self.payload_len[member]);
            packet[at..at + len].copy_from_slice(&packet_at(member)[headers_len..headers_len + len]);
            at += len;
            member = usize::from(self.next[member]);
        }
        let packet = &mut packet[..at];
        if layout.version == 4 {
            let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
            ip.set_total_len(at as u16);
            ip.fill_checksum();
        } else {
            Ipv6Packet::new_unchecked(&mut *packet).set_payload_len((at - IPV6_HEADER_LEN) as u16);
        }
        let t = layout.ip_header_len;
        if udp {
            packet[t + 4..t + 6].copy_from_slice(&((at - t) as u16).to_be_bytes());
        } else if r.push {
            packet[t + TCP_FLAGS_AT] |= PSH;
        }
        let pseudo = checksum::fold(layout.pseudo_header(packet, at - t));
        packet[t + checksum_at..t + checksum_at + 2].copy_from_slice(&pseudo.to_be_bytes());
        VNET_HEADER_LEN + at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::segment::{complete_checksum, Segmenter};
    use crate::offload::testutil::{tcp_v4, tcp_v4_between, tcp_v6, verify_tcp_packet, TcpSpec, V4_DST};

    const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0];

    /// `sizes.len()` consecutive segments of one flow starting at `seq`; the last carries PSH.
    fn run_of(sizes: &[usize], seq: u32, build: fn(&TcpSpec) -> Vec<u8>) -> Vec<Vec<u8>> {
        let mut seq = seq;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let last = i + 1 == sizes.len();
                let spec = TcpSpec {
                    seq,
                    ip_id: 100 + i as u16,
                    flags: if last { ACK | PSH } else { ACK },
                    options: TIMESTAMPS.to_vec(),
                    payload: (0..size).map(|b| (b as u32 ^ seq) as u8).collect(),
                    ..TcpSpec::default()
                };
                seq = seq.wrapping_add(size as u32);
                build(&spec)
            })
            .collect()
    }

    fn plan(packets: &[Vec<u8>]) -> (Coalescer, Vec<Emit>) {
        let mut coalescer = Coalescer::new(64);
        for (i, p) in packets.iter().enumerate() {
            coalescer.push(i, p);
        }
        let emits = coalescer.emits().collect();
        (coalescer, emits)
    }

    /// Every packet the emits stand for, as the receiving kernel would see them on the wire.
    fn unpack(coalescer: &Coalescer, emits: &[Emit], packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET];
        for emit in emits {
            match *emit {
                Emit::Packet(i) => out.push(packets[i].clone()),
                Emit::SuperPacket { run, segments } => {
                    let len = coalescer.assemble(run, |i| &packets[i][..], &mut buf);
                    let header = VnetHeader::parse(&buf[..len]).unwrap();
                    let mut completed = buf[VNET_HEADER_LEN..len].to_vec();
                    complete_checksum(&header, &mut completed).unwrap();
                    verify_tcp_packet(&completed);
                    let mut segmenter = Segmenter::new(&header, &buf[VNET_HEADER_LEN..len]).unwrap();
                    assert_eq!(segmenter.segments(), segments);
                    let mut seg = [0u8; 2048];
                    while let Some(n) = segmenter.next_into(&mut seg).unwrap() {
                        out.push(seg[..n].to_vec());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_run_coalesces_and_splits_back_byte_identical() {
        for build in [tcp_v4 as fn(&TcpSpec) -> Vec<u8>, tcp_v6] {
            let packets = run_of(&[1400, 1400, 1400, 1400, 900], 5000, build);
            let (coalescer, emits) = plan(&packets);
            assert_eq!(emits, [Emit::SuperPacket { run: 0, segments: 5 }]);
            let mut buf = vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET];
            let len = coalescer.assemble(0, |i| &packets[i][..], &mut buf);
            let header = VnetHeader::parse(&buf).unwrap();
            assert_eq!(header.gso_size, 1400);
            assert_eq!(usize::from(header.hdr_len), packets[0].len() - 1400);
            assert_eq!(len, VNET_HEADER_LEN + usize::from(header.hdr_len) + 4 * 1400 + 900);
            assert_eq!(unpack(&coalescer, &emits, &packets), packets);
        }
    }

    #[test]
    fn a_sequence_gap_starts_a_new_run() {
        let mut packets = run_of(&[1000, 1000], 0, tcp_v4);
        packets.extend(run_of(&[1000, 1000], 3000, tcp_v4));
        let (coalescer, emits) = plan(&packets);
        assert_eq!(
            emits,
            [
                Emit::SuperPacket { run: 0, segments: 2 },
                Emit::SuperPacket { run: 1, segments: 2 }
            ]
        );
        assert_eq!(unpack(&coalescer, &emits, &packets), packets);
    }

    #[test]
    fn a_flag_change_breaks_the_run_and_keeps_order() {
        let mut packets = run_of(&[1000, 1000, 1000, 1000], 0, tcp_v4);
        let mut fin = packets[2].clone();
        fin[20 + TCP_FLAGS_AT] |= 0x01;
        let fixed = {
            let mut spec_packet = fin.clone();
            spec_packet[36..38].fill(0);
            let layout = L4Layout::tcp(&spec_packet).unwrap();
            let pseudo = layout.pseudo_header(&spec_packet, spec_packet.len() - 20);
            checksum::finish(checksum::accumulate(pseudo, &spec_packet[20..]))
        };
        fin[36..38].copy_from_slice(&fixed.to_be_bytes());
        packets[2] = fin;
        let (coalescer, emits) = plan(&packets);
        assert_eq!(
            emits,
            [
                Emit::SuperPacket { run: 0, segments: 2 },
                Emit::Packet(2),
                Emit::Packet(3)
            ],
            "the packet after the FIN must not join the run before it"
        );
        assert_eq!(unpack(&coalescer, &emits, &packets), packets);
    }

    #[test]
    fn a_short_segment_ends_the_run() {
        let packets = run_of(&[1000, 500, 1000, 1000], 0, tcp_v4);
        let (coalescer, emits) = plan(&packets);
        assert_eq!(
            emits,
            [
                Emit::SuperPacket { run: 0, segments: 2 },
                Emit::SuperPacket { run: 1, segments: 2 }
            ]
        );
        assert_eq!(unpack(&coalescer, &emits, &packets), packets);
    }

    #[test]
    fn a_pure_ack_ends_the_run_and_keeps_order() {
        let mut packets = run_of(&[1000, 1000, 1000], 0, tcp_v4);
        let ack_only = tcp_v4(&TcpSpec {
            seq: 2000,
            options: TIMESTAMPS.to_vec(),
            ..TcpSpec::default()
        });
        packets.insert(2, ack_only);
        let (coalescer, emits) = plan(&packets);
        assert_eq!(
            emits,
            [
                Emit::SuperPacket { run: 0, segments: 2 },
                Emit::Packet(2),
                Emit::Packet(3)
            ]
        );
        assert_eq!(unpack(&coalescer, &emits, &packets), packets);
    }

    #[test]
    fn corrupted_or_non_tcp_packets_pass_through_untouched() {
        let mut packets = run_of(&[1000, 1000, 1000], 0, tcp_v4);
        packets[1][100] ^= 0xFF;
        let udp = {
            let mut p = tcp_v4(&TcpSpec::default());
            p[9] = 17;
            p
        };
        packets.insert(0, udp);
        packets.push(vec![0x45, 0, 0]);
        let (coalescer, emits) = plan(&packets);
        assert_eq!(
            emits,
            [
                Emit::Packet(0),
                Emit::Packet(1),
                Emit::Packet(2),
                Emit::Packet(3),
                Emit::Packet(4)
            ]
        );
        assert_eq!(unpack(&coalescer, &emits, &packets), packets);
    }

    #[test]
    fn interleaved_flows_coalesce_separately_and_keep_per_flow_order() {
        let a = run_of(&[1200, 1200, 1200, 1200], 0, tcp_v4);
        let b: Vec<Vec<u8>> = run_of(&[1200, 1200, 1200], 9000, tcp_v6);
        let other_dst = std::net::Ipv4Addr::new(198, 18, 2, 3);
        assert_ne!(other_dst, V4_DST);
        let c: Vec<Vec<u8>> = (0..2u32)
            .map(|i| {
                let spec = TcpSpec {
                    seq: i * 1200,
                    ip_id: i as u16,
                    payload: vec![7; 1200],
                    ..TcpSpec::default()
                };
                tcp_v4_between(&spec, crate::offload::testutil::V4_SRC, other_dst)
            })
            .collect();
        let packets = vec![
            a[0].clone(),
            b[0].clone(),
            c[0].clone(),
            a[1].clone(),
            b[1].clone(),
            a[2].clone(),
            c[1].clone(),
            b[2].clone(),
            a[3].clone(),
        ];
        let (coalescer, emits) = plan(&packets);
        assert_eq!(
            emits,
            [
                Emit::SuperPacket { run: 0, segments: 4 },
                Emit::SuperPacket { run: 1, segments: 3 },
                Emit::SuperPacket { run: 2, segments: 2 },
            ]
        );
        let out = unpack(&coalescer, &emits, &packets);
        let expected: Vec<Vec<u8>> = a.iter().chain(&b).chain(&c).cloned().collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_run_stops_at_64_kib() {
        let packets = run_of(&[1400; 50], 0, tcp_v4);
        let (coalescer, emits) = plan(&packets);
        let mut total = 0;
        for emit in &emits {
            match *emit {
                Emit::SuperPacket { run, segments } => {
                    let mut buf = vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET];
                    let len = coalescer.assemble(run, |i| &packets[i][..], &mut buf);
                    assert!(len - VNET_HEADER_LEN <= MAX_SUPER_PACKET);
                    total += segments;
                }
                Emit::Packet(_) => total += 1,
            }
        }
        assert_eq!(total, 50);
        assert!(emits.len() >= 2);
        assert_eq!(unpack(&coalescer, &emits, &packets), packets);
    }

    #[test]
    fn start_batch_makes_room_for_a_larger_batch() {
        let packets = run_of(&[500; 10], 0, tcp_v4);
        let mut coalescer = Coalescer::new(2);
        coalescer.start_batch(packets.len());
        for (i, p) in packets.iter().enumerate() {
            coalescer.push(i, p);
        }
        let emits: Vec<Emit> = coalescer.emits().collect();
        assert_eq!(emits, [Emit::SuperPacket { run: 0, segments: 10 }]);
        assert_eq!(coalescer.wire_bytes(0), packets.iter().map(Vec::len).sum::<usize>());
        assert_eq!(unpack(&coalescer, &emits, &packets), packets);
    }

    #[test]
    fn garbage_never_panics() {
        let packets = run_of(&[600, 600], 0, tcp_v6);
        let mut coalescer = Coalescer::new(4096);
        let mut index = 0;
        for packet in &packets {
            for len in 0..packet.len() {
                coalescer.push(index, &packet[..len]);
                index += 1;
            }
        }
        assert!(
            coalescer.emits().all(|e| matches!(e, Emit::Packet(_))),
            "no truncated packet coalesces"
        );
    }

    mod udp {
        use super::super::*;
        use braid_core::wire::checksum;
        use std::net::{Ipv4Addr, Ipv6Addr};

        const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
        const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
        const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
        const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

        use crate::offload::kernel_model::udp_checksum;

        /// A valid IPv4 (DF) UDP datagram.
        fn udp_v4(src_port: u16, payload: &[u8], ip_id: u16) -> Vec<u8> {
            let udp_len = 8 + payload.len();
            let mut udp = vec![0u8; 8];
            udp[0..2].copy_from_slice(&src_port.to_be_bytes());
            udp[2..4].copy_from_slice(&5201u16.to_be_bytes());
            udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            udp.extend_from_slice(payload);
            let sum = udp_checksum(checksum::pseudo_header_v4(SRC4, DST4, 17, udp_len as u16), &udp);
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            crate::offload::testutil::ipv4_packet(SRC4, DST4, 17, ip_id, &udp)
        }

        /// A valid IPv6 UDP datagram.
        fn udp_v6(src_port: u16, payload: &[u8]) -> Vec<u8> {
            let udp_len = 8 + payload.len();
            let mut udp = vec![0u8; 8];
            udp[0..2].copy_from_slice(&src_port.to_be_bytes());
            udp[2..4].copy_from_slice(&5201u16.to_be_bytes());
            udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            udp.extend_from_slice(payload);
            let sum = udp_checksum(checksum::pseudo_header_v6(SRC6, DST6, 17, udp_len as u32), &udp);
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            let mut packet = vec![0x60, 0, 0, 0];
            packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
            packet.extend_from_slice(&[17, 64]);
            packet.extend_from_slice(&SRC6.octets());
            packet.extend_from_slice(&DST6.octets());
            packet.extend_from_slice(&udp);
            packet
        }

        fn datagrams(sizes: &[usize], src_port: u16, first_id: u16) -> Vec<Vec<u8>> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let payload: Vec<u8> = (0..n).map(|b| (b + i) as u8).collect();
                    udp_v4(src_port, &payload, first_id.wrapping_add(i as u16))
                })
                .collect()
        }

        fn plan_udp(packets: &[Vec<u8>]) -> (Coalescer, Vec<Emit>) {
            let mut coalescer = Coalescer::new(packets.len().max(1));
            coalescer.set_udp(true);
            coalescer.start_batch(packets.len());
            for (i, p) in packets.iter().enumerate() {
                coalescer.push(i, p);
            }
            let emits = coalescer.emits().collect();
            (coalescer, emits)
        }

        fn unpack_udp(coalescer: &Coalescer, emits: &[Emit], packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET];
            for emit in emits {
                match *emit {
                    Emit::Packet(i) => out.push(packets[i].clone()),
                    Emit::SuperPacket { run, segments } => {
                        assert!(coalescer.is_udp(run));
                        let len = coalescer.assemble(run, |i| &packets[i][..], &mut buf);
                        let split = crate::offload::kernel_model::split_udp_super_packet(&buf[..len]);
                        assert_eq!(split.len(), segments);
                        assert_eq!(coalescer.wire_bytes(run), split.iter().map(Vec::len).sum::<usize>());
                        out.extend(split);
                    }
                }
            }
            out
        }

        #[test]
        fn a_run_of_small_datagrams_becomes_one_write_and_splits_back_byte_identical() {
            let packets = datagrams(&[200, 200, 200, 200, 200, 120], 40_000, 7);
            let (coalescer, emits) = plan_udp(&packets);
            assert_eq!(emits, [Emit::SuperPacket { run: 0, segments: 6 }]);
            assert_eq!(coalescer.members(0).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
            assert_eq!(unpack_udp(&coalescer, &emits, &packets), packets);

            let packets: Vec<Vec<u8>> = (0..5).map(|i| udp_v6(40_001, &[i as u8; 300])).collect();
            let (coalescer, emits) = plan_udp(&packets);
            assert_eq!(emits, [Emit::SuperPacket { run: 0, segments: 5 }]);
            assert_eq!(unpack_udp(&coalescer, &emits, &packets), packets);
        }

        #[test]
        fn flows_interleave_but_each_keeps_its_order_and_a_shorter_datagram_ends_a_run() {
            let a = datagrams(&[200, 200, 100, 200, 200], 1, 0);
            let b = datagrams(&[300, 300, 300], 2, 50);
            let packets = vec![
                a[0].clone(),
                b[0].clone(),
                a[1].clone(),
                b[1].clone(),
                a[2].clone(),
                b[2].clone(),
                a[3].clone(),
                a[4].clone(),
            ];
            let (coalescer, emits) = plan_udp(&packets);
            assert_eq!(
                emits,
                [
                    Emit::SuperPacket { run: 0, segments: 3 },
                    Emit::SuperPacket { run: 1, segments: 3 },
                    Emit::SuperPacket { run: 2, segments: 2 },
                ]
            );
            let out = unpack_udp(&coalescer, &emits, &packets);
            let of = |port: u8| -> Vec<Vec<u8>> { out.iter().filter(|p| p[21] == port).cloned().collect() };
            // IPv4 identifications of the third run are renumbered from its first: compare
            // everything else.
            assert_eq!(of(2), b);
            let strip_id = |p: &Vec<u8>| [&p[..4], &p[6..10], &p[12..]].concat();
            assert_eq!(
                of(1).iter().map(strip_id).collect::<Vec<_>>(),
                a.iter().map(strip_id).collect::<Vec<_>>()
            );
        }

        #[test]
        fn a_corrupt_or_unchecksummed_datagram_is_written_alone() {
            let mut packets = datagrams(&[200, 200, 200, 200], 9, 0);
            packets[1][40] ^= 0xff; // payload byte: the checksum no longer verifies
            packets[2][26..28].fill(0); // no checksum (IPv4 allows it)
            let (coalescer, emits) = plan_udp(&packets);
            assert_eq!(
                emits,
                [Emit::Packet(0), Emit::Packet(1), Emit::Packet(2), Emit::Packet(3)]
            );
            assert_eq!(unpack_udp(&coalescer, &emits, &packets), packets);
        }

        #[test]
        fn udp_merging_is_off_unless_asked_and_runs_stop_at_the_kernels_segment_limit() {
            let packets = datagrams(&[64; 150], 3, 0);
            let mut off = Coalescer::new(packets.len());
            for (i, p) in packets.iter().enumerate() {
                off.push(i, p);
            }
            assert!(off.emits().all(|e| matches!(e, Emit::Packet(_))));
            let (coalescer, emits) = plan_udp(&packets);
            assert_eq!(
                emits,
                [
                    Emit::SuperPacket {
                        run: 0,
                        segments: MAX_GSO_SEGMENTS
                    },
                    Emit::SuperPacket {
                        run: 1,
                        segments: MAX_GSO_SEGMENTS
                    },
                    Emit::SuperPacket {
                        run: 2,
                        segments: 150 - 2 * MAX_GSO_SEGMENTS
                    },
                ]
            );
            let strip_id = |p: &Vec<u8>| [&p[..4], &p[6..10], &p[12..]].concat();
            let out = unpack_udp(&coalescer, &emits, &packets);
            assert_eq!(
                out.iter().map(strip_id).collect::<Vec<_>>(),
                packets.iter().map(strip_id).collect::<Vec<_>>()
            );
        }
    }
}
