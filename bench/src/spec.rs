//! What a test is: the parameters both ends agree on in the handshake.
//!
//! The client builds a [`TestSpec`], sends it in its `Hello`, and both ends derive everything
//! else from it: how many data streams exist and which end sends each, the payload pattern of
//! every stream (from the test id), and the interval ticks at which both ends sample their
//! counters. The server validates every field before acting on it.

use serde::{Deserialize, Serialize};

use crate::datagram::{MAX_DATAGRAM, TEST_HEADER_LEN};

/// The most data streams (or UDP flows) one test may open, per direction.
pub const MAX_STREAMS: u32 = 256;
/// The longest test.
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
/// The shortest interval between samples.
pub const MIN_INTERVAL_MS: u64 = 100;
/// The longest wait for late UDP datagrams after the sender stops.
pub const MAX_DRAIN_MS: u64 = 60_000;

/// Which end sends the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to server.
    #[default]
    Forward,
    /// Server to client.
    Reverse,
    /// Both at once: streams `0..P` client to server, `P..2P` server to client.
    Bidir,
}

/// One end of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Server,
}

/// UDP parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpSpec {
    /// Bits per second over all flows, counting UDP payload.
    pub rate_bps: u64,
    /// UDP payload bytes per datagram, header included.
    pub size: usize,
    /// How long the receiver waits for stragglers after the sender stops.
    pub drain_ms: u64,
}

/// The parameters of one test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSpec {
    /// Random id naming the test's connections, datagrams and payload pattern.
    pub test_id: u64,
    /// Streams (TCP) or flows (UDP) per direction.
    pub streams: u32,
    pub duration_ms: u64,
    pub interval_ms: u64,
    pub direction: Direction,
    /// Present for a UDP test; absent for TCP.
    pub udp: Option<UdpSpec>,
    /// TCP only: bits per second per direction over all streams, each stream paced by the
    /// kernel to its share; absent means as fast as TCP goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_rate_bps: Option<u64>,
    /// The client's kernel boot id, to tell whether both ends share a monotonic clock.
    pub boot_id: String,
}

/// A spec field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("streams must be between 1 and {MAX_STREAMS}, got {0}")]
    Streams(u32),
    #[error("duration must be between 1 ms and {MAX_DURATION_MS} ms, got {0} ms")]
    Duration(u64),
    #[error("interval must be at least {MIN_INTERVAL_MS} ms, got {0} ms")]
    Interval(u64),
    #[error("UDP size must be between {TEST_HEADER_LEN} and {MAX_DATAGRAM} bytes, got {0}")]
    UdpSize(usize),
    #[error("UDP rate must be positive")]
    UdpRate,
    #[error("UDP drain must be at most {MAX_DRAIN_MS} ms, got {0} ms")]
    UdpDrain(u64),
    #[error("UDP tests run client to server only")]
    UdpDirection,
    #[error("a TCP rate applies to TCP tests only, and must be positive")]
    TcpRate,
}

impl TestSpec {
    /// Checks every field; the server calls this before acting on a client's spec.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=MAX_STREAMS).contains(&self.streams) {
            return Err(SpecError::Streams(self.streams));
        }
        if !(1..=MAX_DURATION_MS).contains(&self.duration_ms) {
            return Err(SpecError::Duration(self.duration_ms));
        }
        if self.interval_ms < MIN_INTERVAL_MS {
            return Err(SpecError::Interval(self.interval_ms));
        }
        if self.tcp_rate_bps == Some(0) || (self.tcp_rate_bps.is_some() && self.udp.is_some()) {
            return Err(SpecError::TcpRate);
        }
        if let Some(udp) = &self.udp {
            if !(TEST_HEADER_LEN..=MAX_DATAGRAM).contains(&udp.size) {
                return Err(SpecError::UdpSize(udp.size));
            }
            if udp.rate_bps == 0 {
                return Err(SpecError::UdpRate);
            }
            if udp.drain_ms > MAX_DRAIN_MS {
                return Err(SpecError::UdpDrain(udp.drain_ms));
            }
            if self.direction != Direction::Forward {
                return Err(SpecError::UdpDirection);
            }
        }
        Ok(())
    }

    /// Data streams in the test, over both directions.
    pub fn total_streams(&self) -> u32 {
        match self.direction {
            Direction::Bidir => self.streams * 2,
            Direction::Forward | Direction::Reverse => self.streams,
        }
    }

    /// The end that sends on stream `index`.
    pub fn sender_of(&self, index: u32) -> Side {
        match self.direction {
            Direction::Forward => Side::Client,
            Direction::Reverse => Side::Server,
            Direction::Bidir if index < self.streams => Side::Client,
            Direction::Bidir => Side::Server,
        }
    }

    /// The pacing rate of one TCP stream in bytes per second, when the test has a rate: its
    /// direction's share.
    pub fn stream_pacing_bytes(&self) -> Option<u64> {
        self.tcp_rate_bps
            .map(|bps| (bps / 8 / u64::from(self.streams.max(1))).max(1))
    }

    /// Number of sampling ticks; the last one falls at the end of the test.
    pub fn ticks(&self) -> u32 {
        self.duration_ms.div_ceil(self.interval_ms) as u32
    }

    /// Milliseconds from the start of the test to tick `tick` (1-based).
    pub fn tick_ms(&self, tick: u32) -> u64 {
        (u64::from(tick) * self.interval_ms).min(self.duration_ms)
    }
}

