//! TSO in userspace: one TCP super-packet in, MSS-sized IP packets out.
//!
//! Design: [`Segmenter::new`] checks a super-packet against its [`VnetHeader`] once; then each
//! [`Segmenter::next_into`] writes the next segment straight into a buffer the caller hands
//! out (for the demux, a GENEVE send slot after the GENEVE header), so nothing is staged or
//! allocated. Segment `i` carries the original headers with: IPv4 total length, identification
//! (+i) and header checksum, or the IPv6 payload length; the TCP sequence number advanced by
//! the payload already sent; FIN and PSH only on the last segment and CWR only on the first;
//! and a TCP checksum computed in full over the pseudo-header and the segment.
//!
//! The header length is taken from the packet itself, never from `hdr_len`, which the kernel
//! may set to more than the headers. A packet that is not segmented but still carries a
//! partial checksum is finished by [`complete_checksum`].

use braid_core::flow::tcp_flags;
use braid_core::wire::checksum;
use braid_core::wire::ipv4::Ipv4Packet;
use braid_core::wire::ipv6::{Ipv6Packet, IPV6_HEADER_LEN};
use braid_core::wire::tcp::TcpPacket;

use super::layout::L4Layout;
use super::vnet::{GsoType, VnetHeader};
use super::OffloadError;

/// TCP PSH flag.
const PSH: u8 = 0x08;
/// TCP CWR flag.
const CWR: u8 = 0x80;

/// Splits one super-packet into segments, one [`Self::next_into`] call per segment.
#[derive(Debug)]
pub struct Segmenter<'p> {
    packet: &'p [u8],
    layout: L4Layout,
    gso_size: usize,
    segments: usize,
    next: usize,
}

impl<'p> Segmenter<'p> {
    /// Checks `packet` (the bytes after the vnet header) against `header`, whose GSO type must
    /// be TCPv4 or TCPv6.
    pub fn new(header: &VnetHeader, packet: &'p [u8]) -> Result<Segmenter<'p>, OffloadError> {
        let expected_version = match header.gso_type {
            GsoType::TcpV4 => 4,
            GsoType::TcpV6 => 6,
            GsoType::None | GsoType::UdpL4 => return Err(OffloadError::UnsupportedGso),
        };
        let layout = L4Layout::tcp(packet)?;
        if layout.version != expected_version {
            return Err(OffloadError::GsoMismatch);
        }
        let gso_size = usize::from(header.gso_size);
        if gso_size == 0 {
            return Err(OffloadError::BadGsoSize);
        }
        let payload = layout.len - layout.headers_len();
        Ok(Segmenter {
            packet: &packet[..layout.len],
            layout,
            gso_size,
            segments: payload.div_ceil(gso_size).max(1),
            next: 0,
        })
    }

    /// How many segments the super-packet makes.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// How many segments are still to come.
    pub fn remaining(&self) -> usize {
        self.segments - self.next
    }

    /// The length of the largest segment: what each output buffer must hold.
    pub fn max_segment_len(&self) -> usize {
        let payload = self.layout.len - self.layout.headers_len();
        self.layout.headers_len() + payload.min(self.gso_size)
    }

    /// Writes the next segment at the start of `out` and returns its length, or `None` when
    /// every segment has been written. An `out` shorter than the segment is
    /// [`OffloadError::BadGsoSize`] and consumes nothing.
    pub fn next_into(&mut self, out: &mut [u8]) -> Result<Option<usize>, OffloadError> {
        if self.next == self.segments {
            return Ok(None);
        }
        let layout = self.layout;
        let headers_len = layout.headers_len();
        let payload = &self.packet[headers_len..];
        let offset = self.next * self.gso_size;
        let chunk = &payload[offset..payload.len().min(offset + self.gso_size)];
        let len = headers_len + chunk.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(OffloadError::BadGsoSize);
        };
        out[..headers_len].copy_from_slice(&self.packet[..headers_len]);
        out[headers_len..].copy_from_slice(chunk);

        let first = self.next == 0;
        let last = self.next + 1 == self.segments;
        if layout.version == 4 {
            let mut ip = Ipv4Packet::new_unchecked(&mut *out);
            ip.set_total_len(len as u16);
            ip.set_ident(ip.ident().wrapping_add(self.next as u16));
            ip.fill_checksum();
        } else {
            let mut ip = Ipv6Packet::new_unchecked(&mut *out);
            ip.set_payload_len((len - IPV6_HEADER_LEN) as u16);
        }
        let pseudo = layout.pseudo_header(out, len - layout.ip_header_len);
        let mut tcp = TcpPacket::new_unchecked(&mut out[layout.ip_header_len..]);
        tcp.set_seq_number(tcp.seq_number().wrapping_add(offset as u32));
        let mut flags = tcp.flags();
        if !last {
            flags &= !(tcp_flags::FIN | PSH);
        }
        if !first {
            flags &= !CWR;
        }
        tcp.set_flags(flags);
        tcp.fill_checksum(pseudo);
        self.next += 1;
        Ok(Some(len))
    }
}

