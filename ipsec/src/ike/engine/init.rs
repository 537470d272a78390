//! IKE_SA_INIT and IKE_AUTH (RFC 7296 §1.2, §2.6, §2.15, §2.23), both roles.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::crypto::{
    dh_group_from_number, dh_group_number, nat_detection_hash, prf, psk_auth, psk_auth_verify, random_bytes,
    random_esp_spi, random_ike_spi, DhExchange, IkeKeys, Secret,
};
use super::super::negotiate::{
    accept_esp_answer, accept_ike_answer, describe, esp_offer, ike_offer, narrow, select_esp, select_ike, within,
    ChildExchange,
};
use super::super::sa::{AuthContext, IkeSa, RequestKind, Retransmit, SaState};
use super::super::wire::{encode_message, exchange, notify_type, Header, Identification, Payload};
use super::super::IkeDrop;
use super::{
    notify_name, notify_payload, ChildState, Engine, Payloads, COOKIE_THRESHOLD, HALF_OPEN_TIMEOUT, MAX_HALF_OPEN,
    REINITIATE_DELAY,
};
use crate::proposal::DhGroup;

/// Our nonces' length (RFC 7296 §2.10: at least half the PRF's key size, at least 16 bytes).
pub(super) const NONCE_LEN: usize = 32;
/// IKE_SA_INIT retries after INVALID_KE_PAYLOAD before giving up on this attempt.
const MAX_KE_RETRIES: u8 = 3;
/// The address our NAT_DETECTION_SOURCE_IP hashes: no packet comes from it, so the peer
/// always detects a NAT (see `nat_detection`).
const UNMATCHABLE_SOURCE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The responder's half of a CHILD SA's KE exchange in `group`, given the peer's KE: our KE
/// payload and the shared secret, or the one error notify to answer with.
fn child_ke(group: DhGroup, theirs: Option<(u16, &[u8])>) -> Result<(Payload, Secret), Vec<Payload>> {
    let error = |kind, data| vec![notify_payload(kind, data)];
    let Some((number, ke)) = theirs else {
        return Err(error(notify_type::INVALID_SYNTAX, Vec::new()));
    };
    if dh_group_from_number(number) != Some(group) {
        let wanted = dh_group_number(group).to_be_bytes().to_vec();
        return Err(error(notify_type::INVALID_KE_PAYLOAD, wanted));
    }
    let dh = DhExchange::new(group).map_err(|_| error(notify_type::TEMPORARY_FAILURE, Vec::new()))?;
    let ours = Payload::Ke {
        group: number,
        data: dh.public_value().to_vec(),
    };
    let shared = dh
        .agree(ke)
        .map_err(|_| error(notify_type::INVALID_SYNTAX, Vec::new()))?;
    Ok((ours, shared))
}

/// Length of the cookies we hand out.
const COOKIE_LEN: usize = 16;
/// AUTH method: shared key message integrity code (RFC 7296 §3.8).
const AUTH_PSK: u8 = 2;

/// Our IKE_SA_INIT request while it is unanswered.
#[derive(Debug)]
pub(super) struct InitRequest {
    spi_i: u64,
    nonce_i: Vec<u8>,
    dh: DhExchange,
    cookie: Option<Vec<u8>>,
    bytes: Vec<u8>,
    pub(super) retx: Retransmit,
    ke_retries: u8,
}

impl Engine {
    /// Starts setting up an IKE SA with the configured peer.
    pub(super) fn initiate(&mut self, now: Instant) {
        self.next_initiate = None;
        let group = self.config.ike_proposals.first().map_or(DhGroup::Curve25519, |p| p.dh);
        let attempt = (|| {
            Ok::<_, super::super::crypto::CryptoError>(InitRequest {
                spi_i: random_ike_spi()?,
                nonce_i: random_bytes(NONCE_LEN)?,
                dh: DhExchange::new(group)?,
                cookie: None,
                bytes: Vec::new(),
                retx: Retransmit::new(now),
                ke_retries: 0,
            })
        })();
        match attempt {
            Ok(mut request) => {
                request.bytes = self.init_request_bytes(&request);
                tracing::info!(peer = %self.config.remote_addr, "initiating IKE SA");
                self.send(self.config.remote_addr, request.bytes.clone());
                self.init = Some(request);
            }
            Err(e) => {
                tracing::error!("cannot initiate: {e}");
                self.next_initiate = Some(now + REINITIATE_DELAY);
            }
        }
    }

