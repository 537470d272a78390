//! The UDP datagrams: sequence-numbered test traffic and reachability probes.
//!
//! ```text
//! test datagram:  "BRDU" | test id u64 | flow u32 | seq u64 | send time ns u64 | pattern…
//! probe:          "BRDP" | probe id u64 | flow u32 | padding…   (echoed back unchanged)
//! ```
//! All integers are big endian. The payload after a test datagram's header is the flow's
//! [`Pattern`](crate::pattern::Pattern) at offset `seq << DATAGRAM_SHIFT`, so the receiver
//! checks every byte. Parsing borrows the buffer and rejects short or foreign datagrams with a
//! typed error.

use crate::pattern::{Check, Pattern, DATAGRAM_SHIFT};

const TEST_MAGIC: [u8; 4] = *b"BRDU";
const PROBE_MAGIC: [u8; 4] = *b"BRDP";

/// Bytes before a test datagram's pattern payload.
pub const TEST_HEADER_LEN: usize = 32;
/// Bytes of a probe.
pub const PROBE_LEN: usize = 16;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Why a datagram was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram shorter than its header")]
    Truncated,
    #[error("datagram does not start with a braid-bench magic")]
    ForeignMagic,
}

/// The header of a test datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestHeader {
    pub test_id: u64,
    pub flow: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// A probe's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeHeader {
    pub probe_id: u64,
    pub flow: u32,
}

/// A parsed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    Test(TestHeader, &'a [u8]),
    Probe(ProbeHeader),
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(bytes)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_be_bytes(bytes)
}

impl TestHeader {
    /// Writes the header and the pattern payload into `buf` (its whole length is the datagram).
    ///
    /// `buf` must be at least [`TEST_HEADER_LEN`] long.
    pub fn write(&self, pattern: &Pattern, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&TEST_MAGIC);
        buf[4..12].copy_from_slice(&self.test_id.to_be_bytes());
        buf[12..16].copy_from_slice(&self.flow.to_be_bytes());
        buf[16..24].copy_from_slice(&self.seq.to_be_bytes());
        buf[24..32].copy_from_slice(&self.sent_ns.to_be_bytes());
        pattern.fill(payload_offset(self.seq), &mut buf[TEST_HEADER_LEN..]);
    }
}

/// Stream offset of the first payload byte of datagram `seq`.
pub fn payload_offset(seq: u64) -> u64 {
    seq << DATAGRAM_SHIFT
}

/// Checks a test datagram's payload against its flow's pattern.
pub fn check_payload(pattern: &Pattern, seq: u64, payload: &[u8]) -> Check {
    pattern.check(payload_offset(seq), payload)
}

impl ProbeHeader {
    /// Writes a probe into `buf[..PROBE_LEN]`; returns its length.
    pub fn write(&self, buf: &mut [u8; PROBE_LEN]) -> usize {
        buf[0..4].copy_from_slice(&PROBE_MAGIC);
        buf[4..12].copy_from_slice(&self.probe_id.to_be_bytes());
        buf[12..16].copy_from_slice(&self.flow.to_be_bytes());
        PROBE_LEN
    }
}

/// Parses a received datagram.
pub fn parse(buf: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    if buf.len() < 4 {
        return Err(DatagramError::Truncated);
    }
    match [buf[0], buf[1], buf[2], buf[3]] {
        TEST_MAGIC if buf.len() >= TEST_HEADER_LEN => Ok(Datagram::Test(
            TestHeader {
                test_id: u64_at(buf, 4),
                flow: u32_at(buf, 12),
                seq: u64_at(buf, 16),
                sent_ns: u64_at(buf, 24),
            },
            &buf[TEST_HEADER_LEN..],
        )),
        PROBE_MAGIC if buf.len() >= PROBE_LEN => Ok(Datagram::Probe(ProbeHeader {
            probe_id: u64_at(buf, 4),
            flow: u32_at(buf, 12),
        })),
        TEST_MAGIC | PROBE_MAGIC => Err(DatagramError::Truncated),
        _ => Err(DatagramError::ForeignMagic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_datagram_round_trips_and_verifies() {
        let header = TestHeader {
            test_id: 42,
            flow: 3,
            seq: 77,
            sent_ns: 123_456,
        };
        let pattern = Pattern::new(42, 3);
        let mut buf = [0u8; 200];
        header.write(&pattern, &mut buf);
        let Ok(Datagram::Test(parsed, payload)) = parse(&buf) else {
            panic!("not a test datagram");
        };
        assert_eq!(parsed, header);
        assert_eq!(payload.len(), 200 - TEST_HEADER_LEN);
        assert_eq!(check_payload(&pattern, 77, payload).corrupted_bytes, 0);
        assert!(check_payload(&pattern, 78, payload).corrupted_bytes > 0);
    }

    #[test]
    fn probe_round_trips() {
        let probe = ProbeHeader {
            probe_id: 9,
            flow: 65_000,
        };
        let mut buf = [0u8; PROBE_LEN];
        let len = probe.write(&mut buf);
        assert_eq!(parse(&buf[..len]), Ok(Datagram::Probe(probe)));
    }

    #[test]
    fn short_and_foreign_datagrams_are_rejected() {
        assert_eq!(parse(b""), Err(DatagramError::Truncated));
        assert_eq!(parse(b"BRDU1234"), Err(DatagramError::Truncated));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(DatagramError::ForeignMagic));
    }
}
