//! CREATE_CHILD_SA (RFC 7296 §1.3, §2.8, §2.17, §2.18): rekeying CHILD SAs and the IKE SA,
//! both roles, make-before-break.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::crypto::{
    dh_group_from_number, dh_group_number, random_bytes, random_esp_spi, random_ike_spi, DhExchange,
};
use super::super::negotiate::{
    accept_esp_answer, accept_ike_answer, esp_offer, ike_offer, ike_spi, select_ike, within, ChildExchange,
};
use super::super::sa::{IkeSa, Planned, RequestKind, SaState};
use super::super::wire::{exchange, notify_type, protocol, Header, Notify, Payload};
use super::init::NONCE_LEN;
use super::{notify_name, notify_payload, ChildState, Engine, Payloads, RETIRE_TIMEOUT};

impl Engine {
    /// Starts a CREATE_CHILD_SA exchange: rekeying the CHILD SA whose inbound SPI is
    /// `replaces`, or with none, making a CHILD SA for an IKE SA that has none left.
    pub(super) fn start_child_request(&mut self, now: Instant, sa: &mut IkeSa, replaces: Option<u32>) {
        if let Some(inbound) = replaces {
            if !self
                .children
                .iter()
                .any(|c| c.inbound_spi == inbound && c.state == ChildState::Active)
            {
                return;
            }
        }
        let dh = self.child_ke_group.map(DhExchange::new).transpose();
        let (Ok(new_inbound), Ok(nonce_i), Ok(dh)) = (random_esp_spi(), random_bytes(NONCE_LEN), dh) else {
            self.retry_child_request_later(replaces, now);
            return;
        };
        let mut payloads: Vec<Payload> = replaces
            .map(|inbound| {
                Payload::Notify(Notify {
                    protocol: protocol::ESP,
                    spi: inbound.to_be_bytes().to_vec(),
                    kind: notify_type::REKEY_SA,
                    data: Vec::new(),
                })
            })
            .into_iter()
            .collect();
        payloads.extend([
            Payload::Sa(esp_offer(
                &self.config.esp_proposals,
                new_inbound,
                ChildExchange::CreateChildSa,
            )),
            Payload::Nonce(nonce_i.clone()),
        ]);
        payloads.extend(dh.as_ref().map(|dh| Payload::Ke {
            group: dh_group_number(dh.group()),
            data: dh.public_value().to_vec(),
        }));
        payloads.extend([
            Payload::TsI(self.config.local_ts.clone()),
            Payload::TsR(self.config.remote_ts.clone()),
        ]);
        let message = sa.request(
            now,
            exchange::CREATE_CHILD_SA,
            &payloads,
            RequestKind::RekeyChild {
                old_inbound: replaces,
                new_inbound,
                nonce_i,
                dh,
            },
        );
        self.send(sa.peer, message);
    }

