//! Hand-built TCP/IP packets and an independent validity check, for the offload tests.

use std::net::{Ipv4Addr, Ipv6Addr};

use braid_core::flow::tcp_flags;
use braid_core::wire::checksum;

/// What a test packet carries.
#[derive(Clone, Debug)]
pub struct TcpSpec {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes, a multiple of four long.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    pub ip_id: u16,
}

impl Default for TcpSpec {
    fn default() -> Self {
        TcpSpec {
            src_port: 40000,
            dst_port: 5201,
            seq: 1000,
            ack: 77,
            flags: tcp_flags::ACK,
            window: 500,
            options: Vec::new(),
            payload: Vec::new(),
            ip_id: 10,
        }
    }
}

pub const V4_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
pub const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

fn tcp_segment(spec: &TcpSpec, pseudo: impl Fn(usize) -> u64) -> Vec<u8> {
    assert_eq!(spec.options.len() % 4, 0);
    let header_len = 20 + spec.options.len();
    let mut tcp = vec![0u8; header_len];
    tcp[0..2].copy_from_slice(&spec.src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&spec.dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&spec.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&spec.ack.to_be_bytes());
    tcp[12] = ((header_len / 4) as u8) << 4;
    tcp[13] = spec.flags;
    tcp[14..16].copy_from_slice(&spec.window.to_be_bytes());
    tcp[20..].copy_from_slice(&spec.options);
    tcp.extend_from_slice(&spec.payload);
    let sum = checksum::finish(checksum::accumulate(pseudo(tcp.len()), &tcp));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    tcp
}

/// A valid IPv4 (DF, TTL 64) TCP packet from [`V4_SRC`] to [`V4_DST`].
pub fn tcp_v4(spec: &TcpSpec) -> Vec<u8> {
    tcp_v4_between(spec, V4_SRC, V4_DST)
}

/// A valid IPv4 (DF, TTL 64) TCP packet between the given addresses.
pub fn tcp_v4_between(spec: &TcpSpec, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let tcp = tcp_segment(spec, |len| checksum::pseudo_header_v4(src, dst, 6, len as u16));
    ipv4_packet(src, dst, 6, spec.ip_id, &tcp)
}

/// An IPv4 packet (DF, TTL 64, header checksum filled) around `transport`.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ip_id: u16, transport: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    packet[2..4].copy_from_slice(&((20 + transport.len()) as u16).to_be_bytes());
    packet[4..6].copy_from_slice(&ip_id.to_be_bytes());
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let sum = checksum::checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(transport);
    packet
}

/// A valid IPv6 TCP packet from [`V6_SRC`] to [`V6_DST`].
pub fn tcp_v6(spec: &TcpSpec) -> Vec<u8> {
    let tcp = tcp_segment(spec, |len| checksum::pseudo_header_v6(V6_SRC, V6_DST, 6, len as u32));
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[6, 64]);
    packet.extend_from_slice(&V6_SRC.octets());
    packet.extend_from_slice(&V6_DST.octets());
    packet.extend_from_slice(&tcp);
    packet
}

/// What [`verify_tcp_packet`] read.
#[derive(Debug)]
pub struct Verified {
    pub seq: u32,
    pub flags: u8,
}

/// Asserts that `packet` is a complete, valid TCP/IP packet (lengths exact, IPv4 header
/// checksum and TCP checksum recomputed from scratch) and returns its sequence and flags.
pub fn verify_tcp_packet(packet: &[u8]) -> Verified {
    let (ip_header_len, pseudo) = match packet[0] >> 4 {
        4 => {
            let header_len = usize::from(packet[0] & 0x0F) * 4;
            assert_eq!(usize::from(u16::from_be_bytes([packet[2], packet[3]])), packet.len());
            assert_eq!(checksum::checksum(&packet[..header_len]), 0, "IPv4 header checksum");
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&packet[12..16]).unwrap());
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&packet[16..20]).unwrap());
            let len = packet.len() - header_len;
            (header_len, checksum::pseudo_header_v4(src, dst, 6, len as u16))
        }
        6 => {
            assert_eq!(
                usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40,
                packet.len()
            );
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).unwrap());
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).unwrap());
            (40, checksum::pseudo_header_v6(src, dst, 6, (packet.len() - 40) as u32))
        }
        v => panic!("IP version {v}"),
    };
    let tcp = &packet[ip_header_len..];
    assert_eq!(checksum::finish(checksum::accumulate(pseudo, tcp)), 0, "TCP checksum");
    Verified {
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags: tcp[13],
    }
}