/// Completes the partial checksum of an unsegmented packet whose header says
/// [`VnetHeader::needs_csum`]: the field at `csum_start + csum_offset` holds the pseudo-header
/// sum, and the checksum covers everything from `csum_start` to the end of `packet`. A result
/// of zero is stored as 0xFFFF, its equivalent that UDP requires. Does nothing otherwise.
pub fn complete_checksum(header: &VnetHeader, packet: &mut [u8]) -> Result<(), OffloadError> {
    if !header.needs_csum() {
        return Ok(());
    }
    let start = usize::from(header.csum_start);
    let field = start + usize::from(header.csum_offset);
    if field + 2 > packet.len() {
        return Err(OffloadError::BadChecksumOffset);
    }
    let sum = match checksum::finish(checksum::accumulate(0, &packet[start..])) {
        0 => 0xFFFF,
        sum => sum,
    };
    packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testutil::{tcp_v4, tcp_v6, verify_tcp_packet, TcpSpec};
    use crate::offload::vnet::FLAG_NEEDS_CSUM;

    fn tso_header(gso_type: GsoType, gso_size: u16) -> VnetHeader {
        VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type,
            hdr_len: 0,
            gso_size,
            csum_start: 0,
            csum_offset: 16,
        }
    }

    fn split(header: &VnetHeader, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut segmenter = Segmenter::new(header, packet).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(len) = segmenter.next_into(&mut buf).unwrap() {
            out.push(buf[..len].to_vec());
        }
        assert_eq!(segmenter.remaining(), 0);
        out
    }

    fn check_segments(super_packet: &[u8], segments: &[Vec<u8>], spec: &TcpSpec, ip_header_len: usize) {
        let headers_len = ip_header_len + 20 + spec.options.len();
        let mut joined = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let tcp = verify_tcp_packet(segment);
            let offset = joined.len() as u32;
            assert_eq!(tcp.seq, spec.seq.wrapping_add(offset), "segment {i} sequence");
            let last = i + 1 == segments.len();
            assert_eq!(
                tcp.flags & (PSH | tcp_flags::FIN) != 0,
                last,
                "FIN/PSH only on the last"
            );
            assert_eq!(
                tcp.flags & CWR != 0,
                i == 0 && spec.flags & CWR != 0,
                "CWR only on the first"
            );
            assert_eq!(tcp.flags & tcp_flags::ACK, tcp_flags::ACK);
            assert_eq!(&segment[ip_header_len + 20..headers_len], &spec.options[..]);
            if ip_header_len == 20 {
                let ip = Ipv4Packet::new_checked(&segment[..]).unwrap();
                assert_eq!(ip.ident(), spec.ip_id.wrapping_add(i as u16));
            }
            joined.extend_from_slice(&segment[headers_len..]);
        }
        assert_eq!(
            joined,
            &super_packet[headers_len..],
            "payloads concatenate to the original"
        );
    }

    #[test]
    fn splits_an_ipv4_super_packet_into_three_valid_segments() {
        let spec = TcpSpec {
            payload: (0..3000u32).map(|i| (i * 7) as u8).collect(),
            flags: tcp_flags::ACK | PSH | tcp_flags::FIN | CWR,
            ip_id: 0xFFFF,
            ..TcpSpec::default()
        };
        let packet = tcp_v4(&spec);
        let segments = split(&tso_header(GsoType::TcpV4, 1200), &packet);
        assert_eq!(segments.len(), 3);
        assert_eq!(segments.iter().map(Vec::len).collect::<Vec<_>>(), [1240, 1240, 640]);
        check_segments(&packet, &segments, &spec, 20);
    }

    #[test]
    fn splits_an_ipv6_super_packet_with_options() {
        let spec = TcpSpec {
            payload: (0..2801u32).map(|i| (i % 251) as u8).collect(),
            flags: tcp_flags::ACK | PSH,
            options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            seq: u32::MAX - 100,
            ..TcpSpec::default()
        };
        let packet = tcp_v6(&spec);
        let segments = split(&tso_header(GsoType::TcpV6, 1400), &packet);
        assert_eq!(segments.len(), 3);
        check_segments(&packet, &segments, &spec, 40);
    }

    #[test]
    fn a_super_packet_shorter_than_one_segment_is_one_packet() {
        let spec = TcpSpec {
            payload: vec![9; 10],
            ..TcpSpec::default()
        };
        let packet = tcp_v4(&spec);
        let mut segmenter = Segmenter::new(&tso_header(GsoType::TcpV4, 1400), &packet).unwrap();
        assert_eq!(segmenter.segments(), 1);
        assert_eq!(segmenter.max_segment_len(), packet.len());
        let mut buf = [0u8; 100];
        assert_eq!(segmenter.next_into(&mut buf), Ok(Some(packet.len())));
        assert_eq!(&buf[..packet.len()], &packet[..], "already valid, so unchanged");
        assert_eq!(segmenter.next_into(&mut buf), Ok(None));
    }

    #[test]
    fn a_small_output_buffer_is_an_error_that_consumes_nothing() {
        let spec = TcpSpec {
            payload: vec![1; 3000],
            ..TcpSpec::default()
        };
        let packet = tcp_v4(&spec);
        let mut segmenter = Segmenter::new(&tso_header(GsoType::TcpV4, 1400), &packet).unwrap();
        assert_eq!(segmenter.max_segment_len(), 1440);
        assert_eq!(segmenter.next_into(&mut [0u8; 1439]), Err(OffloadError::BadGsoSize));
        assert_eq!(segmenter.remaining(), 3);
        assert!(segmenter.next_into(&mut [0u8; 1440]).unwrap().is_some());
    }

    #[test]
    fn refuses_mismatched_or_impossible_headers() {
        let v4 = tcp_v4(&TcpSpec::default());
        let v6 = tcp_v6(&TcpSpec::default());
        assert_eq!(
            Segmenter::new(&tso_header(GsoType::TcpV6, 1000), &v4).err(),
            Some(OffloadError::GsoMismatch)
        );
        assert_eq!(
            Segmenter::new(&tso_header(GsoType::TcpV4, 1000), &v6).err(),
            Some(OffloadError::GsoMismatch)
        );
        assert_eq!(
            Segmenter::new(&tso_header(GsoType::TcpV4, 0), &v4).err(),
            Some(OffloadError::BadGsoSize)
        );
        assert_eq!(
            Segmenter::new(&VnetHeader::NONE, &v4).err(),
            Some(OffloadError::UnsupportedGso)
        );
        let mut udp = v4.clone();
        udp[9] = 17;
        assert_eq!(
            Segmenter::new(&tso_header(GsoType::TcpV4, 1000), &udp).err(),
            Some(OffloadError::NotPlainTcp)
        );
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let spec = TcpSpec {
            payload: vec![3; 2000],
            options: vec![1, 1, 1, 0],
            ..TcpSpec::default()
        };
        for (packet, gso_type) in [(tcp_v4(&spec), GsoType::TcpV4), (tcp_v6(&spec), GsoType::TcpV6)] {
            let mut input = vec![0u8; crate::offload::VNET_HEADER_LEN];
            tso_header(gso_type, 700).write(&mut input);
            input.extend_from_slice(&packet);
            for len in 0..input.len() {
                let result = VnetHeader::parse(&input[..len])
                    .and_then(|h| Segmenter::new(&h, &input[crate::offload::VNET_HEADER_LEN..len]).map(|_| ()));
                assert!(result.is_err(), "{gso_type:?} truncated to {len} bytes was accepted");
            }
        }
    }

    #[test]
    fn completes_a_partial_checksum() {
        let spec = TcpSpec {
            payload: b"hello, partial checksum".to_vec(),
            ..TcpSpec::default()
        };
        let valid = tcp_v4(&spec);
        let mut partial = valid.clone();
        let layout = L4Layout::tcp(&partial).unwrap();
        let pseudo = checksum::fold(layout.pseudo_header(&partial, partial.len() - 20));
        partial[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let header = VnetHeader {
            csum_start: 20,
            csum_offset: 16,
            ..tso_header(GsoType::None, 0)
        };
        complete_checksum(&header, &mut partial).unwrap();
        assert_eq!(partial, valid);
        let far = VnetHeader {
            csum_offset: 200,
            ..header
        };
        assert_eq!(
            complete_checksum(&far, &mut partial),
            Err(OffloadError::BadChecksumOffset)
        );
        let mut untouched = valid.clone();
        complete_checksum(&VnetHeader::NONE, &mut untouched).unwrap();
        assert_eq!(untouched, valid);
    }
}
