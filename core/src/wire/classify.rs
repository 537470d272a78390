//! The flow classifier: an IP packet as read from a TUN (no link header) → [`Classified`].
//!
//! Design: the IP layer is validated strictly (version, header and total lengths consistent with
//! the buffer, the IPv6 extension chain) and decides between a whole packet, a first fragment
//! and a later fragment (the policy is documented on [`Classified`]). The transport layer then
//! yields the ports:
//!
//! * TCP and UDP: their ports; TCP also its flags.
//! * ICMP / ICMPv6 echo: the echo identifier as both ports.
//! * ICMP / ICMPv6 errors (destination unreachable, time exceeded, packet too big, parameter
//!   problem): the 5-tuple of the quoted packet, reversed, so the error follows the flow it is
//!   about. The quote is usually cut short, so only its IP header must parse; if the ports are
//!   not all there they fall back to 0.
//! * anything else: ports 0.
//!
//! A first fragment must carry its whole transport header (RFC 1858 / RFC 7112), otherwise it
//! is rejected as [`WireError::BadFragment`]. An IPv6 atomic fragment (offset 0, M clear) is a
//! whole packet.

use std::net::IpAddr;

use super::icmp::{icmpv4_message, icmpv6_message, IcmpMessage, IcmpPacket};
use super::ipv4::Ipv4Packet;
use super::ipv6::{walk_extension_headers, Ipv6Packet};
use super::tcp::TcpPacket;
use super::udp::{UdpPacket, UDP_HEADER_LEN};
use super::{read_u16, WireError};
use crate::flow::{proto, Classified, FiveTuple, FragmentId};

/// Classifies an IPv4 or IPv6 packet. Bytes after the IP total length are ignored.
pub fn classify(packet: &[u8]) -> Result<Classified, WireError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => classify_ipv4(packet),
        Some(6) => classify_ipv6(packet),
        Some(_) => Err(WireError::BadIpVersion),
        None => Err(WireError::Truncated),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn icmp_proto(self) -> u8 {
        match self {
            Family::V4 => proto::ICMP,
            Family::V6 => proto::ICMPV6,
        }
    }

    fn icmp_message(self, msg_type: u8) -> IcmpMessage {
        match self {
            Family::V4 => icmpv4_message(msg_type),
            Family::V6 => icmpv6_message(msg_type),
        }
    }
}

/// Whether a transport header sits in a whole packet or in a first fragment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Carrier {
    Whole,
    FirstFragment,
}

fn classify_ipv4(packet: &[u8]) -> Result<Classified, WireError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    let frag = FragmentId {
        src,
        dst,
        proto: ip.protocol(),
        id: u32::from(ip.ident()),
    };
    let first_fragment = match (ip.frag_offset(), ip.more_fragments()) {
        (0, false) => None,
        (0, true) => Some(frag),
        _ => return Ok(Classified::LaterFragment { frag }),
    };
    let flow = Flow {
        family: Family::V4,
        src,
        dst,
        proto: ip.protocol(),
    };
    flow.classify_transport(ip.payload(), first_fragment)
}

fn classify_ipv6(packet: &[u8]) -> Result<Classified, WireError> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let (src, dst) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
    let chain = ip.extension_headers()?;
    let first_fragment = match chain.fragment {
        None => None,
        Some(f) => {
            let frag = FragmentId {
                src,
                dst,
                proto: f.next_header,
                id: f.ident,
            };
            match (f.offset, f.more_fragments) {
                (0, false) => None,
                (0, true) => Some(frag),
                _ => return Ok(Classified::LaterFragment { frag }),
            }
        }
    };
    let flow = Flow {
        family: Family::V6,
        src,
        dst,
        proto: chain.protocol,
    };
    flow.classify_transport(&ip.payload()[chain.offset..], first_fragment)
}

/// The addresses and transport protocol of a packet, before its ports are known.
#[derive(Clone, Copy)]
struct Flow {
    family: Family,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
}

impl Flow {
    fn with_ports(self, src_port: u16, dst_port: u16) -> FiveTuple {
        FiveTuple {
            src: self.src,
            dst: self.dst,
            src_port,
            dst_port,
            proto: self.proto,
        }
    }

