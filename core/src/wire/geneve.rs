//! GENEVE (RFC 8926), the encapsulation on the demux ↔ gateway hop.
//!
//! ```text
//!  0                   1                   2                   3
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//! ```
//!
//! Opt Len counts 4-byte words of options. Each option is a TLV: class (16 bits), type (8 bits,
//! high bit = critical), 3 reserved bits and a 5-bit length in 4-byte words excluding the 4-byte
//! option header. braid sends no options and understands none, so [`GenevePacket::new_checked`]
//! accepts non-critical options (and skips them) but rejects any critical one, as RFC 8926 §3.5
//! requires of an endpoint that does not understand it. The VNI carries the gateway pair id.
//!
//! [`accept_data`] is the one acceptance policy both ends of the hop apply to a datagram that
//! should carry a packet of pair `vni`: well-formed as above, not OAM, that pair's VNI, and a
//! protocol type (IPv4 or IPv6) that the inner packet's version agrees with.

use super::{read_u16, read_u32, write_u16, write_u32, WireError};

/// The IANA UDP port for GENEVE.
pub const GENEVE_PORT: u16 = 6081;
/// Length of the fixed GENEVE header, without options.
pub const GENEVE_HEADER_LEN: usize = 8;
/// Protocol type of an inner IPv4 packet.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Protocol type of an inner IPv6 packet.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;

const OPTION_HEADER_LEN: usize = 4;
const FLAG_OAM: u8 = 0x80;
const FLAG_CRITICAL: u8 = 0x40;
const OPTION_TYPE_CRITICAL: u8 = 0x80;
const VNI_MAX: u32 = 0x00FF_FFFF;

/// The inner packet's network protocol, from the GENEVE protocol type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InnerProtocol {
    Ipv4,
    Ipv6,
}

/// A view of a GENEVE header and its payload.
#[derive(Clone, Copy, Debug)]
pub struct GenevePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GenevePacket<T> {
    /// Wraps a buffer without validation: getters stay in bounds only if it holds a header.
    pub fn new_unchecked(buffer: T) -> Self {
        GenevePacket { buffer }
    }

    /// Wraps untrusted bytes: version 0, options inside the buffer, option TLVs ending exactly
    /// at the end of the header, and no critical option.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = GenevePacket { buffer };
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < GENEVE_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if data[0] >> 6 != 0 {
            return Err(WireError::GeneveBadVersion);
        }
        if data[1] & FLAG_CRITICAL != 0 {
            return Err(WireError::GeneveCriticalOption);
        }
        if self.header_len() > data.len() {
            return Err(WireError::GeneveBadOptions);
        }
        walk_options(self.options())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 24-bit Virtual Network Identifier.
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 4) >> 8
    }

    /// The inner packet's EtherType.
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    /// The inner protocol braid can carry, or [`WireError::GeneveUnknownProtocol`].
    pub fn inner_protocol(&self) -> Result<InnerProtocol, WireError> {
        match self.protocol_type() {
            ETHERTYPE_IPV4 => Ok(InnerProtocol::Ipv4),
            ETHERTYPE_IPV6 => Ok(InnerProtocol::Ipv6),
            _ => Err(WireError::GeneveUnknownProtocol),
        }
    }

    /// Whether the O bit marks this as a control (OAM) packet.
    pub fn oam(&self) -> bool {
        self.buffer.as_ref()[1] & FLAG_OAM != 0
    }

    /// Length of the options in bytes.
    pub fn options_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x3F) * 4
    }

    /// Length of the header including options.
    pub fn header_len(&self) -> usize {
        GENEVE_HEADER_LEN + self.options_len()
    }

    /// The raw option TLVs (empty if they run past the buffer).
    pub fn options(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.get(GENEVE_HEADER_LEN..self.header_len()).unwrap_or(&[])
    }

    /// The encapsulated packet (empty if the header runs past the buffer).
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.get(self.header_len()..).unwrap_or(&[])
    }
}

/// Why a GENEVE datagram is not a data packet of the expected pair.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GeneveRefusal {
    /// Malformed, a critical option, or an inner protocol braid does not carry.
    Wire(WireError),
    /// A control (OAM) packet: braid sends none and answers none.
    Oam,
    /// Another pair's VNI.
    WrongVni,
}

/// A GENEVE datagram accepted as a data packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GeneveData {
    /// Where the inner packet starts.
    pub header_len: usize,
    pub protocol: InnerProtocol,
}

