//! INFORMATIONAL exchanges (RFC 7296 §1.4, §3.11): liveness checks and DELETE.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::sa::{IkeSa, RequestKind};
use super::super::wire::{exchange, protocol, Delete, Header, Payload};
use super::{ChildState, Engine, Event};

impl Engine {
    /// Deletes the CHILD SA whose inbound SPI is `inbound` (after a rekey replaced it).
    pub(super) fn start_delete_child(&mut self, now: Instant, sa: &mut IkeSa, inbound: u32) {
        if !self.children.iter().any(|c| c.inbound_spi == inbound) {
            return;
        }
        let payloads = [Payload::Delete(Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: vec![inbound.to_be_bytes().to_vec()],
        })];
        let message = sa.request(
            now,
            exchange::INFORMATIONAL,
            &payloads,
            RequestKind::DeleteChild { inbound },
        );
        self.send(sa.peer, message);
    }

    /// Deletes the IKE SA `sa` (after a rekey or a replacement).
    pub(super) fn start_delete_ike(&mut self, now: Instant, sa: &mut IkeSa) {
        let payloads = [Payload::Delete(Delete {
            protocol: protocol::IKE,
            spi_size: 0,
            spis: Vec::new(),
        })];
        let message = sa.request(now, exchange::INFORMATIONAL, &payloads, RequestKind::DeleteIke);
        self.send(sa.peer, message);
    }

    /// An empty INFORMATIONAL request: the peer must answer if it is alive.
    pub(super) fn start_liveness(&mut self, now: Instant, sa: &mut IkeSa) {
        let message = sa.request(now, exchange::INFORMATIONAL, &[], RequestKind::Liveness);
        self.send(sa.peer, message);
    }

    /// An INFORMATIONAL request from the peer. Returns whether the SA lives on.
    pub(super) fn on_informational_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sa: &mut IkeSa,
        header: &Header,
        payloads: Vec<Payload>,
    ) -> bool {
        let mut answer = Vec::new();
        let mut delete_ike = false;
        for payload in &payloads {
            let Payload::Delete(d) = payload else { continue };
            match d.protocol {
                protocol::IKE => delete_ike = true,
                protocol::ESP => {
                    let ours: Vec<Vec<u8>> = d
                        .spis
                        .iter()
                        .filter_map(|spi| <[u8; 4]>::try_from(spi.as_slice()).ok().map(u32::from_be_bytes))
                        .filter_map(|outbound| self.peer_deleted_child(outbound, now))
                        .map(|inbound| inbound.to_be_bytes().to_vec())
                        .collect();
                    if !ours.is_empty() {
                        answer.push(Payload::Delete(Delete {
                            protocol: protocol::ESP,
                            spi_size: 4,
                            spis: ours,
                        }));
                    }
                }
                _ => {}
            }
        }
        let message = sa.respond(exchange::INFORMATIONAL, header.message_id, &answer);
        self.send(from, message);
        if delete_ike {
            tracing::info!(
                peer = %from,
                spi_i = format_args!("{:016x}", sa.spi_i),
                retiring = sa.state == super::SaState::Retiring,
                "the peer deleted the IKE SA"
            );
        }
        !delete_ike
    }

    /// The peer deleted the CHILD SA it received on `outbound` (our outbound SPI). If a rekey
    /// made its replacement, we send on the replacement from now on. Returns our inbound SPI
    /// of the deleted SA.
    fn peer_deleted_child(&mut self, outbound: u32, now: Instant) -> Option<u32> {
        let old = *self.children.iter().find(|c| c.outbound_spi == outbound)?;
        if old.state != ChildState::Superseded {
            tracing::info!(
                outbound_spi = format_args!("{outbound:08x}"),
                "the peer deleted a CHILD SA it had not replaced"
            );
        }
        if let Some(next) = self.children.iter_mut().find(|c| c.state == ChildState::Standby) {
            next.state = ChildState::Active;
            let outbound_spi = next.outbound_spi;
            self.events.push_back(Event::ActivateOutbound { outbound_spi });
            self.stats.child_established = Some(now);
        }
        self.child_deleted(old.inbound_spi, now);
        Some(old.inbound_spi)
    }
}