    fn init_request_bytes(&self, request: &InitRequest) -> Vec<u8> {
        let mut payloads = Vec::new();
        if let Some(cookie) = &request.cookie {
            payloads.push(notify_payload(notify_type::COOKIE, cookie.clone()));
        }
        payloads.push(Payload::Sa(ike_offer(&self.config.ike_proposals, &[])));
        payloads.push(Payload::Ke {
            group: dh_group_number(request.dh.group()),
            data: request.dh.public_value().to_vec(),
        });
        payloads.push(Payload::Nonce(request.nonce_i.clone()));
        payloads.extend(self.nat_detection(request.spi_i, 0, self.config.remote_addr));
        encode_message(init_header(request.spi_i, 0, true, false), &payloads)
    }

    /// NAT_DETECTION_SOURCE_IP and _DESTINATION_IP for a message to `to`. Always sent, and
    /// the source one never matches: it hashes [`UNMATCHABLE_SOURCE`], so the peer always
    /// sees us behind a NAT and encapsulates ESP in UDP (RFC 7296 §2.23, RFC 3948), which is
    /// all braid receives. A peer with no NAT on the path would otherwise send bare ESP (IP
    /// protocol 50). strongSwan's `encap = yes` does the same.
    fn nat_detection(&self, spi_i: u64, spi_r: u64, to: SocketAddr) -> [Payload; 2] {
        [
            notify_payload(
                notify_type::NAT_DETECTION_SOURCE_IP,
                nat_detection_hash(spi_i, spi_r, UNMATCHABLE_SOURCE),
            ),
            notify_payload(
                notify_type::NAT_DETECTION_DESTINATION_IP,
                nat_detection_hash(spi_i, spi_r, to),
            ),
        ]
    }

    /// Resends or gives up on our unanswered IKE_SA_INIT.
    pub(super) fn retransmit_init(&mut self, now: Instant) {
        let Some(request) = self.init.as_mut() else { return };
        if request.retx.next > now {
            return;
        }
        if request.retx.bump(now) {
            let bytes = request.bytes.clone();
            self.send(self.config.remote_addr, bytes);
        } else {
            tracing::warn!(peer = %self.config.remote_addr, "no answer to IKE_SA_INIT; starting over");
            self.stats.peer_timeouts += 1;
            self.init = None;
            self.next_initiate = Some(now);
        }
    }