/// Parses a bit rate such as `100M`, `1.5G`, `64k` or `1000000` into bits per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1e3),
        Some((i, 'm' | 'M')) => (&text[..i], 1e6),
        Some((i, 'g' | 'G')) => (&text[..i], 1e9),
        _ => (text, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate like 100M, 1.5G or 64k"))?;
    let bps = value * scale;
    if !(1.0..=1e13).contains(&bps) {
        return Err(format!("rate `{text}` out of range (1 bit/s .. 10 Tbit/s)"));
    }
    Ok(bps as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tcp_spec(direction: Direction) -> TestSpec {
        TestSpec {
            test_id: 5,
            streams: 2,
            duration_ms: 2_500,
            interval_ms: 1_000,
            direction,
            udp: None,
            tcp_rate_bps: None,
            boot_id: String::new(),
        }
    }

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(parse_rate("100M"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64k"), Ok(64_000));
        assert_eq!(parse_rate("1200"), Ok(1_200));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("").is_err());
    }

    #[test]
    fn bidir_splits_streams_between_ends() {
        let spec = tcp_spec(Direction::Bidir);
        assert_eq!(spec.total_streams(), 4);
        assert_eq!(spec.sender_of(1), Side::Client);
        assert_eq!(spec.sender_of(2), Side::Server);
        assert_eq!(tcp_spec(Direction::Reverse).sender_of(0), Side::Server);
    }

    #[test]
    fn ticks_end_at_the_duration() {
        let spec = tcp_spec(Direction::Forward);
        assert_eq!(spec.ticks(), 3);
        assert_eq!(spec.tick_ms(2), 2_000);
        assert_eq!(spec.tick_ms(3), 2_500);
    }

    #[test]
    fn validation_rejects_out_of_range_fields() {
        let mut spec = tcp_spec(Direction::Forward);
        assert_eq!(spec.validate(), Ok(()));
        spec.streams = 0;
        assert_eq!(spec.validate(), Err(SpecError::Streams(0)));
        spec.streams = 1;
        spec.interval_ms = 1;
        assert_eq!(spec.validate(), Err(SpecError::Interval(1)));
        spec.interval_ms = 1_000;
        spec.udp = Some(UdpSpec {
            rate_bps: 1,
            size: 4,
            drain_ms: 0,
        });
        assert_eq!(spec.validate(), Err(SpecError::UdpSize(4)));
        spec.udp = Some(UdpSpec {
            rate_bps: 1,
            size: 100,
            drain_ms: 0,
        });
        spec.direction = Direction::Reverse;
        assert_eq!(spec.validate(), Err(SpecError::UdpDirection));
        spec.direction = Direction::Forward;
        spec.tcp_rate_bps = Some(1_000_000);
        assert_eq!(spec.validate(), Err(SpecError::TcpRate), "a rate on a UDP test");
        spec.udp = None;
        assert_eq!(spec.validate(), Ok(()));
        spec.tcp_rate_bps = Some(0);
        assert_eq!(spec.validate(), Err(SpecError::TcpRate));
    }

    #[test]
    fn a_tcp_rate_is_shared_by_the_streams_of_a_direction() {
        let mut spec = tcp_spec(Direction::Bidir);
        assert_eq!(spec.stream_pacing_bytes(), None);
        spec.tcp_rate_bps = Some(80_000_000);
        assert_eq!(spec.stream_pacing_bytes(), Some(5_000_000), "10 MB/s over 2 streams");
    }
}