/// Accepts `datagram` as a data packet of pair `vni`, or says why not (see the module docs).
pub fn accept_data(datagram: &[u8], vni: u32) -> Result<GeneveData, GeneveRefusal> {
    let geneve = GenevePacket::new_checked(datagram).map_err(GeneveRefusal::Wire)?;
    if geneve.oam() {
        return Err(GeneveRefusal::Oam);
    }
    if geneve.vni() != vni {
        return Err(GeneveRefusal::WrongVni);
    }
    let protocol = geneve.inner_protocol().map_err(GeneveRefusal::Wire)?;
    let header_len = geneve.header_len();
    let version = datagram.get(header_len).map(|b| b >> 4);
    let expected = match protocol {
        InnerProtocol::Ipv4 => 4,
        InnerProtocol::Ipv6 => 6,
    };
    match version {
        None => Err(GeneveRefusal::Wire(WireError::Truncated)),
        Some(v) if v != expected => Err(GeneveRefusal::Wire(WireError::BadIpVersion)),
        Some(_) => Ok(GeneveData { header_len, protocol }),
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GenevePacket<T> {
    /// Sets the VNI (only the low 24 bits are kept).
    pub fn set_vni(&mut self, vni: u32) {
        let data = self.buffer.as_mut();
        let reserved = data[7];
        write_u32(data, 4, ((vni & VNI_MAX) << 8) | u32::from(reserved));
    }

    /// Sets the inner EtherType.
    pub fn set_protocol_type(&mut self, protocol_type: u16) {
        write_u16(self.buffer.as_mut(), 2, protocol_type);
    }

    /// The encapsulated packet, writable (empty if the header runs past the buffer).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }
}

/// Checks that option TLVs tile `options` exactly and that none is critical.
fn walk_options(mut options: &[u8]) -> Result<(), WireError> {
    while !options.is_empty() {
        if options.len() < OPTION_HEADER_LEN {
            return Err(WireError::GeneveBadOptions);
        }
        if options[2] & OPTION_TYPE_CRITICAL != 0 {
            return Err(WireError::GeneveCriticalOption);
        }
        let len = OPTION_HEADER_LEN + usize::from(options[3] & 0x1F) * 4;
        options = options.get(len..).ok_or(WireError::GeneveBadOptions)?;
    }
    Ok(())
}

/// Writes an option-less GENEVE header into `buf[..8]` and returns 8. Only the low 24 bits of
/// `vni` are used.
///
/// # Panics
/// If `buf` is shorter than [`GENEVE_HEADER_LEN`], which is a caller bug.
pub fn write_header(buf: &mut [u8], vni: u32, protocol_type: u16) -> usize {
    let header = &mut buf[..GENEVE_HEADER_LEN];
    header[0] = 0;
    header[1] = 0;
    write_u16(header, 2, protocol_type);
    write_u32(header, 4, (vni & VNI_MAX) << 8);
    GENEVE_HEADER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_data_takes_only_this_pairs_data_with_an_agreeing_inner_version() {
        let datagram = |flags: u8, vni: u32, protocol: u16, first: u8| {
            let mut d = vec![0u8; GENEVE_HEADER_LEN];
            write_header(&mut d, vni, protocol);
            d[1] |= flags;
            d.extend_from_slice(&[first, 0, 0, 20]);
            d
        };
        assert_eq!(
            accept_data(&datagram(0, 7, ETHERTYPE_IPV4, 0x45), 7),
            Ok(GeneveData {
                header_len: GENEVE_HEADER_LEN,
                protocol: InnerProtocol::Ipv4
            })
        );
        assert_eq!(
            accept_data(&datagram(0, 7, ETHERTYPE_IPV6, 0x60), 7).map(|d| d.protocol),
            Ok(InnerProtocol::Ipv6)
        );
        assert_eq!(
            accept_data(&datagram(0, 8, ETHERTYPE_IPV4, 0x45), 7),
            Err(GeneveRefusal::WrongVni)
        );
        assert_eq!(
            accept_data(&datagram(FLAG_OAM, 7, ETHERTYPE_IPV4, 0x45), 7),
            Err(GeneveRefusal::Oam)
        );
        assert_eq!(
            accept_data(&datagram(0, 7, 0x6558, 0x45), 7),
            Err(GeneveRefusal::Wire(WireError::GeneveUnknownProtocol)),
            "Ethernet inside is not braid's"
        );
        assert_eq!(
            accept_data(&datagram(0, 7, ETHERTYPE_IPV4, 0x60), 7),
            Err(GeneveRefusal::Wire(WireError::BadIpVersion)),
            "the protocol type and the inner version disagree"
        );
        assert_eq!(
            accept_data(&datagram(0, 7, ETHERTYPE_IPV4, 0x45)[..GENEVE_HEADER_LEN], 7),
            Err(GeneveRefusal::Wire(WireError::Truncated))
        );
        assert!(matches!(accept_data(&[0u8; 3], 7), Err(GeneveRefusal::Wire(_))));
    }

    /// A GENEVE header as captured from an AWS GWLB-style sender: VNI 0x123456, IPv4, one
    /// non-critical 8-byte option (class 0x0108, type 0x01, 4 bytes of data), then 4 payload bytes.
    const WITH_OPTION: [u8; 20] = [
        0x02, 0x00, 0x08, 0x00, // ver 0, opt len 2 words, IPv4
        0x12, 0x34, 0x56, 0x00, // VNI, reserved
        0x01, 0x08, 0x01, 0x01, // option class, type, len 1 word
        0xDE, 0xAD, 0xBE, 0xEF, // option data
        0x45, 0x00, 0x00, 0x14, // payload
    ];

    #[test]
    fn deconstructs_a_header_with_an_option() {
        let p = GenevePacket::new_checked(&WITH_OPTION[..]).unwrap();
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(p.protocol_type(), ETHERTYPE_IPV4);
        assert_eq!(p.inner_protocol(), Ok(InnerProtocol::Ipv4));
        assert!(!p.oam());
        assert_eq!(p.options_len(), 8);
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.options(), &WITH_OPTION[8..16]);
        assert_eq!(p.payload(), &[0x45, 0x00, 0x00, 0x14]);
    }

    #[test]
    fn written_header_round_trips() {
        let mut buf = [0xFFu8; 12];
        assert_eq!(write_header(&mut buf, 7, ETHERTYPE_IPV6), GENEVE_HEADER_LEN);
        assert_eq!(&buf[..8], &[0x00, 0x00, 0x86, 0xDD, 0x00, 0x00, 0x07, 0x00]);
        let mut p = GenevePacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.vni(), 7);
        assert_eq!(p.inner_protocol(), Ok(InnerProtocol::Ipv6));
        assert_eq!(p.payload(), &[0xFF; 4]);
        p.set_vni(0xABCDEF);
        p.set_protocol_type(ETHERTYPE_IPV4);
        p.payload_mut().fill(1);
        assert_eq!(p.vni(), 0xABCDEF);
        assert_eq!(p.protocol_type(), ETHERTYPE_IPV4);
        assert_eq!(&buf[8..], &[1; 4]);
    }

    #[test]
    fn vni_wider_than_24_bits_is_masked() {
        let mut buf = [0u8; 8];
        write_header(&mut buf, 0xFF00_0001, ETHERTYPE_IPV4);
        assert_eq!(GenevePacket::new_checked(&buf[..]).unwrap().vni(), 1);
        assert_eq!(buf[7], 0, "reserved byte stays zero");
    }

    #[test]
    fn every_truncation_is_rejected() {
        for len in 0..16 {
            assert!(GenevePacket::new_checked(&WITH_OPTION[..len]).is_err(), "len {len}");
        }
        assert!(GenevePacket::new_checked(&WITH_OPTION[..16]).is_ok());
    }

    #[test]
    fn rejects_bad_version() {
        let mut buf = WITH_OPTION;
        buf[0] |= 0x40;
        assert_eq!(
            GenevePacket::new_checked(&buf[..]).unwrap_err(),
            WireError::GeneveBadVersion
        );
    }

    #[test]
    fn rejects_critical_options() {
        let mut flagged = WITH_OPTION;
        flagged[1] |= FLAG_CRITICAL;
        assert_eq!(
            GenevePacket::new_checked(&flagged[..]).unwrap_err(),
            WireError::GeneveCriticalOption
        );
        let mut critical_type = WITH_OPTION;
        critical_type[10] |= OPTION_TYPE_CRITICAL;
        assert_eq!(
            GenevePacket::new_checked(&critical_type[..]).unwrap_err(),
            WireError::GeneveCriticalOption
        );
    }

    #[test]
    fn rejects_option_walks_that_do_not_end_at_the_header_end() {
        let mut overrun = WITH_OPTION;
        overrun[11] = 2; // option claims 12 bytes, the options area has 8
        assert_eq!(
            GenevePacket::new_checked(&overrun[..]).unwrap_err(),
            WireError::GeneveBadOptions
        );
        let mut short = WITH_OPTION;
        short[0] = 0x03; // options area 12 bytes: 8-byte option then a 4-byte option header
        short[16..20].copy_from_slice(&[0x01, 0x08, 0x02, 0x00]);
        assert!(GenevePacket::new_checked(&short[..]).is_ok());
        short[19] = 1; // that option now claims 4 more bytes than remain
        assert_eq!(
            GenevePacket::new_checked(&short[..]).unwrap_err(),
            WireError::GeneveBadOptions
        );
        let mut past_buffer = WITH_OPTION;
        past_buffer[0] = 0x3F;
        assert_eq!(
            GenevePacket::new_checked(&past_buffer[..]).unwrap_err(),
            WireError::GeneveBadOptions
        );
    }

    #[test]
    fn oam_and_unknown_protocol_are_reported() {
        let mut buf = [0u8; 8];
        write_header(&mut buf, 1, 0x6558);
        buf[1] |= FLAG_OAM;
        let p = GenevePacket::new_checked(&buf[..]).unwrap();
        assert!(p.oam());
        assert_eq!(p.inner_protocol(), Err(WireError::GeneveUnknownProtocol));
    }
}