    /// The peer starts an IKE SA.
    pub(super) fn on_init_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        header: &Header,
        payloads: Vec<Payload>,
    ) -> Result<(), IkeDrop> {
        if header.spi_r != 0 || header.message_id != 0 || !header.initiator {
            return Err(IkeDrop::Malformed);
        }
        // A retransmission of a request we answered: the same answer.
        if let Some(sa) = self
            .sas
            .iter()
            .find(|sa| sa.spi_i == header.spi_i && sa.state == SaState::AwaitingAuth)
        {
            if sa.auth.as_ref().is_some_and(|a| a.peer_init == bytes) {
                let answer = sa.auth.as_ref().map(|a| a.our_init.clone()).unwrap_or_default();
                self.send(from, answer);
            }
            return Ok(());
        }
        if self.init.is_some() && self.config.preferred {
            tracing::debug!("both sides initiated; ours wins, theirs is ignored");
            return Ok(());
        }
        let (Some(sa_payload), Some((group, ke)), Some(nonce_i)) = (payloads.sa(), payloads.ke(), payloads.nonce())
        else {
            return Err(IkeDrop::Malformed);
        };
        // Answering abandons our own attempt (below), which a forged request must not be able
        // to do: while we initiate, the peer proves it receives at its address with a COOKIE.
        let must_prove = self.init.is_some();
        if !self.cookie_ok(now, from, header.spi_i, nonce_i, &payloads, must_prove) {
            return Ok(());
        }
        let Some((chosen, answer)) = select_ike(&self.config.ike_proposals, sa_payload, &[]) else {
            self.stats.negotiation_failures += 1;
            tracing::warn!(
                peer = %from,
                offered = %describe(sa_payload),
                configured = %self.config.ike_proposals.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                "NO_PROPOSAL_CHOSEN: no IKE proposal of the peer matches ours"
            );
            self.answer_init_error(from, header.spi_i, notify_type::NO_PROPOSAL_CHOSEN, Vec::new());
            return Ok(());
        };
        if dh_group_from_number(group) != Some(chosen.dh) {
            tracing::info!(peer = %from, offered = group, wanted = dh_group_number(chosen.dh), "INVALID_KE_PAYLOAD: asking the peer for another DH group");
            let wanted = dh_group_number(chosen.dh).to_be_bytes().to_vec();
            self.answer_init_error(from, header.spi_i, notify_type::INVALID_KE_PAYLOAD, wanted);
            return Ok(());
        }
        let setup = (|| {
            let spi_r = random_ike_spi().map_err(|_| IkeDrop::Unexpected)?;
            let nonce_r = random_bytes(NONCE_LEN).map_err(|_| IkeDrop::Unexpected)?;
            let dh = DhExchange::new(chosen.dh).map_err(|_| IkeDrop::Unexpected)?;
            Ok::<_, IkeDrop>((spi_r, nonce_r, dh))
        })();
        let (spi_r, nonce_r, dh) = setup?;
        let public = dh.public_value().to_vec();
        let shared = dh.agree(ke).map_err(|_| IkeDrop::Malformed)?;
        let keys = IkeKeys::initial(&shared, nonce_i, &nonce_r, header.spi_i, spi_r);
        let mut response = vec![
            Payload::Sa(vec![answer]),
            Payload::Ke {
                group: dh_group_number(chosen.dh),
                data: public,
            },
            Payload::Nonce(nonce_r.clone()),
        ];
        response.extend(self.nat_detection(header.spi_i, spi_r, from));
        let bytes_out = encode_message(init_header(header.spi_i, spi_r, false, true), &response);
        let rekey_at = self.rekey_time(now, self.config.ike_lifetime);
        let mut sa = IkeSa::new(
            header.spi_i,
            spi_r,
            false,
            SaState::AwaitingAuth,
            chosen,
            keys,
            from,
            now,
            rekey_at,
        );
        sa.peer_mid = 1;
        sa.deadline = Some(now + HALF_OPEN_TIMEOUT);
        sa.auth = Some(AuthContext {
            our_init: bytes_out.clone(),
            peer_init: bytes.to_vec(),
            nonce_i: nonce_i.to_vec(),
            nonce_r,
            child_spi: 0,
        });
        let half_open: Vec<usize> = (0..self.sas.len())
            .filter(|&i| self.sas[i].state == SaState::AwaitingAuth)
            .collect();
        if half_open.len() >= MAX_HALF_OPEN {
            self.sas.remove(half_open[0]);
        }
        // Answering the peer's attempt abandons ours (we are not the preferred side).
        self.init = None;
        self.sas.push(sa);
        self.send(from, bytes_out);
        Ok(())
    }

    /// Whether an IKE_SA_INIT may be answered: under load, or always when `must_prove`, it must
    /// carry a valid cookie; when it does not, a COOKIE is sent back statelessly (RFC 7296
    /// §2.6).
    fn cookie_ok(
        &mut self,
        now: Instant,
        from: SocketAddr,
        spi_i: u64,
        nonce_i: &[u8],
        payloads: &[Payload],
        must_prove: bool,
    ) -> bool {
        if now.duration_since(self.init_window.0).as_secs() >= 1 {
            self.init_window = (now, 0);
        }
        self.init_window.1 += 1;
        if self.init_window.1 <= COOKIE_THRESHOLD && !must_prove {
            return true;
        }
        let ip = match from.ip() {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let expected = prf(&self.cookie_secret, &[nonce_i, &ip, &spi_i.to_be_bytes()])[..COOKIE_LEN].to_vec();
        if payloads.notify(notify_type::COOKIE).is_some_and(|n| n.data == expected) {
            return true;
        }
        self.stats.cookies_sent += 1;
        self.answer_init_error(from, spi_i, notify_type::COOKIE, expected);
        false
    }

    /// An IKE_SA_INIT response carrying only a notify, with no state kept.
    fn answer_init_error(&mut self, to: SocketAddr, spi_i: u64, kind: u16, data: Vec<u8>) {
        let bytes = encode_message(init_header(spi_i, 0, false, true), &[notify_payload(kind, data)]);
        self.send(to, bytes);
    }

    /// The answer to our IKE_SA_INIT.
    pub(super) fn on_init_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        header: &Header,
        payloads: Vec<Payload>,
    ) -> Result<(), IkeDrop> {
        let Some(request) = self.init.as_mut() else {
            return Err(IkeDrop::Unexpected);
        };
        if header.spi_i != request.spi_i || header.message_id != 0 || header.initiator {
            return Err(IkeDrop::UnknownSpi);
        }
        if let Some(cookie) = payloads.notify(notify_type::COOKIE) {
            request.cookie = Some(cookie.data.clone());
            return self.resend_init(now);
        }
        if let Some(n) = payloads.notify(notify_type::INVALID_KE_PAYLOAD) {
            let wanted = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(u16::from_be_bytes)
                .and_then(dh_group_from_number)
                .filter(|g| self.config.ike_proposals.iter().any(|p| p.dh == *g));
            let Some(group) = wanted else {
                tracing::warn!(peer = %from, data = ?n.data, "INVALID_KE_PAYLOAD asks for a DH group we do not offer");
                return self.give_up_init(now);
            };
            if request.ke_retries >= MAX_KE_RETRIES {
                return self.give_up_init(now);
            }
            request.ke_retries += 1;
            request.dh = DhExchange::new(group).map_err(|_| IkeDrop::Unexpected)?;
            tracing::info!(peer = %from, group = %group, "peer asked for another DH group; retrying IKE_SA_INIT");
            return self.resend_init(now);
        }
        if let Some(n) = payloads.error_notify() {
            self.stats.negotiation_failures += 1;
            tracing::warn!(
                peer = %from,
                error = %notify_name(n.kind),
                offered = %describe(&ike_offer(&self.config.ike_proposals, &[])),
                "the peer refused our IKE_SA_INIT"
            );
            return self.give_up_init(now);
        }
        let sa_answer = payloads.sa();
        let ke = payloads.ke();
        let nonce_r = payloads.nonce();
        let (Some(sa_answer), Some((group, ke)), Some(nonce_r)) = (sa_answer, ke, nonce_r) else {
            return Err(IkeDrop::Malformed);
        };
        let Some(chosen) = accept_ike_answer(&self.config.ike_proposals, sa_answer) else {
            tracing::warn!(peer = %from, answer = %describe(sa_answer), "the peer chose an IKE proposal we did not offer");
            return self.give_up_init(now);
        };
        if dh_group_from_number(group) != Some(chosen.dh) || request.dh.group() != chosen.dh {
            return Err(IkeDrop::Malformed);
        }
        let request = self.init.take().expect("checked above");
        let shared = match request.dh.agree(ke) {
            Ok(s) => s,
            Err(_) => {
                self.init = None;
                self.next_initiate = Some(now + REINITIATE_DELAY);
                return Err(IkeDrop::Malformed);
            }
        };
        let keys = IkeKeys::initial(&shared, &request.nonce_i, nonce_r, request.spi_i, header.spi_r);
        let rekey_at = self.rekey_time(now, self.config.ike_lifetime);
        let mut sa = IkeSa::new(
            request.spi_i,
            header.spi_r,
            true,
            SaState::AuthSent,
            chosen,
            keys,
            from,
            now,
            rekey_at,
        );
        sa.next_mid = 1;
        sa.deadline = Some(now + HALF_OPEN_TIMEOUT);
        let child_spi = random_esp_spi().map_err(|_| IkeDrop::Unexpected)?;
        sa.auth = Some(AuthContext {
            our_init: request.bytes.clone(),
            peer_init: bytes.to_vec(),
            nonce_i: request.nonce_i.clone(),
            nonce_r: nonce_r.to_vec(),
            child_spi,
        });
        let id_i = self.config.local_id.clone();
        let auth_data = psk_auth(
            self.config.psk.as_bytes(),
            &request.bytes,
            nonce_r,
            sa.keys.sk_pi.as_bytes(),
            &id_i.body(),
        );
        let mut auth_payloads = vec![Payload::IdI(id_i)];
        if self.cold {
            auth_payloads.push(notify_payload(notify_type::INITIAL_CONTACT, Vec::new()));
        }
        auth_payloads.push(Payload::IdR(self.config.remote_id.clone()));
        auth_payloads.push(Payload::Auth {
            method: AUTH_PSK,
            data: auth_data.to_vec(),
        });
        auth_payloads.push(Payload::Sa(esp_offer(
            &self.config.esp_proposals,
            child_spi,
            ChildExchange::IkeAuth,
        )));
        auth_payloads.push(Payload::TsI(self.config.local_ts.clone()));
        auth_payloads.push(Payload::TsR(self.config.remote_ts.clone()));
        sa.next_mid = 1;
        let message = sa.request(now, exchange::IKE_AUTH, &auth_payloads, RequestKind::Auth);
        self.send(from, message);
        self.sas.push(sa);
        Ok(())
    }

    fn resend_init(&mut self, now: Instant) -> Result<(), IkeDrop> {
        let Some(request) = self.init.as_ref() else {
            return Err(IkeDrop::Unexpected);
        };
        let bytes = self.init_request_bytes(request);
        let request = self.init.as_mut().expect("checked above");
        request.bytes = bytes.clone();
        request.retx = Retransmit::new(now);
        self.send(self.config.remote_addr, bytes);
        Ok(())
    }

    fn give_up_init(&mut self, now: Instant) -> Result<(), IkeDrop> {
        self.init = None;
        self.next_initiate = Some(now + REINITIATE_DELAY * 5);
        Ok(())
    }

    /// The peer's IKE_AUTH on a half-open SA we answered. Returns whether the SA lives on.
    pub(super) fn on_auth_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sa: &mut IkeSa,
        header: &Header,
        payloads: Vec<Payload>,
    ) -> bool {
        let Some(ctx) = sa.auth.take() else { return false };
        let id_i = payloads.id_i();
        let auth = payloads.auth();
        let (Some(id_i), Some((method, auth_data))) = (id_i, auth) else {
            tracing::warn!(peer = %from, "IKE_AUTH without IDi or AUTH");
            return false;
        };
        if !self.peer_authenticates(sa, &ctx, id_i, method, auth_data) {
            let answer = sa.respond(
                exchange::IKE_AUTH,
                header.message_id,
                &[notify_payload(notify_type::AUTHENTICATION_FAILED, Vec::new())],
            );
            self.send(from, answer);
            return false;
        }
        let id_r = self.config.local_id.clone();
        let our_auth = psk_auth(
            self.config.psk.as_bytes(),
            &ctx.our_init,
            &ctx.nonce_i,
            sa.keys.sk_pr.as_bytes(),
            &id_r.body(),
        );
        let mut answer = vec![
            Payload::IdR(id_r),
            Payload::Auth {
                method: AUTH_PSK,
                data: our_auth.to_vec(),
            },
        ];
        let initial_contact = payloads.notify(notify_type::INITIAL_CONTACT).is_some();
        sa.state = SaState::Established;
        sa.deadline = None;
        let child = self.answer_child(
            now,
            from,
            sa,
            &payloads,
            (&ctx.nonce_i, &ctx.nonce_r),
            None,
            ChildExchange::IkeAuth,
        );
        answer.extend(child);
        let message = sa.respond(exchange::IKE_AUTH, header.message_id, &answer);
        self.send(from, message);
        self.established(now, sa, initial_contact);
        true
    }

    /// The answer to our IKE_AUTH. Returns whether the SA lives on.
    pub(super) fn on_auth_response(&mut self, now: Instant, sa: &mut IkeSa, payloads: Vec<Payload>) -> bool {
        let Some(ctx) = sa.auth.take() else { return false };
        if payloads.notify(notify_type::AUTHENTICATION_FAILED).is_some() {
            self.stats.auth_failures += 1;
            tracing::warn!(
                peer = %sa.peer,
                our_id = %self.config.local_id,
                "AUTHENTICATION_FAILED: the peer refused our identity or pre-shared key"
            );
            self.next_initiate = Some(now + REINITIATE_DELAY * 5);
            return false;
        }
        let id_r = payloads.id_r();
        let auth = payloads.auth();
        let (Some(id_r), Some((method, auth_data))) = (id_r, auth) else {
            tracing::warn!(peer = %sa.peer, "IKE_AUTH response without IDr or AUTH");
            self.next_initiate = Some(now + REINITIATE_DELAY);
            return false;
        };
        if !self.peer_authenticates(sa, &ctx, id_r, method, auth_data) {
            self.next_initiate = Some(now + REINITIATE_DELAY * 5);
            return false;
        }
        sa.state = SaState::Established;
        sa.deadline = None;
        if let Some(n) = payloads.error_notify() {
            self.stats.negotiation_failures += 1;
            tracing::warn!(
                peer = %sa.peer,
                error = %notify_name(n.kind),
                offered_esp = %describe(&esp_offer(&self.config.esp_proposals, ctx.child_spi, ChildExchange::IkeAuth)),
                local_ts = ?self.config.local_ts,
                remote_ts = ?self.config.remote_ts,
                "the peer refused our CHILD SA; the IKE SA is up without one and is deleted"
            );
            sa.plan(super::super::sa::Planned::DeleteIke);
            sa.state = SaState::Retiring;
            sa.deadline = Some(now + super::RETIRE_TIMEOUT);
            self.next_initiate = Some(now + REINITIATE_DELAY * 5);
            return true;
        }
        let answer = payloads.sa();
        let ts_i = payloads.ts_i();
        let ts_r = payloads.ts_r();
        let choice = answer.and_then(|a| accept_esp_answer(&self.config.esp_proposals, a, ChildExchange::IkeAuth));
        let ts_ok = ts_i.is_some_and(|t| within(t, &self.config.local_ts))
            && ts_r.is_some_and(|t| within(t, &self.config.remote_ts));
        let Some(choice) = choice.filter(|_| ts_ok) else {
            tracing::warn!(peer = %sa.peer, "the peer answered our CHILD SA with a proposal or traffic selectors we did not offer");
            sa.plan(super::super::sa::Planned::DeleteIke);
            sa.state = SaState::Retiring;
            sa.deadline = Some(now + super::RETIRE_TIMEOUT);
            self.next_initiate = Some(now + REINITIATE_DELAY * 5);
            return true;
        };
        self.install_child(
            now,
            sa,
            (&ctx.nonce_i, &ctx.nonce_r),
            None,
            true,
            choice,
            ctx.child_spi,
            true,
        );
        self.established(now, sa, false);
        true
    }

    /// Answers the CHILD SA part of a request (IKE_AUTH, or CREATE_CHILD_SA for a new or
    /// rekeyed CHILD SA) and installs it. Returns the payloads to put in the answer: SA, KEr
    /// when the chosen proposal has a DH group, TSi, TSr; or one error notify, with nothing
    /// installed (INVALID_KE_PAYLOAD naming our group when the peer's KE is of another).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_child(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sa: &IkeSa,
        payloads: &[Payload],
        nonces: (&[u8], &[u8]),
        replaces: Option<u32>,
        exchange: ChildExchange,
    ) -> Vec<Payload> {
        let offer = payloads.sa();
        let ts_i = payloads.ts_i();
        let ts_r = payloads.ts_r();
        let (Some(offer), Some(ts_i), Some(ts_r)) = (offer, ts_i, ts_r) else {
            return vec![notify_payload(notify_type::INVALID_SYNTAX, Vec::new())];
        };
        let Ok(spi) = random_esp_spi() else {
            return vec![notify_payload(notify_type::TEMPORARY_FAILURE, Vec::new())];
        };
        let Some((choice, answer)) = select_esp(&self.config.esp_proposals, offer, spi, exchange) else {
            self.stats.negotiation_failures += 1;
            tracing::warn!(
                peer = %from,
                offered = %describe(offer),
                configured = %self.config.esp_proposals.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                "NO_PROPOSAL_CHOSEN: no ESP proposal of the peer matches ours"
            );
            return vec![notify_payload(notify_type::NO_PROPOSAL_CHOSEN, Vec::new())];
        };
        // The peer's TSi is its site (our remote), its TSr ours.
        let narrowed_i = narrow(ts_i, &self.config.remote_ts);
        let narrowed_r = narrow(ts_r, &self.config.local_ts);
        if narrowed_i.is_empty() || narrowed_r.is_empty() {
            self.stats.negotiation_failures += 1;
            tracing::warn!(
                peer = %from,
                their_ts = ?ts_i,
                our_ts = ?ts_r,
                configured_local = ?self.config.local_ts,
                configured_remote = ?self.config.remote_ts,
                "TS_UNACCEPTABLE: the peer's traffic selectors do not overlap our sites' prefixes"
            );
            return vec![notify_payload(notify_type::TS_UNACCEPTABLE, Vec::new())];
        }
        // PFS: the KE exchange of the chosen group, checked before anything is installed.
        let (ke_answer, shared) = match choice.dh {
            None => (None, None),
            Some(group) => match child_ke(group, payloads.ke()) {
                Ok((ke, shared)) => (Some(ke), Some(shared)),
                Err(error) => {
                    if error.notify(notify_type::INVALID_KE_PAYLOAD).is_some() {
                        tracing::info!(peer = %from, wanted = dh_group_number(group), "INVALID_KE_PAYLOAD: asking the peer for another DH group for the CHILD SA");
                    }
                    return error;
                }
            },
        };
        // A rekey answer waits for the peer's DELETE of the old SA before sending on the new
        // one; a new CHILD SA is used at once.
        let activate = replaces.is_none();
        self.install_child(now, sa, nonces, shared.as_ref(), false, choice, spi, activate);
        let mut out = vec![Payload::Sa(vec![answer])];
        out.extend(ke_answer);
        out.extend([Payload::TsI(narrowed_i), Payload::TsR(narrowed_r)]);
        out
    }

    /// A new IKE SA is up: it becomes the current one, replacing any other, and any attempt of
    /// ours still in flight is dropped.
    fn established(&mut self, now: Instant, sa: &mut IkeSa, initial_contact: bool) {
        self.stats.ike_setups += 1;
        self.stats.ike_established = Some(now);
        self.cold = false;
        self.init = None;
        // A CHILD SA request on an SA this one replaces is gone with it.
        self.creating_child = false;
        self.next_initiate = None;
        tracing::info!(
            peer = %sa.peer,
            spi_i = format_args!("{:016x}", sa.spi_i),
            spi_r = format_args!("{:016x}", sa.spi_r),
            proposal = %sa.proposal,
            initiator = sa.initiator,
            "IKE SA established"
        );
        // Every CHILD SA but the one just made belonged to a previous IKE SA.
        let newest = self.children.last().map(|c| c.inbound_spi);
        let old_children: Vec<u32> = self
            .children
            .iter()
            .filter(|c| Some(c.inbound_spi) != newest)
            .map(|c| c.inbound_spi)
            .collect();
        for inbound in old_children {
            self.child_deleted(inbound, now);
        }
        // Older SAs retire: an established one is deleted politely unless the peer said it
        // restarted (INITIAL_CONTACT: it no longer knows that SA); half-open ones just go.
        for old in self.sas.iter_mut().filter(|o| o.state != SaState::Retiring) {
            let delete = old.state == SaState::Established && !initial_contact;
            old.state = SaState::Retiring;
            old.planned.clear();
            old.outstanding = None;
            if delete {
                old.plan(super::super::sa::Planned::DeleteIke);
                old.deadline = Some(now + super::RETIRE_TIMEOUT);
            } else {
                old.deadline = Some(now);
            }
        }
        if let Some(c) = self.children.last_mut() {
            if c.state == ChildState::Standby {
                c.state = ChildState::Active;
            }
        }
    }
}