    /// Classifies by the transport bytes of a whole packet (`first_fragment` None) or of the
    /// first fragment of a datagram.
    fn classify_transport(self, segment: &[u8], first_fragment: Option<FragmentId>) -> Result<Classified, WireError> {
        match first_fragment {
            None => {
                let (tuple, tcp_flags) = self.transport(segment, Carrier::Whole)?;
                Ok(Classified::Whole { tuple, tcp_flags })
            }
            Some(frag) => {
                let (tuple, tcp_flags) = self
                    .transport(segment, Carrier::FirstFragment)
                    .map_err(|_| WireError::BadFragment)?;
                Ok(Classified::FirstFragment { tuple, frag, tcp_flags })
            }
        }
    }

    fn transport(self, segment: &[u8], carrier: Carrier) -> Result<(FiveTuple, u8), WireError> {
        match self.proto {
            proto::TCP => {
                let tcp = TcpPacket::new_checked(segment)?;
                Ok((self.with_ports(tcp.src_port(), tcp.dst_port()), tcp.flags()))
            }
            proto::UDP => {
                let udp = match carrier {
                    Carrier::Whole => UdpPacket::new_checked(segment)?,
                    // The UDP length covers the whole datagram, not this fragment.
                    Carrier::FirstFragment => UdpPacket::new_unchecked(header(segment, UDP_HEADER_LEN)?),
                };
                Ok((self.with_ports(udp.src_port(), udp.dst_port()), 0))
            }
            p if p == self.family.icmp_proto() => {
                let icmp = IcmpPacket::new_checked(segment)?;
                let tuple = match self.family.icmp_message(icmp.msg_type()) {
                    IcmpMessage::Echo => self.with_ports(icmp.echo_ident(), icmp.echo_ident()),
                    IcmpMessage::Error => quoted_flow(self.family, icmp.payload())?.reversed(),
                    IcmpMessage::Other => self.with_ports(0, 0),
                };
                Ok((tuple, 0))
            }
            _ => Ok((self.with_ports(0, 0), 0)),
        }
    }

    /// The ports of a quoted transport header, 0 where the quote is too short to hold them.
    fn quoted_ports(self, quoted: &[u8]) -> FiveTuple {
        match self.proto {
            proto::TCP | proto::UDP => match quoted.get(..4) {
                Some(ports) => self.with_ports(read_u16(ports, 0), read_u16(ports, 2)),
                None => self.with_ports(0, 0),
            },
            p if p == self.family.icmp_proto() => match IcmpPacket::new_checked(quoted) {
                Ok(icmp) if self.family.icmp_message(icmp.msg_type()) == IcmpMessage::Echo => {
                    self.with_ports(icmp.echo_ident(), icmp.echo_ident())
                }
                _ => self.with_ports(0, 0),
            },
            _ => self.with_ports(0, 0),
        }
    }
}

/// The first `len` bytes of `bytes`, or [`WireError::Truncated`].
fn header(bytes: &[u8], len: usize) -> Result<&[u8], WireError> {
    bytes.get(..len).ok_or(WireError::Truncated)
}

