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

use std::net::IpAddr;

use braid_core::flow::{proto, PairId};
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
    pairs: Vec<(PairId, PairCanary)>,
}

impl Canary {
    /// `local` and `peer` are the two sites' canary addresses (same family).
    pub fn new(local: IpAddr, peer: IpAddr, pairs: &[PairId]) -> Canary {
        Canary {
            local,
            peer,
            pairs: pairs.iter().map(|&p| (p, PairCanary::default())).collect(),
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
        let len = write_packet(out, local, peer, KIND_PROBE, pair, seq, now_ms);
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
                if let Some((_, state)) = self.pairs.iter_mut().find(|(p, _)| *p == pair && pair == from) {
                    let slot = (seq as usize) % OUTSTANDING;
                    if state.outstanding[slot] == Some((seq, sent_ms))
                        && now_ms.saturating_sub(sent_ms) <= CANARY_TIMEOUT_MS
                    {
                        state.outstanding[slot] = None;
                        state.answered += 1;
                        state.last_rtt_us = Some(now_us.saturating_sub(sent_ms * 1000));
                        state.last_answer_ms = Some(now_ms);
                    }
                }
                Inbound::Consumed
            }
            _ => Inbound::Consumed,
        }
    }
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
            let ip = &mut out[..20];
            ip.fill(0);
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = proto::UDP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum::checksum(ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
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
}
