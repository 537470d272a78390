//! A gateway's two sockets, each seen as an inbox (a receive batch) and an outbox (a send
//! batch), so the thread that receives on a socket need not be the one that sends on it.
//!
//! Every figure goes to the thread's [`ThreadCounters`] under its side: packets and bytes received and
//! sent, what the kernel refused, receive errors. Nothing here fails the loop.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use braid_core::udp::{bind_data_socket, ReceiveDrops, RecvBatch, SendBatch, SendReport, SocketBuffers};

use crate::counters::{Counter, ThreadCounters};
use crate::settings::GatewaySettings;

/// Which socket: towards the demux (GENEVE) or towards the peer gateway.
#[derive(Clone, Copy, Debug)]
pub(super) enum Side {
    Lan,
    Wan,
}

/// A bound socket, before its batches are made.
#[derive(Debug)]
pub(super) struct Bound {
    pub socket: UdpSocket,
    pub buffers: SocketBuffers,
}

impl Bound {
    pub fn bind(addr: SocketAddr, settings: &GatewaySettings) -> io::Result<Bound> {
        let (socket, buffers) = bind_data_socket(addr, settings.socket_buffer_bytes)?;
        Ok(Bound { socket, buffers })
    }

    /// An inbox of `settings.batch_size` datagrams of up to `size` bytes.
    pub fn inbox(&self, side: Side, settings: &GatewaySettings, size: usize) -> io::Result<Inbox> {
        Ok(Inbox {
            socket: self.socket.try_clone()?,
            batch: RecvBatch::new(settings.batch_size, size),
            side,
        })
    }

    /// An outbox of `settings.batch_size` datagrams of up to `size` bytes.
    pub fn outbox(&self, side: Side, settings: &GatewaySettings, size: usize) -> io::Result<Outbox> {
        Ok(Outbox {
            socket: self.socket.try_clone()?,
            batch: SendBatch::new(settings.batch_size, size),
            side,
        })
    }
}

/// Receiving on one socket, a batch at a time.
#[derive(Debug)]
pub(super) struct Inbox {
    pub socket: UdpSocket,
    pub batch: RecvBatch,
    side: Side,
}

impl Inbox {
    /// Receives one batch; errors are counted, and the loop goes on.
    pub fn receive(&mut self, counters: &ThreadCounters) -> usize {
        let (packets, bytes, errors) = match self.side {
            Side::Lan => (Counter::LanRxPackets, Counter::LanRxBytes, Counter::LanSocketErrors),
            Side::Wan => (Counter::WanRxPackets, Counter::WanRxBytes, Counter::WanSocketErrors),
        };
        match self.batch.recv(&self.socket) {
            Ok(count) => {
                let total: usize = (0..count).map(|i| self.batch.get(i).0.len()).sum();
                counters.add(packets, count as u64);
                counters.add(bytes, total as u64);
                count
            }
            Err(err) => {
                counters.inc(errors);
                tracing::debug!(side = ?self.side, error = %err, "receive failed");
                0
            }
        }
    }
}

/// What the kernel dropped at both sockets because their receive buffers were full, read by
/// the main data thread every tick, whichever thread receives on them.
#[derive(Debug)]
pub(super) struct SocketDrops {
    watched: [(Counter, UdpSocket, ReceiveDrops); 2],
}

impl SocketDrops {
    pub fn new(lan: &UdpSocket, wan: &UdpSocket) -> io::Result<SocketDrops> {
        let watch = |counter, socket: &UdpSocket| -> io::Result<_> {
            Ok((counter, socket.try_clone()?, ReceiveDrops::new(socket)))
        };
        Ok(SocketDrops {
            watched: [
                watch(Counter::DropLanSocketFull, lan)?,
                watch(Counter::DropWanSocketFull, wan)?,
            ],
        })
    }

    /// Adds what each socket's kernel dropped since the last call to its counter.
    pub fn count(&mut self, counters: &ThreadCounters) {
        for (counter, socket, drops) in &mut self.watched {
            counters.add(*counter, drops.take(socket));
        }
    }
}

/// Sending on one socket, a batch at a time.
#[derive(Debug)]
pub(super) struct Outbox {
    socket: UdpSocket,
    pub batch: SendBatch,
    side: Side,
}

impl Outbox {
    /// Sends the pending batch, counting what went out and what the kernel refused.
    pub fn flush(&mut self, counters: &ThreadCounters) {
        if self.batch.is_empty() {
            return;
        }
        let SendReport {
            sent,
            sent_bytes,
            dropped,
        } = self.batch.flush(&self.socket);
        let (packets, bytes, failed) = match self.side {
            Side::Lan => (Counter::LanTxPackets, Counter::LanTxBytes, Counter::DropLanTxFailed),
            Side::Wan => (Counter::WanTxPackets, Counter::WanTxBytes, Counter::DropWanTxFailed),
        };
        counters.add(packets, sent as u64);
        counters.add(bytes, sent_bytes as u64);
        counters.add(failed, dropped as u64);
    }

    /// Flushes first if the send batch is full, so a slot is always free afterwards.
    pub fn make_room(&mut self, counters: &ThreadCounters) {
        if self.batch.is_full() {
            self.flush(counters);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sockets_overflow_is_counted_under_its_side() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        // The smallest buffers the kernel grants overflow within a few datagrams.
        let (lan, _) = bind_data_socket(loopback, 1).unwrap();
        let (wan, _) = bind_data_socket(loopback, 1).unwrap();
        let mut drops = SocketDrops::new(&lan, &wan).unwrap();
        let thread = std::sync::Arc::<ThreadCounters>::default();
        let counters = crate::counters::GatewayCounters::new(vec![std::sync::Arc::clone(&thread)]);
        let sender = UdpSocket::bind(loopback).unwrap();
        for _ in 0..100 {
            sender.send_to(&[1u8; 1000], lan.local_addr().unwrap()).unwrap();
        }
        drops.count(&thread);
        let lan_dropped = counters.get(Counter::DropLanSocketFull);
        assert!(lan_dropped > 0 && lan_dropped < 100, "LAN dropped {lan_dropped} of 100");
        assert_eq!(
            counters.get(Counter::DropWanSocketFull),
            0,
            "nothing was sent to the WAN"
        );
        for _ in 0..100 {
            sender.send_to(&[2u8; 1000], wan.local_addr().unwrap()).unwrap();
        }
        drops.count(&thread);
        assert_eq!(
            counters.get(Counter::DropLanSocketFull),
            lan_dropped,
            "the LAN count holds"
        );
        assert!(counters.get(Counter::DropWanSocketFull) > 0);
    }
}
