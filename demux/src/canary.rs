//! Canary probes through every gateway pair (sans-IO).
//!
//! Seed 004's lesson: a tunnel that is "up" can still black-hole. Each demux sends a small UDP
//! probe through every pair every 100 ms — demux → gateway → WireGuard → peer gateway → peer
//! demux — addressed from its site's canary address to the peer site's canary address on
//! [`CANARY_PORT`]. The peer demux recognises it before the TUN, turns it into a reply and sends
//! it back **through the same pair**; the first demux matches the reply to its probe and records
//! the round trip. A probe not answered within [`CANARY_TIMEOUT_MS`] counts as lost. The
//! controller takes a pair out of service when its canaries stop coming back.
//!
//! Probes are ordinary inner packets, so they pass every gateway check (inner source inside the
//! site's prefixes) and prove the whole path, not just the WireGuard session.
//!
//! **External peer sites** run no braid demux to answer, so there the probe is an ICMP echo
//! request ([`Canary::new_echo`]) to the site's configured canary address, which any host
//! answers. The identifier is the pair id and the payload carries pair, sequence number and send
//! time, so the reply is matched to its probe whichever pair it comes back on: the external
//! peer, not braid, picks the return tunnel.

use std::net::IpAddr;

use braid_core::flow::{proto, Classified, FiveTuple, PairId};
use braid_core::wire::checksum;

/// The UDP port canaries travel on (both ends).
pub const CANARY_PORT: u16 = 6082;
/// A probe unanswered this long is lost.
pub const CANARY_TIMEOUT_MS: u64 = 1_000;
/// Probes remembered per pair while waiting for their replies.
const OUTSTANDING: usize = 16;
const MAGIC: &[u8; 8] = b"BRCANARY";
const KIND_PROBE: u8 = 1;
const KIND_REPLY: u8 = 2;
/// magic, kind, pair, seq, sent_ms.
const PAYLOAD_LEN: usize = 8 + 1 + 2 + 8 + 8;

/// Per-pair canary results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCanary {
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub last_rtt_us: Option<u64>,
    pub last_answer_ms: Option<u64>,
    next_seq: u64,
    outstanding: [Option<(u64, u64)>; OUTSTANDING],
}

/// What an inbound packet was, canary-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Not a canary: deliver it.
    NotCanary,
    /// A probe from the peer demux: send the `len`-byte reply written into the output buffer
    /// back through the same pair.
    Reply { len: usize },
    /// A reply to one of our probes (recorded), or a stale/unknown one (ignored).
    Consumed,
}

/// The canary state of one demux.
#[derive(Debug, Clone)]
pub struct Canary {
    local: IpAddr,
    peer: IpAddr,
    /// ICMP echo to an external peer site instead of UDP probes a peer demux answers.
    echo: bool,
    pairs: Vec<(PairId, PairCanary)>,
}

impl Canary {
    /// `local` and `peer` are the two sites' canary addresses (same family).
    pub fn new(local: IpAddr, peer: IpAddr, pairs: &[PairId]) -> Canary {
        Canary {
            local,
            peer,
            echo: false,
            pairs: pairs.iter().map(|&p| (p, PairCanary::default())).collect(),
        }
    }

    /// Canaries for a peer site that runs no braid: ICMP echo requests from `local` to the
    /// external site's canary address `peer` (same family), replies accepted from any pair.
    pub fn new_echo(local: IpAddr, peer: IpAddr, pairs: &[PairId]) -> Canary {
        Canary {
            echo: true,
            ..Canary::new(local, peer, pairs)
        }
    }

    /// Starts probing `pair` too (a pair that joined online); no-op if known.
    pub fn add_pair(&mut self, pair: PairId) {
        if self.pair(pair).is_none() {
            self.pairs.push((pair, PairCanary::default()));
        }
    }

    /// The results of `pair`.
    pub fn pair(&self, pair: PairId) -> Option<&PairCanary> {
        self.pairs.iter().find(|(p, _)| *p == pair).map(|(_, c)| c)
    }

    /// Every pair's results.
    pub fn pairs(&self) -> impl Iterator<Item = (PairId, &PairCanary)> {
        self.pairs.iter().map(|(p, c)| (*p, c))
    }

