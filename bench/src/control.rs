//! The TCP protocol between client and server.
//!
//! Every TCP connection to the server opens with a 4-byte preamble naming its kind:
//!
//! * `BRDC` — a **control** connection, one per test, then newline-delimited JSON
//!   [`Message`]s (each at most [`MAX_LINE`] bytes):
//!   ```text
//!   client: Hello{spec}          server: Accepted{clocks_shared} | Error{message}
//!   client: opens data streams   server: Started           (all streams arrived)
//!                                server: Sample{tick,…}    (every interval)
//!   UDP:    client: UdpDone{sent}   server: UdpResult{flows}  (after the drain wait)
//!   TCP:                             server: TcpResult{…}     (after every stream ended)
//!   ```
//! * `BRDD` — a **data** connection: test id (u64 BE) and stream index (u32 BE), then the
//!   stream's pattern bytes until the sender shuts down its side.
//!
//! Anything else is refused with a typed error; the server counts it and keeps serving.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::TestSpec;
use crate::stats::FlowSummary;

/// Protocol version carried in `Hello`.
pub const VERSION: u32 = 1;
/// The longest control message line.
pub const MAX_LINE: usize = 1 << 20;

const CONTROL_PREAMBLE: [u8; 4] = *b"BRDC";
const DATA_PREAMBLE: [u8; 4] = *b"BRDD";

/// What a control or data connection failed on.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection I/O: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the control connection")]
    Closed,
    #[error("peer does not speak braid-bench (first bytes {0:02x?})")]
    ForeignPreamble([u8; 4]),
    #[error("control message longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("malformed control message: {0}")]
    Malformed(String),
    #[error("peer speaks protocol version {0}, this is version {VERSION}")]
    Version(u32),
    #[error("peer reported: {0}")]
    Peer(String),
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
}

/// The kind of an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preamble {
    Control,
    Data,
}

/// Reads and classifies the first four bytes of a connection.
pub fn read_preamble(stream: &mut impl Read) -> Result<Preamble, ProtocolError> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic)?;
    match magic {
        CONTROL_PREAMBLE => Ok(Preamble::Control),
        DATA_PREAMBLE => Ok(Preamble::Data),
        other => Err(ProtocolError::ForeignPreamble(other)),
    }
}

/// The identity a data connection announces after its preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub test_id: u64,
    pub stream: u32,
}

impl DataHeader {
    /// Writes the preamble and header.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&DATA_PREAMBLE);
        bytes[4..12].copy_from_slice(&self.test_id.to_be_bytes());
        bytes[12..].copy_from_slice(&self.stream.to_be_bytes());
        out.write_all(&bytes)
    }

    /// Reads the header that follows a data preamble.
    pub fn read_from(input: &mut impl Read) -> io::Result<Self> {
        let mut id = [0u8; 8];
        let mut stream = [0u8; 4];
        input.read_exact(&mut id)?;
        input.read_exact(&mut stream)?;
        Ok(DataHeader {
            test_id: u64::from_be_bytes(id),
            stream: u32::from_be_bytes(stream),
        })
    }
}

/// A per-stream cumulative counter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub stream: u32,
    pub value: u64,
}

/// One end's counters at one tick: bytes it received on the streams it receives, retransmits
/// on the streams it sends. Values are cumulative since the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Sample {
    pub tick: u32,
    pub received: Vec<Count>,
    pub retransmits: Vec<Count>,
}

/// What a receiver knows about one TCP stream at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReceipt {
    pub stream: u32,
    pub bytes: u64,
    /// Seconds from the start to the last byte.
    pub seconds: f64,
    pub corrupted_bytes: u64,
    pub first_bad_offset: Option<u64>,
    /// Whether the sender's end of stream arrived (false: the stream stalled or broke).
    pub complete: bool,
}

/// One end's final TCP figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TcpSideResult {
    pub received: Vec<StreamReceipt>,
    pub retransmits: Vec<Count>,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Hello { version: u32, spec: TestSpec },
    Accepted { clocks_shared: bool },
    Started,
    Sample(Sample),
    TcpResult(TcpSideResult),
    UdpDone { sent: Vec<u64> },
    UdpResult { flows: Vec<FlowSummary> },
    Error { message: String },
}

