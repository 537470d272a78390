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
use braid_core::wire::icmp::{icmpv4_type, icmpv6_type, IcmpPacket, ICMP_HEADER_LEN};
use braid_core::wire::ipv4::{Ipv4Packet, IPV4_MIN_HEADER_LEN};
use braid_core::wire::ipv6::{Ipv6Packet, IPV6_HEADER_LEN};
use braid_core::wire::udp::{UdpPacket, UDP_HEADER_LEN};

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

/// Builds an ICMP (v4) or ICMPv6 echo request: identifier the pair, sequence number the low 16
/// bits of `seq`, and the canary payload (kind probe, pair, seq, sent_ms), which the reply
/// echoes. 0 if `out` is too small or the families differ.
fn write_echo(out: &mut [u8], src: IpAddr, dst: IpAddr, pair: PairId, seq: u64, sent_ms: u64) -> usize {
    let icmp_len = ICMP_HEADER_LEN + PAYLOAD_LEN;
    let protocol = if src.is_ipv4() { proto::ICMP } else { proto::ICMPV6 };
    let Some((ip_len, pseudo)) = write_ip_header(out, src, dst, protocol, icmp_len) else {
        return 0;
    };
    let mut icmp = IcmpPacket::new_unchecked(&mut out[ip_len..ip_len + icmp_len]);
    icmp.set_msg_type(if src.is_ipv4() {
        icmpv4_type::ECHO_REQUEST
    } else {
        icmpv6_type::ECHO_REQUEST
    });
    icmp.set_code(0);
    icmp.set_echo_ident(pair);
    icmp.set_echo_seq(seq as u16);
    write_payload(icmp.payload_mut(), KIND_PROBE, pair, seq, sent_ms);
    // ICMPv4's checksum covers the message alone.
    icmp.fill_checksum(if src.is_ipv4() { 0 } else { pseudo });
    ip_len + icmp_len
}

/// (pair, seq, sent_ms) when `packet` is an echo reply to one of our echo canaries, addressed
/// to `local`.
fn parse_echo_reply(packet: &[u8], local: IpAddr) -> Option<(PairId, u64, u64)> {
    let (protocol, message) = addressed_to(packet, local)?;
    let reply = match protocol {
        proto::ICMP => icmpv4_type::ECHO_REPLY,
        proto::ICMPV6 => icmpv6_type::ECHO_REPLY,
        _ => return None,
    };
    let icmp = IcmpPacket::new_checked(message).ok()?;
    if icmp.msg_type() != reply {
        return None;
    }
    let (kind, pair, seq, sent_ms) = read_payload(icmp.payload())?;
    if kind != KIND_PROBE || icmp.echo_ident() != pair || icmp.echo_seq() != seq as u16 {
        return None;
    }
    Some((pair, seq, sent_ms))
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
    let udp_len = UDP_HEADER_LEN + PAYLOAD_LEN;
    let Some((ip_len, pseudo)) = write_ip_header(out, src, dst, proto::UDP, udp_len) else {
        return 0;
    };
    let mut udp = UdpPacket::new_unchecked(&mut out[ip_len..ip_len + udp_len]);
    udp.set_src_port(CANARY_PORT);
    udp.set_dst_port(CANARY_PORT);
    udp.set_len(udp_len as u16);
    write_payload(udp.payload_mut(), kind, pair, seq, sent_ms);
    udp.fill_checksum(pseudo);
    ip_len + udp_len
}

/// (kind, pair, seq, sent_ms) when `packet` is a canary addressed to `local`.
fn parse(packet: &[u8], local: IpAddr) -> Option<(u8, PairId, u64, u64)> {
    let (protocol, segment) = addressed_to(packet, local)?;
    if protocol != proto::UDP {
        return None;
    }
    let udp = UdpPacket::new_checked(segment).ok()?;
    if udp.dst_port() != CANARY_PORT {
        return None;
    }
    read_payload(udp.payload())
}

/// Writes an IP header from `src` to `dst` for a `transport_len`-byte `protocol` segment at the
/// start of `out`: IPv4 without options, DF, TTL 64 and its checksum; IPv6 with hop limit 64.
/// Returns the header's length and the transport's pseudo-header sum; `None` if `out` cannot
/// hold the packet or the families differ.
fn write_ip_header(
    out: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    transport_len: usize,
) -> Option<(usize, u64)> {
    let ip_len = if src.is_ipv4() {
        IPV4_MIN_HEADER_LEN
    } else {
        IPV6_HEADER_LEN
    };
    let header = out.get_mut(..ip_len + transport_len)?.get_mut(..ip_len)?;
    header.fill(0);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Packet::new_unchecked(header);
            ip.set_version_and_header_len(ip_len);
            ip.set_total_len((ip_len + transport_len) as u16);
            ip.set_fragment(true, false, 0);
            ip.set_ttl(64);
            ip.set_protocol(protocol);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            ip.fill_checksum();
            Some((ip_len, checksum::pseudo_header_v4(s, d, protocol, transport_len as u16)))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Packet::new_unchecked(header);
            ip.set_version_class_label(0, 0);
            ip.set_payload_len(transport_len as u16);
            ip.set_next_header(protocol);
            ip.set_hop_limit(64);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            Some((ip_len, checksum::pseudo_header_v6(s, d, protocol, transport_len as u32)))
        }
        _ => None,
    }
}

/// The protocol and transport bytes of a well-formed IP packet addressed to `local`.
fn addressed_to(packet: &[u8], local: IpAddr) -> Option<(u8, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            let transport = packet.get(ip.header_len()..usize::from(ip.total_len()))?;
            (IpAddr::V4(ip.dst_addr()) == local).then_some((ip.protocol(), transport))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            let transport = packet.get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + usize::from(ip.payload_len()))?;
            (IpAddr::V6(ip.dst_addr()) == local).then_some((ip.next_header(), transport))
        }
        _ => None,
    }
}

/// The canary payload: magic, kind, pair, seq, sent_ms.
fn write_payload(p: &mut [u8], kind: u8, pair: PairId, seq: u64, sent_ms: u64) {
    p[..8].copy_from_slice(MAGIC);
    p[8] = kind;
    p[9..11].copy_from_slice(&pair.to_be_bytes());
    p[11..19].copy_from_slice(&seq.to_be_bytes());
    p[19..27].copy_from_slice(&sent_ms.to_be_bytes());
}

/// (kind, pair, seq, sent_ms) from a canary payload, `None` without the magic.
fn read_payload(p: &[u8]) -> Option<(u8, PairId, u64, u64)> {
    let p = p.get(..PAYLOAD_LEN)?;
    if &p[..8] != MAGIC {
        return None;
    }
    Some((
        p[8],
        u16::from_be_bytes([p[9], p[10]]),
        u64::from_be_bytes(p[11..19].try_into().ok()?),
        u64::from_be_bytes(p[19..27].try_into().ok()?),
    ))
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
            reply[20] = icmpv4_type::ECHO_REPLY;
            reply[22..24].fill(0);
            let sum = checksum::checksum(&reply[20..]);
            reply[22..24].copy_from_slice(&sum.to_be_bytes());
        } else {
            let (s, d) = (reply[8..24].to_vec(), reply[24..40].to_vec());
            reply[8..24].copy_from_slice(&d);
            reply[24..40].copy_from_slice(&s);
            reply[40] = icmpv6_type::ECHO_REPLY;
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
        assert_eq!((packet[9], packet[20]), (proto::ICMP, icmpv4_type::ECHO_REQUEST));
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