    /// Whether a packet classified as `class` can be a canary at all (UDP to or from
    /// [`CANARY_PORT`], or ICMP for echo canaries): the data path asks [`Canary::inbound`] only
    /// about those, so ordinary traffic is not parsed twice.
    pub fn may_carry(&self, class: &Classified) -> bool {
        let Classified::Whole { tuple, .. } = class else {
            return false;
        };
        if self.echo {
            tuple.proto == proto::ICMP || tuple.proto == proto::ICMPV6
        } else {
            tuple.proto == proto::UDP && (tuple.src_port == CANARY_PORT || tuple.dst_port == CANARY_PORT)
        }
    }

    /// The 5-tuple `pair`'s probes (and their replies, the same flow reversed) carry, read back
    /// from a probe built on the stack with no state change; `None` if no probe can be built.
    /// The data path gives a pair's canary to the thread that owns this flow.
    pub fn probe_tuple(&self, pair: PairId) -> Option<FiveTuple> {
        let mut buf = [0u8; 128];
        let len = if self.echo {
            write_echo(&mut buf, self.local, self.peer, pair, 0, 0)
        } else {
            write_packet(&mut buf, self.local, self.peer, KIND_PROBE, pair, 0, 0)
        };
        match braid_core::wire::classify(&buf[..len]) {
            Ok(Classified::Whole { tuple, .. }) => Some(tuple),
            _ => None,
        }
    }

    /// Writes a probe for `pair` into `out` (an IP packet); returns its length (0 if `out` is too
    /// small or the pair is unknown). Probes outstanding for longer than the timeout are counted
    /// lost first.
    pub fn probe(&mut self, pair: PairId, now_ms: u64, out: &mut [u8]) -> usize {
        let (local, peer) = (self.local, self.peer);
        let Some((_, state)) = self.pairs.iter_mut().find(|(p, _)| *p == pair) else {
            return 0;
        };
        expire(state, now_ms);
        let seq = state.next_seq;
        let len = if self.echo {
            write_echo(out, local, peer, pair, seq, now_ms)
        } else {
            write_packet(out, local, peer, KIND_PROBE, pair, seq, now_ms)
        };
        if len == 0 {
            return 0;
        }
        state.next_seq += 1;
        state.sent += 1;
        let slot = (seq as usize) % OUTSTANDING;
        if state.outstanding[slot].take().is_some() {
            state.lost += 1;
        }
        state.outstanding[slot] = Some((seq, now_ms));
        len
    }

    /// Looks at an inner packet that arrived from pair `from`. A probe becomes a reply written
    /// into `out`; a reply is matched to its probe.
    pub fn inbound(&mut self, packet: &[u8], from: PairId, now_ms: u64, now_us: u64, out: &mut [u8]) -> Inbound {
        if self.echo {
            let Some((pair, seq, sent_ms)) = parse_echo_reply(packet, self.local) else {
                return Inbound::NotCanary;
            };
            // Whichever pair the reply took: the external site chose the return tunnel.
            self.record_reply(pair, seq, sent_ms, now_ms, now_us);
            return Inbound::Consumed;
        }
        let Some((kind, pair, seq, sent_ms)) = parse(packet, self.local) else {
            return Inbound::NotCanary;
        };
        match kind {
            KIND_PROBE => {
                let len = write_packet(out, self.local, self.peer, KIND_REPLY, pair, seq, sent_ms);
                if len == 0 || pair != from {
                    return Inbound::Consumed;
                }
                Inbound::Reply { len }
            }
            KIND_REPLY => {
                if pair == from {
                    self.record_reply(pair, seq, sent_ms, now_ms, now_us);
                }
                Inbound::Consumed
            }
            _ => Inbound::Consumed,
        }
    }

    /// Matches a reply to its outstanding probe of `pair` and records the round trip.
    fn record_reply(&mut self, pair: PairId, seq: u64, sent_ms: u64, now_ms: u64, now_us: u64) {
        if let Some((_, state)) = self.pairs.iter_mut().find(|(p, _)| *p == pair) {
            let slot = (seq as usize) % OUTSTANDING;
            if state.outstanding[slot] == Some((seq, sent_ms)) && now_ms.saturating_sub(sent_ms) <= CANARY_TIMEOUT_MS {
                state.outstanding[slot] = None;
                state.answered += 1;
                state.last_rtt_us = Some(now_us.saturating_sub(sent_ms * 1000));
                state.last_answer_ms = Some(now_ms);
            }
        }
    }
}