/// The 5-tuple of the packet quoted in an ICMP error, in the quoted packet's direction.
fn quoted_flow(family: Family, quote: &[u8]) -> Result<FiveTuple, WireError> {
    match family {
        Family::V4 => {
            let ip = Ipv4Packet::new_unchecked(quote);
            ip.check_header().map_err(|_| WireError::BadIcmpQuote)?;
            let flow = Flow {
                family,
                src: IpAddr::V4(ip.src_addr()),
                dst: IpAddr::V4(ip.dst_addr()),
                proto: ip.protocol(),
            };
            if ip.frag_offset() != 0 {
                return Ok(flow.with_ports(0, 0));
            }
            Ok(flow.quoted_ports(ip.payload()))
        }
        Family::V6 => {
            let ip = Ipv6Packet::new_unchecked(quote);
            ip.check_header().map_err(|_| WireError::BadIcmpQuote)?;
            let mut flow = Flow {
                family,
                src: IpAddr::V6(ip.src_addr()),
                dst: IpAddr::V6(ip.dst_addr()),
                proto: ip.next_header(),
            };
            match walk_extension_headers(ip.next_header(), ip.payload()) {
                Ok(chain) if !chain.is_later_fragment() => {
                    flow.proto = chain.protocol;
                    Ok(flow.quoted_ports(&ip.payload()[chain.offset..]))
                }
                Ok(chain) => {
                    flow.proto = chain.protocol;
                    Ok(flow.with_ports(0, 0))
                }
                // The quote was cut inside the extension chain.
                Err(_) => Ok(flow.with_ports(0, 0)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tcp_flags;
    use crate::wire::checksum;
    use crate::wire::icmp::{icmpv4_type, icmpv6_type};
    use crate::wire::ipv6::ext;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 254);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);
    const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0xff, 0, 0, 0, 1);

    /// 198.18.0.1:51000 → 198.19.0.2:443 SYN; IPv4 checksum 0x02DA, TCP checksum 0x5AC5.
    const SYN_CAPTURE: [u8; 40] = [
        0x45, 0x00, 0x00, 0x28, 0xAB, 0xCD, 0x40, 0x00, 0x40, 0x06, 0x02, 0xDA, 0xC6, 0x12, 0x00, 0x01, 0xC6, 0x13,
        0x00, 0x02, 0xC7, 0x38, 0x01, 0xBB, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xFF, 0xFF,
        0x5A, 0xC5, 0x00, 0x00,
    ];

    fn tuple(src: IpAddr, dst: IpAddr, ports: (u16, u16), proto: u8) -> FiveTuple {
        FiveTuple {
            src,
            dst,
            src_port: ports.0,
            dst_port: ports.1,
            proto,
        }
    }

    fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
        let mut seg = vec![0u8; 20];
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_src_port(src_port);
        t.set_dst_port(dst_port);
        t.set_header_len(20);
        t.set_flags(flags);
        seg
    }

    fn udp(src_port: u16, dst_port: u16, data_len: usize) -> Vec<u8> {
        let mut dgram = vec![0u8; 8 + data_len];
        let mut u = UdpPacket::new_unchecked(&mut dgram[..]);
        u.set_src_port(src_port);
        u.set_dst_port(dst_port);
        u.set_len((8 + data_len) as u16);
        dgram
    }

    fn icmp(msg_type: u8, ident: u16, payload: &[u8]) -> Vec<u8> {
        let mut msg = vec![0u8; 8];
        msg[0] = msg_type;
        msg[4..6].copy_from_slice(&ident.to_be_bytes());
        msg.extend_from_slice(payload);
        msg
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, fragment: (bool, u16), l4: &[u8]) -> Vec<u8> {
        let mut pkt = vec![0u8; 20 + l4.len()];
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len((20 + l4.len()) as u16);
        ip.set_ident(0x4242);
        ip.set_fragment(false, fragment.0, fragment.1);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.payload_mut().copy_from_slice(l4);
        ip.fill_checksum();
        pkt
    }

    fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, rest: &[u8]) -> Vec<u8> {
        let mut pkt = vec![0u8; 40 + rest.len()];
        let mut ip = Ipv6Packet::new_unchecked(&mut pkt[..]);
        ip.set_version_class_label(0, 0);
        ip.set_payload_len(rest.len() as u16);
        ip.set_next_header(next_header);
        ip.set_hop_limit(64);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.payload_mut().copy_from_slice(rest);
        pkt
    }

    fn fragment_header(next_header: u8, offset: u16, more: bool, ident: u32) -> Vec<u8> {
        let mut h = vec![next_header, 0];
        h.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&ident.to_be_bytes());
        h
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn classifies_a_captured_syn() {
        let ip = Ipv4Packet::new_checked(&SYN_CAPTURE[..]).unwrap();
        assert!(ip.verify_checksum());
        let pseudo = checksum::pseudo_header_v4(A4, B4, proto::TCP, 20);
        assert!(TcpPacket::new_checked(ip.payload()).unwrap().verify_checksum(pseudo));
        assert_eq!(
            classify(&SYN_CAPTURE),
            Ok(Classified::Whole {
                tuple: tuple(A4.into(), B4.into(), (51000, 443), proto::TCP),
                tcp_flags: tcp_flags::SYN,
            })
        );
    }

    #[test]
    fn ignores_trailing_bytes_after_total_length() {
        let mut pkt = ipv4(A4, B4, proto::UDP, (false, 0), &udp(5353, 53, 4));
        pkt.extend_from_slice(&[0xFF; 6]);
        assert_eq!(
            classify(&pkt),
            Ok(Classified::Whole {
                tuple: tuple(A4.into(), B4.into(), (5353, 53), proto::UDP),
                tcp_flags: 0,
            })
        );
    }

    #[test]
    fn echo_ident_stands_in_for_both_ports() {
        let v4 = ipv4(
            A4,
            B4,
            proto::ICMP,
            (false, 0),
            &icmp(icmpv4_type::ECHO_REQUEST, 7, b"x"),
        );
        let v6 = ipv6(A6, B6, proto::ICMPV6, &icmp(icmpv6_type::ECHO_REPLY, 9, b""));
        assert_eq!(
            classify(&v4),
            Ok(Classified::Whole {
                tuple: tuple(A4.into(), B4.into(), (7, 7), proto::ICMP),
                tcp_flags: 0,
            })
        );
        assert_eq!(
            classify(&v6),
            Ok(Classified::Whole {
                tuple: tuple(A6.into(), B6.into(), (9, 9), proto::ICMPV6),
                tcp_flags: 0,
            })
        );
    }

    #[test]
    fn other_protocols_and_icmp_types_get_port_zero() {
        let gre = ipv4(A4, B4, 47, (false, 0), &[0; 4]);
        let router_solicit = ipv6(A6, B6, proto::ICMPV6, &icmp(133, 0, &[]));
        let esp = ipv6(A6, B6, ext::ESP, &[0; 16]);
        let expect = |src: IpAddr, dst: IpAddr, proto| {
            Ok(Classified::Whole {
                tuple: tuple(src, dst, (0, 0), proto),
                tcp_flags: 0,
            })
        };
        assert_eq!(classify(&gre), expect(A4.into(), B4.into(), 47));
        assert_eq!(classify(&router_solicit), expect(A6.into(), B6.into(), proto::ICMPV6));
        assert_eq!(classify(&esp), expect(A6.into(), B6.into(), ext::ESP));
    }

    #[test]
    fn icmpv4_error_follows_the_quoted_flow_reversed() {
        // B4 could not be reached: the router quotes A4:40000 → B4:53 (header + 8 bytes).
        let original = ipv4(A4, B4, proto::UDP, (false, 0), &udp(40000, 53, 100));
        let error = icmp(icmpv4_type::DEST_UNREACHABLE, 0, &original[..28]);
        let pkt = ipv4(ROUTER4, A4, proto::ICMP, (false, 0), &error);
        let expected = tuple(A4.into(), B4.into(), (40000, 53), proto::UDP).reversed();
        assert_eq!(
            classify(&pkt),
            Ok(Classified::Whole {
                tuple: expected,
                tcp_flags: 0
            })
        );
    }

    #[test]
    fn icmp_error_about_a_ping_uses_the_echo_ident() {
        let ping = ipv4(
            A4,
            B4,
            proto::ICMP,
            (false, 0),
            &icmp(icmpv4_type::ECHO_REQUEST, 31, &[]),
        );
        let error = icmp(icmpv4_type::TIME_EXCEEDED, 0, &ping);
        let pkt = ipv4(ROUTER4, A4, proto::ICMP, (false, 0), &error);
        let expected = tuple(B4.into(), A4.into(), (31, 31), proto::ICMP);
        assert_eq!(
            classify(&pkt),
            Ok(Classified::Whole {
                tuple: expected,
                tcp_flags: 0
            })
        );
    }

    #[test]
    fn short_quotes_fall_back_to_port_zero() {
        let original = ipv4(A4, B4, proto::TCP, (false, 0), &tcp(1000, 80, tcp_flags::ACK));
        let expected = tuple(B4.into(), A4.into(), (0, 0), proto::TCP);
        for cut in 20..24 {
            let error = icmp(icmpv4_type::DEST_UNREACHABLE, 0, &original[..cut]);
            let pkt = ipv4(ROUTER4, A4, proto::ICMP, (false, 0), &error);
            assert_eq!(
                classify(&pkt),
                Ok(Classified::Whole {
                    tuple: expected,
                    tcp_flags: 0
                })
            );
        }
    }

    #[test]
    fn unparsable_quotes_are_rejected() {
        let original = ipv4(A4, B4, proto::TCP, (false, 0), &tcp(1000, 80, 0));
        for cut in 0..20 {
            let error = icmp(icmpv4_type::PARAMETER_PROBLEM, 0, &original[..cut]);
            let pkt = ipv4(ROUTER4, A4, proto::ICMP, (false, 0), &error);
            assert_eq!(classify(&pkt), Err(WireError::BadIcmpQuote), "cut {cut}");
        }
        let v6_inside_v4 = icmp(icmpv4_type::DEST_UNREACHABLE, 0, &ipv6(A6, B6, 59, &[]));
        let pkt = ipv4(ROUTER4, A4, proto::ICMP, (false, 0), &v6_inside_v4);
        assert_eq!(classify(&pkt), Err(WireError::BadIcmpQuote));
    }

    #[test]
    fn icmpv6_packet_too_big_follows_the_quoted_flow_through_extension_headers() {
        let dest_opts = [proto::TCP, 0, 1, 4, 0, 0, 0, 0];
        let original = ipv6(A6, B6, ext::DEST_OPTIONS, &concat(&[&dest_opts, &tcp(443, 2000, 0)]));
        let mut error = icmp(icmpv6_type::PACKET_TOO_BIG, 0, &original);
        error[4..8].copy_from_slice(&1280u32.to_be_bytes());
        let pkt = ipv6(ROUTER6, A6, proto::ICMPV6, &error);
        let expected = tuple(B6.into(), A6.into(), (2000, 443), proto::TCP);
        assert_eq!(
            classify(&pkt),
            Ok(Classified::Whole {
                tuple: expected,
                tcp_flags: 0
            })
        );

        // Quote cut inside the extension header: the flow's addresses remain, ports are 0.
        let cut = icmp(icmpv6_type::PACKET_TOO_BIG, 0, &original[..44]);
        let pkt = ipv6(ROUTER6, A6, proto::ICMPV6, &cut);
        let expected = tuple(B6.into(), A6.into(), (0, 0), ext::DEST_OPTIONS);
        assert_eq!(
            classify(&pkt),
            Ok(Classified::Whole {
                tuple: expected,
                tcp_flags: 0
            })
        );
    }

    #[test]
    fn ipv4_fragments_follow_the_policy() {
        let whole = udp(4000, 4789, 1000);
        let first = ipv4(A4, B4, proto::UDP, (true, 0), &whole[..504]);
        let later = ipv4(A4, B4, proto::UDP, (false, 504), &whole[504..]);
        let frag = FragmentId {
            src: A4.into(),
            dst: B4.into(),
            proto: proto::UDP,
            id: 0x4242,
        };
        assert_eq!(
            classify(&first),
            Ok(Classified::FirstFragment {
                tuple: tuple(A4.into(), B4.into(), (4000, 4789), proto::UDP),
                frag,
                tcp_flags: 0,
            })
        );
        assert_eq!(classify(&later), Ok(Classified::LaterFragment { frag }));
        let middle = ipv4(A4, B4, proto::UDP, (true, 8), &whole[8..16]);
        assert_eq!(classify(&middle), Ok(Classified::LaterFragment { frag }));
    }

    #[test]
    fn tiny_first_fragments_are_rejected() {
        let syn = tcp(1, 2, tcp_flags::SYN);
        let tiny = ipv4(A4, B4, proto::TCP, (true, 0), &syn[..8]);
        assert_eq!(classify(&tiny), Err(WireError::BadFragment));
        let tiny_udp = ipv4(A4, B4, proto::UDP, (true, 0), &udp(1, 2, 0)[..4]);
        assert_eq!(classify(&tiny_udp), Err(WireError::BadFragment));
    }

    #[test]
    fn ipv6_fragments_follow_the_policy() {
        let segment = tcp(5000, 22, tcp_flags::SYN | tcp_flags::ACK);
        let first = ipv6(
            A6,
            B6,
            ext::FRAGMENT,
            &concat(&[&fragment_header(proto::TCP, 0, true, 0xDEAD_BEEF), &segment]),
        );
        let later = ipv6(
            A6,
            B6,
            ext::FRAGMENT,
            &fragment_header(proto::TCP, 1232, false, 0xDEAD_BEEF),
        );
        let frag = FragmentId {
            src: A6.into(),
            dst: B6.into(),
            proto: proto::TCP,
            id: 0xDEAD_BEEF,
        };
        let flow = tuple(A6.into(), B6.into(), (5000, 22), proto::TCP);
        assert_eq!(
            classify(&first),
            Ok(Classified::FirstFragment {
                tuple: flow,
                frag,
                tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            })
        );
        assert_eq!(classify(&later), Ok(Classified::LaterFragment { frag }));

        let atomic = ipv6(
            A6,
            B6,
            ext::FRAGMENT,
            &concat(&[&fragment_header(proto::TCP, 0, false, 1), &segment]),
        );
        assert_eq!(
            classify(&atomic),
            Ok(Classified::Whole {
                tuple: flow,
                tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            })
        );
    }

    #[test]
    fn malformed_transports_are_rejected() {
        let mut bad_offset = tcp(1, 2, 0);
        bad_offset[12] = 0x40;
        let pkt = ipv4(A4, B4, proto::TCP, (false, 0), &bad_offset);
        assert_eq!(classify(&pkt), Err(WireError::BadTcpHeader));
        let mut bad_len = udp(1, 2, 0);
        bad_len[5] = 9;
        let pkt = ipv6(A6, B6, proto::UDP, &bad_len);
        assert_eq!(classify(&pkt), Err(WireError::BadUdpLength));
        let pkt = ipv4(A4, B4, proto::ICMP, (false, 0), &[8, 0, 0]);
        assert_eq!(classify(&pkt), Err(WireError::Truncated));
    }

    #[test]
    fn rejects_bad_versions_and_empty_buffers() {
        assert_eq!(classify(&[]), Err(WireError::Truncated));
        let mut pkt = SYN_CAPTURE;
        for version in [0u8, 5, 7, 15] {
            pkt[0] = (version << 4) | 5;
            assert_eq!(classify(&pkt), Err(WireError::BadIpVersion), "version {version}");
        }
    }

    fn sample_packets() -> Vec<Vec<u8>> {
        let original = ipv4(A4, B4, proto::UDP, (false, 0), &udp(40000, 53, 0));
        let hop_by_hop = [proto::UDP, 0, 1, 4, 0, 0, 0, 0];
        vec![
            SYN_CAPTURE.to_vec(),
            ipv4(
                A4,
                B4,
                proto::ICMP,
                (false, 0),
                &icmp(icmpv4_type::DEST_UNREACHABLE, 0, &original),
            ),
            ipv4(A4, B4, proto::UDP, (true, 0), &udp(1, 2, 8)),
            ipv6(A6, B6, ext::HOP_BY_HOP, &concat(&[&hop_by_hop, &udp(1, 2, 3)])),
            ipv6(
                A6,
                B6,
                ext::FRAGMENT,
                &concat(&[&fragment_header(proto::TCP, 0, true, 5), &tcp(1, 2, 0)]),
            ),
            ipv6(A6, B6, proto::ICMPV6, &icmp(icmpv6_type::ECHO_REQUEST, 3, &[])),
        ]
    }

    #[test]
    fn every_truncation_of_a_valid_packet_is_rejected() {
        for pkt in sample_packets() {
            assert!(classify(&pkt).is_ok());
            for len in 0..pkt.len() {
                assert!(classify(&pkt[..len]).is_err(), "len {len} of {pkt:02x?}");
            }
        }
    }

    #[test]
    fn never_panics_on_random_or_mutated_bytes() {
        let mut state = 0x1234_5678_9ABC_DEF1_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let samples = sample_packets();
        let mut buf = [0u8; 128];
        for round in 0..200_000 {
            let len = (next() % 129) as usize;
            if round % 2 == 0 {
                // Random bytes with a plausible version nibble.
                for b in buf.iter_mut() {
                    *b = next() as u8;
                }
                buf[0] = (buf[0] & 0x0F) | if round % 4 == 0 { 0x40 } else { 0x60 };
            } else {
                // A valid packet with a few bytes flipped.
                let sample = &samples[round % samples.len()];
                buf[..sample.len()].copy_from_slice(sample);
                for _ in 0..3 {
                    let at = (next() as usize) % sample.len();
                    buf[at] = next() as u8;
                }
            }
            let _ = classify(&buf[..len]);
        }
    }
}