impl Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Accepted { .. } => "accepted",
            Message::Started => "started",
            Message::Sample(_) => "sample",
            Message::TcpResult(_) => "tcp_result",
            Message::UdpDone { .. } => "udp_done",
            Message::UdpResult { .. } => "udp_result",
            Message::Error { .. } => "error",
        }
    }

    /// An `Unexpected` error for this message where `expected` should have come.
    pub fn unexpected(&self, expected: &'static str) -> ProtocolError {
        match self {
            Message::Error { message } => ProtocolError::Peer(message.clone()),
            other => ProtocolError::Unexpected {
                expected,
                got: other.kind().to_string(),
            },
        }
    }
}

/// The reading half of a control connection.
#[derive(Debug)]
pub struct ControlReader {
    input: BufReader<TcpStream>,
    line: Vec<u8>,
}

/// The writing half of a control connection.
#[derive(Debug)]
pub struct ControlWriter {
    output: TcpStream,
}

/// Opens a control connection on an established TCP stream (client side).
pub fn client_control(stream: TcpStream) -> io::Result<(ControlReader, ControlWriter)> {
    let mut writer = stream.try_clone()?;
    writer.write_all(&CONTROL_PREAMBLE)?;
    Ok((ControlReader::new(stream), ControlWriter { output: writer }))
}

/// Splits a server-side control connection whose preamble was already read.
pub fn server_control(stream: TcpStream) -> io::Result<(ControlReader, ControlWriter)> {
    let writer = stream.try_clone()?;
    Ok((ControlReader::new(stream), ControlWriter { output: writer }))
}

impl ControlReader {
    fn new(stream: TcpStream) -> Self {
        ControlReader {
            input: BufReader::new(stream),
            line: Vec::new(),
        }
    }

    /// Bounds how long [`recv`](Self::recv) waits (`None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.input.get_ref().set_read_timeout(timeout)
    }

    /// The next message.
    pub fn recv(&mut self) -> Result<Message, ProtocolError> {
        self.line.clear();
        let limit = MAX_LINE as u64 + 1;
        let n = (&mut self.input).take(limit).read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Err(ProtocolError::Closed);
        }
        if self.line.last() != Some(&b'\n') {
            return Err(if n as u64 >= limit {
                ProtocolError::LineTooLong
            } else {
                ProtocolError::Closed
            });
        }
        serde_json::from_slice(&self.line).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

impl ControlWriter {
    /// Sends one message.
    pub fn send(&mut self, message: &Message) -> Result<(), ProtocolError> {
        let mut line = serde_json::to_vec(message).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        line.push(b'\n');
        self.output.write_all(&line)?;
        Ok(())
    }

    /// Sends an error message, ignoring failure (the connection is being abandoned anyway).
    pub fn send_error(&mut self, error: &impl std::fmt::Display) {
        let _ = self.send(&Message::Error {
            message: error.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{tests::tcp_spec, Direction};
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn messages_cross_a_control_connection() {
        let (client, mut server) = pair();
        let (_, mut to_server) = client_control(client).unwrap();
        let hello = Message::Hello {
            version: VERSION,
            spec: tcp_spec(Direction::Bidir),
        };
        to_server.send(&hello).unwrap();
        assert_eq!(read_preamble(&mut server).unwrap(), Preamble::Control);
        let (mut from_client, _) = server_control(server).unwrap();
        assert_eq!(from_client.recv().unwrap(), hello);
        drop(to_server);
        assert!(matches!(from_client.recv(), Err(ProtocolError::Closed)));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let (mut client, mut server) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(
            read_preamble(&mut server),
            Err(ProtocolError::ForeignPreamble(_))
        ));

        let (mut client, server) = pair();
        client.write_all(b"{\"type\":\"nonsense\"}\n").unwrap();
        let (mut reader, _) = server_control(server).unwrap();
        assert!(matches!(reader.recv(), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn data_header_round_trips() {
        let header = DataHeader {
            test_id: u64::MAX - 1,
            stream: 7,
        };
        let mut bytes = Vec::new();
        header.write_to(&mut bytes).unwrap();
        let mut input = bytes.as_slice();
        assert_eq!(read_preamble(&mut input).unwrap(), Preamble::Data);
        assert_eq!(DataHeader::read_from(&mut input).unwrap(), header);
    }

    #[test]
    fn error_message_becomes_peer_error() {
        let err = Message::Error { message: "busy".into() }.unexpected("started");
        assert!(matches!(err, ProtocolError::Peer(m) if m == "busy"));
    }
}