const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Builds an ICMP (v4) or ICMPv6 echo request: identifier the pair, sequence number the low 16
/// bits of `seq`, and the canary payload (kind probe, pair, seq, sent_ms), which the reply
/// echoes. 0 if `out` is too small or the families differ.
fn write_echo(out: &mut [u8], src: IpAddr, dst: IpAddr, pair: PairId, seq: u64, sent_ms: u64) -> usize {
    let ip_len = if src.is_ipv4() { 20 } else { 40 };
    let icmp_len = 8 + PAYLOAD_LEN;
    let total = ip_len + icmp_len;
    if out.len() < total || src.is_ipv4() != dst.is_ipv4() {
        return 0;
    }
    {
        let icmp = &mut out[ip_len..total];
        icmp[0] = if src.is_ipv4() {
            ICMPV4_ECHO_REQUEST
        } else {
            ICMPV6_ECHO_REQUEST
        };
        icmp[1] = 0;
        icmp[2..4].fill(0);
        icmp[4..6].copy_from_slice(&pair.to_be_bytes());
        icmp[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        let payload = &mut icmp[8..];
        payload[..8].copy_from_slice(MAGIC);
        payload[8] = KIND_PROBE;
        payload[9..11].copy_from_slice(&pair.to_be_bytes());
        payload[11..19].copy_from_slice(&seq.to_be_bytes());
        payload[19..27].copy_from_slice(&sent_ms.to_be_bytes());
    }
    let start = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            write_ipv4_header(&mut out[..20], total, proto::ICMP, s, d);
            0
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = &mut out[..40];
            ip.fill(0);
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
            ip[6] = proto::ICMPV6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            checksum::pseudo_header_v6(s, d, proto::ICMPV6, icmp_len as u32)
        }
        _ => return 0,
    };
    let sum = checksum::finish(checksum::accumulate(start, &out[ip_len..total]));
    out[ip_len + 2..ip_len + 4].copy_from_slice(&sum.to_be_bytes());
    total
}

/// (pair, seq, sent_ms) when `packet` is an echo reply to one of our echo canaries, addressed
/// to `local`.
fn parse_echo_reply(packet: &[u8], local: IpAddr) -> Option<(PairId, u64, u64)> {
    let version = packet.first()? >> 4;
    let (ip_len, dst, is_reply) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            let is_reply = *packet.get(9)? == proto::ICMP && *packet.get(ihl)? == ICMPV4_ECHO_REPLY;
            (ihl, IpAddr::from(dst), is_reply)
        }
        6 => {
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            let is_reply = *packet.get(6)? == proto::ICMPV6 && *packet.get(40)? == ICMPV6_ECHO_REPLY;
            (40, IpAddr::from(dst), is_reply)
        }
        _ => return None,
    };
    if dst != local || !is_reply {
        return None;
    }
    let icmp = packet.get(ip_len..ip_len + 8 + PAYLOAD_LEN)?;
    let p = &icmp[8..];
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let pair = u16::from_be_bytes([p[9], p[10]]);
    let seq = u64::from_be_bytes(p[11..19].try_into().ok()?);
    if &p[..8] != MAGIC || p[8] != KIND_PROBE || id != pair || u16::from_be_bytes([icmp[6], icmp[7]]) != seq as u16 {
        return None;
    }
    Some((pair, seq, u64::from_be_bytes(p[19..27].try_into().ok()?)))
}

fn expire(state: &mut PairCanary, now_ms: u64) {
    for slot in state.outstanding.iter_mut() {
        if let Some((_, sent)) = *slot {
            if now_ms.saturating_sub(sent) > CANARY_TIMEOUT_MS {
                *slot = None;
                state.lost += 1;
            }
        }
    }
}