    /// After a refused or failed CHILD SA request: a rekey is retried shortly, a missing CHILD
    /// SA is asked for again after [`super::MISSING_CHILD_RETRY`].
    fn retry_child_request_later(&mut self, replaces: Option<u32>, now: Instant) {
        let Some(inbound) = replaces else {
            self.creating_child = false;
            self.next_child_attempt = Some(now + super::MISSING_CHILD_RETRY);
            return;
        };
        let retry = now + super::REINITIATE_DELAY * 2;
        if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == inbound) {
            c.rekeying = false;
            c.rekey_at = retry;
        }
    }

    /// The answer to our CHILD SA rekey: send on the new SA now, then delete the old one.
    pub(super) fn on_rekey_child_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        (old_inbound, new_inbound): (Option<u32>, u32),
        nonce_i: &[u8],
        dh: Option<DhExchange>,
        payloads: Vec<Payload>,
    ) {
        if let Some(wanted) = payloads.notify(notify_type::INVALID_KE_PAYLOAD) {
            // The peer wants the KE of another group of ours: the next attempt sends it.
            let group = <[u8; 2]>::try_from(wanted.data.as_slice())
                .ok()
                .and_then(|g| dh_group_from_number(u16::from_be_bytes(g)))
                .filter(|g| self.config.esp_proposals.iter().any(|p| p.dh == Some(*g)));
            tracing::info!(peer = %sa.peer, wanted = ?group, "INVALID_KE_PAYLOAD: the peer wants another DH group for the CHILD SA; retrying with it");
            if group.is_some() {
                self.child_ke_group = group;
            }
            self.retry_child_request_later(old_inbound, now);
            return;
        }
        if let Some(n) = payloads.error_notify() {
            tracing::info!(peer = %sa.peer, error = %notify_name(n.kind), rekey = old_inbound.is_some(), "the peer refused our CHILD SA request; retrying later");
            self.retry_child_request_later(old_inbound, now);
            return;
        }
        let nonce_r = payloads.nonce().map(<[u8]>::to_vec);
        let choice = payloads
            .sa()
            .and_then(|a| accept_esp_answer(&self.config.esp_proposals, a, ChildExchange::CreateChildSa));
        // PFS: the answer's KE must be of the group it chose, which must be the one we sent.
        let shared = match (choice.and_then(|c| c.dh), dh, payloads.ke()) {
            (None, _, _) => Ok(None),
            (Some(group), Some(dh), Some((number, ke)))
                if dh.group() == group && dh_group_from_number(number) == Some(group) =>
            {
                dh.agree(ke).map(Some).map_err(|_| ())
            }
            _ => Err(()),
        };
        let ts_ok = payloads
            .iter()
            .any(|p| matches!(p, Payload::TsI(t) if within(t, &self.config.local_ts)))
            && payloads
                .iter()
                .any(|p| matches!(p, Payload::TsR(t) if within(t, &self.config.remote_ts)));
        let (Some(nonce_r), Some(choice), true, Ok(shared)) = (nonce_r, choice, ts_ok, shared) else {
            tracing::warn!(peer = %sa.peer, rekey = old_inbound.is_some(), "the peer's CHILD SA answer is not one we can accept; retrying later");
            self.retry_child_request_later(old_inbound, now);
            return;
        };
        self.install_child(
            now,
            sa,
            (nonce_i, &nonce_r),
            shared.as_ref(),
            true,
            choice,
            new_inbound,
            true,
        );
        let Some(old_inbound) = old_inbound else {
            self.creating_child = false;
            return;
        };
        self.stats.child_rekeys += 1;
        if let Some(old) = self.children.iter_mut().find(|c| c.inbound_spi == old_inbound) {
            old.state = ChildState::Superseded;
        }
        sa.plan(Planned::DeleteChild { inbound: old_inbound });
    }

    /// Starts rekeying the IKE SA `sa` (RFC 7296 §2.18).
    pub(super) fn start_rekey_ike(&mut self, now: Instant, sa: &mut IkeSa) {
        let attempt = (|| {
            Ok::<_, super::super::crypto::CryptoError>((
                random_ike_spi()?,
                random_bytes(NONCE_LEN)?,
                DhExchange::new(sa.proposal.dh)?,
            ))
        })();
        let Ok((new_spi, nonce_i, dh)) = attempt else {
            sa.rekey_at = now + super::REINITIATE_DELAY * 5;
            return;
        };
        let payloads = vec![
            Payload::Sa(ike_offer(&[sa.proposal], &new_spi.to_be_bytes())),
            Payload::Nonce(nonce_i.clone()),
            Payload::Ke {
                group: dh_group_number(dh.group()),
                data: dh.public_value().to_vec(),
            },
        ];
        let message = sa.request(
            now,
            exchange::CREATE_CHILD_SA,
            &payloads,
            RequestKind::RekeyIke { new_spi, nonce_i, dh },
        );
        self.send(sa.peer, message);
    }

    /// The answer to our IKE SA rekey: the new SA takes over, the old one is deleted.
    pub(super) fn on_rekey_ike_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        new_spi: u64,
        nonce_i: &[u8],
        dh: DhExchange,
        payloads: Vec<Payload>,
    ) {
        let retry_at = now + super::REINITIATE_DELAY * 2;
        if let Some(n) = payloads.error_notify() {
            tracing::info!(peer = %sa.peer, error = %notify_name(n.kind), "the peer refused our IKE SA rekey; retrying later");
            sa.rekey_at = retry_at;
            return;
        }
        let answer = payloads.sa();
        let nonce_r = payloads.nonce();
        let ke = payloads.ke();
        let chosen = answer.and_then(|a| accept_ike_answer(&[sa.proposal], a));
        let peer_spi = answer.and_then(|a| a.first()).and_then(ike_spi);
        let (Some(_), Some(nonce_r), Some((group, ke)), Some(peer_spi)) = (chosen, nonce_r, ke, peer_spi) else {
            tracing::warn!(peer = %sa.peer, "the peer's IKE SA rekey answer is not one we can accept; retrying later");
            sa.rekey_at = retry_at;
            return;
        };
        if dh_group_from_number(group) != Some(dh.group()) {
            sa.rekey_at = retry_at;
            return;
        }
        let Ok(shared) = dh.agree(ke) else {
            sa.rekey_at = retry_at;
            return;
        };
        let keys = sa.keys.rekeyed(&shared, nonce_i, nonce_r, new_spi, peer_spi);
        self.replace_ike_sa(now, sa, new_spi, peer_spi, true, keys);
        sa.plan(Planned::DeleteIke);
    }

    /// `sa` is rekeyed: a new SA with `keys` becomes current; `sa` retires.
    fn replace_ike_sa(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        spi_i: u64,
        spi_r: u64,
        we_initiated: bool,
        keys: super::super::crypto::IkeKeys,
    ) {
        let rekey_at = self.rekey_time(now, self.config.ike_lifetime);
        let mut new = IkeSa::new(
            spi_i,
            spi_r,
            we_initiated,
            SaState::Established,
            sa.proposal,
            keys,
            sa.peer,
            now,
            rekey_at,
        );
        // Work queued on the old SA (CHILD rekeys, liveness) moves to the new one.
        new.planned = std::mem::take(&mut sa.planned)
            .into_iter()
            .filter(|p| *p != Planned::DeleteIke)
            .collect();
        sa.state = SaState::Retiring;
        sa.deadline = Some(now + RETIRE_TIMEOUT);
        self.stats.ike_rekeys += 1;
        self.stats.ike_established = Some(now);
        tracing::info!(
            peer = %sa.peer,
            old_spi_i = format_args!("{:016x}", sa.spi_i),
            spi_i = format_args!("{spi_i:016x}"),
            spi_r = format_args!("{spi_r:016x}"),
            "IKE SA rekeyed"
        );
        self.sas.push(new);
    }

    /// A CREATE_CHILD_SA request from the peer: a CHILD SA rekey, a new CHILD SA, or an IKE SA
    /// rekey.
    pub(super) fn on_create_child_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sa: &mut IkeSa,
        header: &Header,
        payloads: Vec<Payload>,
    ) {
        let ike_rekey = payloads
            .iter()
            .any(|p| matches!(p, Payload::Sa(props) if props.iter().any(|x| x.protocol == protocol::IKE)));
        let answer = if ike_rekey {
            self.answer_ike_rekey(now, sa, &payloads)
        } else {
            self.answer_child_rekey(now, from, sa, &payloads)
        };
        let message = sa.respond(exchange::CREATE_CHILD_SA, header.message_id, &answer);
        self.send(from, message);
    }

    fn answer_child_rekey(&mut self, now: Instant, from: SocketAddr, sa: &IkeSa, payloads: &[Payload]) -> Vec<Payload> {
        let Some(nonce_i) = payloads.nonce().map(<[u8]>::to_vec) else {
            return vec![notify_payload(notify_type::INVALID_SYNTAX, Vec::new())];
        };
        let replaces = match payloads.notify(notify_type::REKEY_SA) {
            Some(n) => {
                // The notify names the peer's inbound SPI: our outbound one.
                let spi = <[u8; 4]>::try_from(n.spi.as_slice()).ok().map(u32::from_be_bytes);
                let Some(old) = spi.and_then(|s| self.children.iter().find(|c| c.outbound_spi == s)) else {
                    return vec![Payload::Notify(Notify {
                        protocol: protocol::ESP,
                        spi: n.spi.clone(),
                        kind: notify_type::CHILD_SA_NOT_FOUND,
                        data: Vec::new(),
                    })];
                };
                if old.rekeying {
                    return vec![notify_payload(notify_type::TEMPORARY_FAILURE, Vec::new())];
                }
                Some(old.inbound_spi)
            }
            None => None,
        };
        let Ok(nonce_r) = random_bytes(NONCE_LEN) else {
            return vec![notify_payload(notify_type::TEMPORARY_FAILURE, Vec::new())];
        };
        let mut answer = self.answer_child(
            now,
            from,
            sa,
            payloads,
            (&nonce_i, &nonce_r),
            replaces,
            ChildExchange::CreateChildSa,
        );
        if matches!(answer.first(), Some(Payload::Sa(_))) {
            answer.insert(1, Payload::Nonce(nonce_r));
            if let Some(old_inbound) = replaces {
                self.stats.child_rekeys += 1;
                if let Some(old) = self.children.iter_mut().find(|c| c.inbound_spi == old_inbound) {
                    old.state = ChildState::Superseded;
                }
            }
        }
        answer
    }

    fn answer_ike_rekey(&mut self, now: Instant, sa: &mut IkeSa, payloads: &[Payload]) -> Vec<Payload> {
        if sa.state != SaState::Established {
            return vec![notify_payload(notify_type::TEMPORARY_FAILURE, Vec::new())];
        }
        if matches!(
            sa.outstanding.as_ref().map(|r| &r.kind),
            Some(RequestKind::RekeyIke { .. })
        ) {
            return vec![notify_payload(notify_type::TEMPORARY_FAILURE, Vec::new())];
        }
        let offer = payloads.sa();
        let nonce_i = payloads.nonce();
        let ke = payloads.ke();
        let (Some(offer), Some(nonce_i), Some((group, ke))) = (offer, nonce_i, ke) else {
            return vec![notify_payload(notify_type::INVALID_SYNTAX, Vec::new())];
        };
        let attempt = (|| Ok::<_, super::super::crypto::CryptoError>((random_ike_spi()?, random_bytes(NONCE_LEN)?)))();
        let Ok((new_spi, nonce_r)) = attempt else {
            return vec![notify_payload(notify_type::TEMPORARY_FAILURE, Vec::new())];
        };
        // The rekeyed SA keeps the negotiated suite (strongSwan keeps the PRF fixed too).
        let Some((chosen, answer)) = select_ike(&[sa.proposal], offer, &new_spi.to_be_bytes()) else {
            return vec![notify_payload(notify_type::NO_PROPOSAL_CHOSEN, Vec::new())];
        };
        let Some(peer_spi) = offer.iter().find(|p| p.number == answer.number).and_then(ike_spi) else {
            return vec![notify_payload(notify_type::INVALID_SYNTAX, Vec::new())];
        };
        if dh_group_from_number(group) != Some(chosen.dh) {
            return vec![notify_payload(
                notify_type::INVALID_KE_PAYLOAD,
                dh_group_number(chosen.dh).to_be_bytes().to_vec(),
            )];
        }
        let Ok(dh) = DhExchange::new(chosen.dh) else {
            return vec![notify_payload(notify_type::TEMPORARY_FAILURE, Vec::new())];
        };
        let public = dh.public_value().to_vec();
        let Ok(shared) = dh.agree(ke) else {
            return vec![notify_payload(notify_type::INVALID_SYNTAX, Vec::new())];
        };
        let keys = sa.keys.rekeyed(&shared, nonce_i, &nonce_r, peer_spi, new_spi);
        self.replace_ike_sa(now, sa, peer_spi, new_spi, false, keys);
        vec![
            Payload::Sa(vec![answer]),
            Payload::Nonce(nonce_r),
            Payload::Ke {
                group: dh_group_number(chosen.dh),
                data: public,
            },
        ]
    }
}