impl Engine {
    /// Whether the peer proved it is the configured identity holding our pre-shared key: its
    /// AUTH must be what the key gives over its IKE_SA_INIT message, our nonce and its ID
    /// under its SK_p (RFC 7296 §2.15). A failure is counted and logged.
    fn peer_authenticates(
        &mut self,
        sa: &IkeSa,
        ctx: &AuthContext,
        id: &Identification,
        method: u8,
        data: &[u8],
    ) -> bool {
        let (our_nonce, peer_sk_p) = if sa.initiator {
            (&ctx.nonce_i, &sa.keys.sk_pr)
        } else {
            (&ctx.nonce_r, &sa.keys.sk_pi)
        };
        let proven = same_identity(id, &self.config.remote_id)
            && method == AUTH_PSK
            && psk_auth_verify(
                self.config.psk.as_bytes(),
                &ctx.peer_init,
                our_nonce,
                peer_sk_p.as_bytes(),
                &id.body(),
                data,
            );
        if !proven {
            self.stats.auth_failures += 1;
            tracing::warn!(
                peer = %sa.peer,
                id = %id,
                expected_id = %self.config.remote_id,
                method,
                "AUTHENTICATION_FAILED: the peer's identity or pre-shared key does not match ours"
            );
        }
        proven
    }
}

/// Whether a received identity is the configured one (type and data; reserved bytes aside).
fn same_identity(received: &Identification, configured: &Identification) -> bool {
    received.id_type == configured.id_type && received.data == configured.data
}

/// An IKE_SA_INIT header; lengths are filled in by the encoder.
fn init_header(spi_i: u64, spi_r: u64, initiator: bool, response: bool) -> Header {
    Header {
        spi_i,
        spi_r,
        next_payload: 0,
        exchange: exchange::IKE_SA_INIT,
        initiator,
        response,
        message_id: 0,
        length: 0,
    }
}