/// Builds an IPv4 or IPv6 UDP canary packet; 0 if `out` is too small or the families differ.
fn write_packet(out: &mut [u8], src: IpAddr, dst: IpAddr, kind: u8, pair: PairId, seq: u64, sent_ms: u64) -> usize {
    let ip_len = if src.is_ipv4() { 20 } else { 40 };
    let total = ip_len + 8 + PAYLOAD_LEN;
    if out.len() < total || src.is_ipv4() != dst.is_ipv4() {
        return 0;
    }
    let payload = &mut out[ip_len + 8..total];
    payload[..8].copy_from_slice(MAGIC);
    payload[8] = kind;
    payload[9..11].copy_from_slice(&pair.to_be_bytes());
    payload[11..19].copy_from_slice(&seq.to_be_bytes());
    payload[19..27].copy_from_slice(&sent_ms.to_be_bytes());
    let udp_len = (8 + PAYLOAD_LEN) as u16;
    {
        let udp = &mut out[ip_len..ip_len + 8];
        udp[0..2].copy_from_slice(&CANARY_PORT.to_be_bytes());
        udp[2..4].copy_from_slice(&CANARY_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp[6..8].fill(0);
    }
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            write_ipv4_header(&mut out[..20], total, proto::UDP, s, d);
            checksum::pseudo_header_v4(s, d, proto::UDP, udp_len)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = &mut out[..40];
            ip.fill(0);
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = proto::UDP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            checksum::pseudo_header_v6(s, d, proto::UDP, u32::from(udp_len))
        }
        _ => return 0,
    };
    let sum = checksum::finish(checksum::accumulate(pseudo, &out[ip_len..total]));
    let sum = if sum == 0 { 0xffff } else { sum };
    out[ip_len + 6..ip_len + 8].copy_from_slice(&sum.to_be_bytes());
    total
}

/// (kind, pair, seq, sent_ms) when `packet` is a canary addressed to `local`.
fn parse(packet: &[u8], local: IpAddr) -> Option<(u8, PairId, u64, u64)> {
    let version = packet.first()? >> 4;
    let (ip_len, proto_at, dst) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (ihl, 9, IpAddr::from(dst))
        }
        6 => {
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (40, 6, IpAddr::from(dst))
        }
        _ => return None,
    };
    if dst != local || *packet.get(proto_at)? != proto::UDP {
        return None;
    }
    let udp = packet.get(ip_len..ip_len + 8 + PAYLOAD_LEN)?;
    if u16::from_be_bytes([udp[2], udp[3]]) != CANARY_PORT || &udp[8..16] != MAGIC {
        return None;
    }
    let p = &udp[8..];
    Some((
        p[8],
        u16::from_be_bytes([p[9], p[10]]),
        u64::from_be_bytes(p[11..19].try_into().ok()?),
        u64::from_be_bytes(p[19..27].try_into().ok()?),
    ))
}

/// A 20-byte IPv4 header (DF, TTL 64, checksum filled in) for a `total`-byte packet.
fn write_ipv4_header(ip: &mut [u8], total: usize, protocol: u8, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) {
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::wire;

    fn ends() -> (Canary, Canary) {
        let a: IpAddr = "198.18.1.1".parse().unwrap();
        let b: IpAddr = "198.18.2.1".parse().unwrap();
        (Canary::new(a, b, &[1, 2]), Canary::new(b, a, &[1, 2]))
    }

    #[test]
    fn probe_reply_round_trip_records_rtt() {
        let (mut a, mut b) = ends();
        let mut probe = [0u8; 128];
        let n = a.probe(2, 1_000, &mut probe);
        assert!(n > 0);
        // A valid packet that the classifier accepts and that steering would treat as a flow.
        assert!(wire::classify(&probe[..n]).is_ok());
        let mut reply = [0u8; 128];
        let Inbound::Reply { len } = b.inbound(&probe[..n], 2, 1_003, 1_003_000, &mut reply) else {
            panic!("probe not recognised");
        };
        assert_eq!(
            a.inbound(&reply[..len], 2, 1_004, 1_004_500, &mut [0u8; 128]),
            Inbound::Consumed
        );
        let s = a.pair(2).unwrap();
        assert_eq!((s.sent, s.answered, s.lost), (1, 1, 0));
        assert_eq!(s.last_rtt_us, Some(4_500));
        assert_eq!(s.last_answer_ms, Some(1_004));
    }

    #[test]
    fn unanswered_probes_are_lost_and_stray_replies_ignored() {
        let (mut a, mut b) = ends();
        let mut probe = [0u8; 128];
        let n = a.probe(1, 0, &mut probe);
        let mut reply = [0u8; 128];
        let Inbound::Reply { len } = b.inbound(&probe[..n], 1, 1, 1_000, &mut reply) else {
            panic!()
        };
        // The reply arrives over the wrong pair: not counted.
        a.inbound(&reply[..len], 2, 2, 2_000, &mut [0u8; 128]);
        // Too late: lost once the next probe expires it.
        a.probe(1, 5_000, &mut probe);
        let s = a.pair(1).unwrap();
        assert_eq!((s.sent, s.answered, s.lost), (2, 0, 1));
        a.inbound(&reply[..len], 1, 5_001, 5_001_000, &mut [0u8; 128]);
        assert_eq!(
            a.pair(1).unwrap().answered,
            0,
            "a reply after its timeout does not count"
        );
    }

    #[test]
    fn ordinary_traffic_and_garbage_are_not_canaries() {
        let (mut a, _) = ends();
        let mut out = [0u8; 128];
        assert_eq!(a.inbound(&[], 1, 0, 0, &mut out), Inbound::NotCanary);
        assert_eq!(a.inbound(&[0x45; 30], 1, 0, 0, &mut out), Inbound::NotCanary);
        let mut probe = [0u8; 128];
        let n = a.probe(1, 0, &mut probe);
        // A probe addressed to the other site is not ours to answer.
        assert_eq!(a.inbound(&probe[..n], 1, 0, 0, &mut out), Inbound::NotCanary);
        for cut in 0..n {
            let (_, mut b) = ends();
            let r = b.inbound(&probe[..cut], 1, 0, 0, &mut out);
            assert_eq!(r, Inbound::NotCanary, "truncated at {cut}");
        }
    }

    #[test]
    fn ipv6_canaries_carry_a_valid_checksum() {
        let a: IpAddr = "2001:db8:1::1".parse().unwrap();
        let b: IpAddr = "2001:db8:2::1".parse().unwrap();
        let mut c = Canary::new(a, b, &[7]);
        let mut probe = [0u8; 128];
        let n = c.probe(7, 0, &mut probe);
        let udp = wire::udp::UdpPacket::new_checked(&probe[40..n]).unwrap();
        let (IpAddr::V6(s), IpAddr::V6(d)) = (a, b) else {
            unreachable!()
        };
        assert!(udp.verify_checksum(checksum::pseudo_header_v6(s, d, proto::UDP, udp.len().into())));
        let mut peer = Canary::new(b, a, &[7]);
        assert!(matches!(
            peer.inbound(&probe[..n], 7, 0, 0, &mut [0u8; 128]),
            Inbound::Reply { .. }
        ));
    }

    /// What a host in an external site does with an echo request: swap the addresses, turn the
    /// type into a reply, fix the checksums.
    fn answer_echo(request: &[u8]) -> Vec<u8> {
        let mut reply = request.to_vec();
        if reply[0] >> 4 == 4 {
            let (s, d) = (reply[12..16].to_vec(), reply[16..20].to_vec());
            reply[12..16].copy_from_slice(&d);
            reply[16..20].copy_from_slice(&s);
            reply[20] = ICMPV4_ECHO_REPLY;
            reply[22..24].fill(0);
            let sum = checksum::checksum(&reply[20..]);
            reply[22..24].copy_from_slice(&sum.to_be_bytes());
        } else {
            let (s, d) = (reply[8..24].to_vec(), reply[24..40].to_vec());
            reply[8..24].copy_from_slice(&d);
            reply[24..40].copy_from_slice(&s);
            reply[40] = ICMPV6_ECHO_REPLY;
            reply[42..44].fill(0);
            let src: [u8; 16] = reply[8..24].try_into().unwrap();
            let dst: [u8; 16] = reply[24..40].try_into().unwrap();
            let pseudo = checksum::pseudo_header_v6(src.into(), dst.into(), proto::ICMPV6, (reply.len() - 40) as u32);
            let sum = checksum::finish(checksum::accumulate(pseudo, &reply[40..]));
            reply[42..44].copy_from_slice(&sum.to_be_bytes());
        }
        reply
    }

    #[test]
    fn echo_canaries_are_valid_icmp_and_match_replies_from_any_pair() {
        let a: IpAddr = "198.18.1.1".parse().unwrap();
        let host: IpAddr = "198.18.2.2".parse().unwrap();
        let mut c = Canary::new_echo(a, host, &[1, 2]);
        let mut probe = [0u8; 128];
        let n = c.probe(2, 1_000, &mut probe);
        assert!(n > 0);
        let packet = &probe[..n];
        assert!(wire::classify(packet).is_ok());
        assert_eq!((packet[9], packet[20]), (proto::ICMP, ICMPV4_ECHO_REQUEST));
        assert_eq!(checksum::checksum(&packet[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum::checksum(&packet[20..]), 0, "ICMP checksum");
        assert_eq!(&packet[24..26], &2u16.to_be_bytes(), "the identifier is the pair");
        // The request itself (seen looping back) is not a reply.
        assert_eq!(
            c.inbound(packet, 2, 1_001, 1_001_000, &mut [0u8; 128]),
            Inbound::NotCanary
        );
        // The external site sends the reply back through pair 1: it still counts for pair 2.
        let reply = answer_echo(packet);
        assert_eq!(
            c.inbound(&reply, 1, 1_003, 1_003_250, &mut [0u8; 128]),
            Inbound::Consumed
        );
        let s = c.pair(2).unwrap();
        assert_eq!((s.sent, s.answered, s.lost), (1, 1, 0));
        assert_eq!(s.last_rtt_us, Some(3_250));
        assert_eq!(c.pair(1).unwrap().answered, 0);
        // A duplicate reply does not count twice.
        c.inbound(&reply, 2, 1_004, 1_004_000, &mut [0u8; 128]);
        assert_eq!(c.pair(2).unwrap().answered, 1);
    }

    #[test]
    fn echo_canaries_lose_unanswered_probes_and_ignore_foreign_echoes() {
        let a: IpAddr = "198.18.1.1".parse().unwrap();
        let host: IpAddr = "198.18.2.2".parse().unwrap();
        let mut c = Canary::new_echo(a, host, &[1]);
        let mut probe = [0u8; 128];
        let n = c.probe(1, 0, &mut probe);
        let late = answer_echo(&probe[..n]);
        c.probe(1, 5_000, &mut probe);
        assert_eq!(c.pair(1).unwrap().lost, 1);
        c.inbound(&late, 1, 5_001, 5_001_000, &mut [0u8; 128]);
        assert_eq!(
            c.pair(1).unwrap().answered,
            0,
            "a reply after its timeout does not count"
        );
        // Someone else's ping reply (no canary payload) goes to the TUN.
        let mut foreign = answer_echo(&probe[..n]);
        foreign[28..36].copy_from_slice(b"notbraid");
        assert_eq!(
            c.inbound(&foreign, 1, 5_002, 5_002_000, &mut [0u8; 128]),
            Inbound::NotCanary
        );
        // A reply whose identifier does not name the pair in its payload is not ours either.
        let mut forged = answer_echo(&probe[..n]);
        forged[24..26].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            c.inbound(&forged, 1, 5_002, 5_002_000, &mut [0u8; 128]),
            Inbound::NotCanary
        );
        for cut in 0..late.len() {
            assert_eq!(
                c.inbound(&late[..cut], 1, 0, 0, &mut [0u8; 128]),
                Inbound::NotCanary,
                "truncated at {cut}"
            );
        }
    }

    #[test]
    fn ipv6_echo_canaries_round_trip() {
        let a: IpAddr = "2001:db8:1::1".parse().unwrap();
        let host: IpAddr = "2001:db8:2::2".parse().unwrap();
        let mut c = Canary::new_echo(a, host, &[7]);
        let mut probe = [0u8; 128];
        let n = c.probe(7, 10, &mut probe);
        let (IpAddr::V6(s), IpAddr::V6(d)) = (a, host) else {
            unreachable!()
        };
        let pseudo = checksum::pseudo_header_v6(s, d, proto::ICMPV6, (n - 40) as u32);
        assert_eq!(
            checksum::finish(checksum::accumulate(pseudo, &probe[40..n])),
            0,
            "ICMPv6 checksum"
        );
        let reply = answer_echo(&probe[..n]);
        assert_eq!(c.inbound(&reply, 7, 12, 12_000, &mut [0u8; 128]), Inbound::Consumed);
        assert_eq!(c.pair(7).unwrap().answered, 1);
    }
}
