//! The IKE engine for one peer: every exchange, both roles.
//!
//! Design: the engine owns a list of IKE SAs (at most one established and current; half-open
//! ones being set up; retiring ones being deleted after a rekey) and the CHILD SAs, which
//! belong to the peer rather than to an IKE SA so an IKE rekey moves them by doing nothing.
//! Every input is one of: a received message ([`Engine::handle`]), the passing of time
//! ([`Engine::handle_timeout`]), or a hint from the data path ([`Engine::peer_alive`],
//! [`Engine::rekey_child`]). Outputs queue as [`Transmit`]s and [`Event`]s.
//!
//! Who initiates: the configured initiator sets up an IKE SA at start and whenever none is up;
//! if both sides start at once, the preferred side ignores the other's IKE_SA_INIT while its
//! own is outstanding, and the other side abandons its own and answers. A newly established
//! IKE SA replaces the current one (its CHILD SAs are installed first, make-before-break); a
//! peer that announces INITIAL_CONTACT after a restart makes us forget the old SA at once.
//!
//! Rekeying is make-before-break (RFC 7296 §2.8): the rekey initiator sends on the new CHILD
//! SA as soon as the response arrives and then deletes the old one; the responder receives on
//! the new SA at once but sends on it only when the peer deletes the old one. Old inbound SAs
//! linger for [`LINGER`] after deletion so packets in flight still open. A rekey request for a
//! CHILD or IKE SA we are rekeying ourselves is answered TEMPORARY_FAILURE (§2.25) and the
//! peer retries; the two sides rekey at different fractions of the lifetime so this is rare.

mod create;
mod info;
mod init;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::{rekey_fraction, IkeConfig};
use super::crypto::{random_bytes, CryptoError, Secret};
use super::sa::{IkeSa, Planned, SaState};
use super::wire::{
    exchange, parse_message, Body, Header, Identification, Message, Notify, Payload, Proposal, TrafficSelector,
};
use super::IkeDrop;
use crate::esp::{EspCipher, EspKeys, InboundSa, OutboundSa};
use crate::proposal::{Aead, DhGroup};

/// Old inbound CHILD SAs keep opening packets this long after they are deleted.
pub const LINGER: Duration = Duration::from_secs(3);
/// How long a half-open SA waits for IKE_AUTH.
pub const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Half-open responder SAs kept at once; a new one evicts the oldest.
pub const MAX_HALF_OPEN: usize = 8;
/// IKE_SA_INIT requests per second answered without a cookie (RFC 7296 §2.6).
pub const COOKIE_THRESHOLD: u32 = 8;
/// A retiring IKE SA is dropped after this long even if its DELETE is never answered.
pub const RETIRE_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failed setup, wait this long before initiating again.
pub const REINITIATE_DELAY: Duration = Duration::from_secs(1);
/// How long the non-preferred side waits before making a CHILD SA for an IKE SA that has none.
pub const MISSING_CHILD_PAUSE: Duration = Duration::from_secs(3);
/// How long after a refused or failed attempt a missing CHILD SA is asked for again.
pub const MISSING_CHILD_RETRY: Duration = Duration::from_secs(5);

/// A message to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    /// The IKE message, without the non-ESP marker.
    pub bytes: Vec<u8>,
}

/// A change the data path must apply.
#[derive(Debug)]
pub enum Event {
    /// A new CHILD SA: open packets on its inbound SA now; send on its outbound SA now if
    /// `activate`, else once [`Event::ActivateOutbound`] names it.
    ChildInstalled(Box<NewChild>),
    /// Send on the CHILD SA with this outbound SPI from now on.
    ActivateOutbound { outbound_spi: u32 },
    /// Forget the CHILD SA with these SPIs.
    ChildRemoved { inbound_spi: u32, outbound_spi: u32 },
}

/// The ESP SAs of a new CHILD SA.
#[derive(Debug)]
pub struct NewChild {
    pub inbound: InboundSa,
    pub outbound: OutboundSa,
    pub activate: bool,
}

/// What the engine has done, for status and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineStats {
    /// When the current IKE SA was established or last rekeyed.
    pub ike_established: Option<Instant>,
    /// When the CHILD SA we send on was established or last rekeyed.
    pub child_established: Option<Instant>,
    pub ike_rekeys: u64,
    pub child_rekeys: u64,
    /// IKE SAs set up (not counting rekeys).
    pub ike_setups: u64,
    pub auth_failures: u64,
    pub negotiation_failures: u64,
    /// Peers given up on after unanswered retransmissions.
    pub peer_timeouts: u64,
    pub cookies_sent: u64,
}

/// Where a CHILD SA is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ChildState {
    /// We send on it.
    Active,
    /// Installed by a rekey the peer started; we send on it once the peer deletes the old SA.
    Standby,
    /// Replaced by a rekey; being deleted.
    Superseded,
}

/// The engine's record of one CHILD SA (the keys live in the data path's ESP SAs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Child {
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    pub state: ChildState,
    pub rekey_at: Instant,
    /// A rekey of ours is under way.
    pub rekeying: bool,
}

/// IKE for one peer.
#[derive(Debug)]
pub struct Engine {
    config: IkeConfig,
    sas: Vec<IkeSa>,
    /// Our IKE_SA_INIT while it is unanswered.
    init: Option<init::InitRequest>,
    children: Vec<Child>,
    lingering: Vec<(Instant, u32, u32)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    cookie_secret: Vec<u8>,
    init_window: (Instant, u32),
    next_initiate: Option<Instant>,
    /// No IKE SA has been set up since this engine started: the first one announces
    /// INITIAL_CONTACT.
    cold: bool,
    /// When to make a CHILD SA for the current IKE SA, which has none to send on; `None` while
    /// it has one, or while a request for one is out (`creating_child`).
    next_child_attempt: Option<Instant>,
    creating_child: bool,
    /// The DH group of the KE our CREATE_CHILD_SA requests send: the first of our ESP
    /// proposals' groups, until the peer asks for another of them (INVALID_KE_PAYLOAD).
    child_ke_group: Option<DhGroup>,
    stats: EngineStats,
}

impl Engine {
    /// An engine for `config`; it initiates at the first [`Engine::handle_timeout`] if
    /// configured to.
    pub fn new(config: IkeConfig, now: Instant) -> Result<Engine, CryptoError> {
        let next_initiate = config.initiate.then_some(now);
        Ok(Engine {
            child_ke_group: config.esp_proposals.iter().find_map(|p| p.dh),
            config,
            sas: Vec::new(),
            init: None,
            children: Vec::new(),
            lingering: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cookie_secret: random_bytes(32)?,
            init_window: (now, 0),
            next_initiate,
            next_child_attempt: None,
            creating_child: false,
            cold: true,
            stats: EngineStats::default(),
        })
    }

    pub fn config(&self) -> &IkeConfig {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Whether an IKE SA is established with the peer.
    pub fn is_established(&self) -> bool {
        self.current().is_some()
    }

    /// IKE SAs held: the current one, half-open ones and retiring ones.
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next change for the data path, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// ESP from the peer opened: it is alive, no liveness check is needed yet.
    pub fn peer_alive(&mut self, now: Instant) {
        if let Some(sa) = self.current_mut() {
            sa.last_heard = now;
        }
    }

    /// Deletes the CHILD SA receiving on `inbound_spi` and tells the peer, as a peer does that
    /// tears one down by hand or at an idle timeout; if it was the last, a new one follows (see
    /// `plan_missing_child`).
    pub fn delete_child(&mut self, inbound_spi: u32, now: Instant) {
        if let Some(sa) = self.current_mut() {
            sa.plan(Planned::DeleteChild { inbound: inbound_spi });
        }
        self.start_planned(now);
    }

    /// The data path wants the CHILD SA sending on `outbound_spi` rekeyed now (its sequence
    /// numbers or the AEAD's usage limit are running out).
    pub fn rekey_child(&mut self, outbound_spi: u32, now: Instant) {
        if let Some(c) = self.children.iter_mut().find(|c| c.outbound_spi == outbound_spi) {
            c.rekey_at = c.rekey_at.min(now);
        }
    }

    /// Processes one IKE message from `from` (the non-ESP marker already removed).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Result<(), IkeDrop> {
        let message = parse_message(bytes).map_err(IkeDrop::Wire)?;
        let header = message.header;
        let result = if header.exchange == exchange::IKE_SA_INIT {
            match message.body {
                Body::Plain(payloads) if !header.response => self.on_init_request(now, from, bytes, &header, payloads),
                Body::Plain(payloads) => self.on_init_response(now, from, bytes, &header, payloads),
                Body::Encrypted(_) => Err(IkeDrop::Malformed),
            }
        } else {
            self.on_protected(now, from, bytes, message)
        };
        self.start_planned(now);
        result
    }

    /// Drives retransmissions, half-open and retiring timeouts, liveness checks, rekeys, and
    /// (re)initiation. Call at least every 100 ms or so.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_lingering(now);
        self.retransmit_init(now);
        let mut i = 0;
        while i < self.sas.len() {
            if !self.tick_sa(i, now) {
                let sa = self.sas.remove(i);
                self.sa_gone(sa, now);
            } else {
                i += 1;
            }
        }
        self.schedule_child_rekeys(now);
        self.plan_missing_child(now);
        if self.current().is_some_and(|sa| sa.rekey_at <= now) {
            if let Some(sa) = self.current_mut() {
                sa.plan(Planned::RekeyIke);
                sa.rekey_at = now + Duration::from_secs(3600);
            }
        }
        self.plan_liveness(now);
        // A half-open SA (a peer's IKE_SA_INIT we answered) does not hold initiation back:
        // anyone can make one, and one that authenticates replaces whatever we set up.
        if self.config.initiate
            && self.init.is_none()
            && self
                .sas
                .iter()
                .all(|sa| matches!(sa.state, SaState::Retiring | SaState::AwaitingAuth))
            && self.next_initiate.is_some_and(|t| t <= now)
        {
            self.initiate(now);
        }
        self.start_planned(now);
    }

    /// The next time [`Engine::handle_timeout`] has something to do (a hint; calling it more
    /// often is harmless).
    pub fn next_timeout(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = Vec::new();
        times.extend(self.init.as_ref().map(|i| i.retx.next));
        for sa in &self.sas {
            times.extend(sa.outstanding.as_ref().map(|r| r.retx.next));
            times.extend(sa.deadline);
            if sa.state == SaState::Established {
                times.push(sa.rekey_at);
                times.push(sa.last_heard + self.config.liveness);
            }
        }
        times.extend(self.children.iter().map(|c| c.rekey_at));
        times.extend(self.lingering.iter().map(|l| l.0));
        times.extend(self.next_initiate);
        times.into_iter().min()
    }

    fn current(&self) -> Option<&IkeSa> {
        self.sas.iter().find(|sa| sa.state == SaState::Established)
    }

    fn current_mut(&mut self) -> Option<&mut IkeSa> {
        self.sas.iter_mut().find(|sa| sa.state == SaState::Established)
    }

    /// A rekey time `lifetime` from `now`, at this side's fraction of it.
    fn rekey_time(&self, now: Instant, lifetime: Duration) -> Instant {
        let random = random_bytes(2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let per_mille = rekey_fraction(self.config.preferred, random);
        now + lifetime.mul_f64(f64::from(per_mille) / 1000.0)
    }

    fn send(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { to, bytes });
    }

    /// Processes a message on an existing IKE SA.
    fn on_protected(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], message: Message) -> Result<(), IkeDrop> {
        let header = message.header;
        let Body::Encrypted(part) = message.body else {
            return Err(IkeDrop::Malformed);
        };
        let index = self
            .sas
            .iter()
            .position(|sa| sa.owns(&header))
            .ok_or(IkeDrop::UnknownSpi)?;
        // The sender's I flag must say the opposite of ours.
        if header.initiator == self.sas[index].initiator {
            return Err(IkeDrop::Unexpected);
        }
        if !header.response {
            let sa = &self.sas[index];
            if header.message_id.wrapping_add(1) == sa.peer_mid {
                if let Some((mid, cached)) = &sa.last_response {
                    if *mid == header.message_id {
                        // A retransmitted request: the same answer again (RFC 7296 §2.1).
                        let cached = cached.clone();
                        self.sas[index].decrypt(bytes, part)?;
                        self.send(from, cached);
                        return Ok(());
                    }
                }
                return Err(IkeDrop::MessageId);
            }
            if header.message_id != sa.peer_mid {
                return Err(IkeDrop::MessageId);
            }
        } else {
            let expected = self.sas[index].outstanding.as_ref().map(|r| r.mid);
            if expected != Some(header.message_id) {
                return Err(IkeDrop::MessageId);
            }
        }
        let payloads = self.sas[index].decrypt(bytes, part)?;
        let mut sa = self.sas.remove(index);
        sa.last_heard = now;
        // Authentic and new (a retransmission was answered above): the peer is where it came
        // from, after a NAT rebinding too, so our requests follow it (RFC 7296 §2.23).
        if from != sa.peer {
            tracing::info!(from = %sa.peer, to = %from, "the peer's IKE address moved");
            sa.peer = from;
        }
        let keep = if header.response {
            let request = sa.outstanding.take().expect("checked above");
            self.on_response(now, &mut sa, &header, request, payloads)
        } else {
            self.on_request(now, from, &mut sa, &header, payloads)
        };
        if keep {
            self.sas.push(sa);
        } else {
            self.sa_gone(sa, now);
        }
        Ok(())
    }

    /// A request on an established (or retiring, or half-open responder) SA. Returns whether
    /// the SA lives on.
    fn on_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sa: &mut IkeSa,
        header: &Header,
        payloads: Vec<Payload>,
    ) -> bool {
        match (header.exchange, sa.state) {
            (exchange::IKE_AUTH, SaState::AwaitingAuth) => self.on_auth_request(now, from, sa, header, payloads),
            (exchange::CREATE_CHILD_SA, SaState::Established | SaState::Retiring) => {
                self.on_create_child_request(now, from, sa, header, payloads);
                true
            }
            (exchange::INFORMATIONAL, SaState::Established | SaState::Retiring) => {
                self.on_informational_request(now, from, sa, header, payloads)
            }
            _ => {
                tracing::debug!(exchange = header.exchange, state = ?sa.state, "IKE request ignored in this state");
                true
            }
        }
    }

    /// The response to our outstanding request. Returns whether the SA lives on.
    fn on_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        header: &Header,
        request: super::sa::Request,
        payloads: Vec<Payload>,
    ) -> bool {
        use super::sa::RequestKind;
        match request.kind {
            RequestKind::Auth => self.on_auth_response(now, sa, payloads),
            RequestKind::RekeyChild {
                old_inbound,
                new_inbound,
                nonce_i,
                dh,
            } => {
                self.on_rekey_child_response(now, sa, (old_inbound, new_inbound), &nonce_i, dh, payloads);
                true
            }
            RequestKind::RekeyIke { new_spi, nonce_i, dh } => {
                self.on_rekey_ike_response(now, sa, new_spi, &nonce_i, dh, payloads);
                true
            }
            RequestKind::DeleteChild { inbound } => {
                self.child_deleted(inbound, now);
                true
            }
            RequestKind::DeleteIke => {
                let _ = header;
                false
            }
            RequestKind::Liveness => true,
        }
    }

    /// Retransmits or gives up on an SA's outstanding request, and expires half-open and
    /// retiring SAs. Returns whether the SA lives on.
    fn tick_sa(&mut self, i: usize, now: Instant) -> bool {
        if self.sas[i].deadline.is_some_and(|d| d <= now) {
            if self.sas[i].state != SaState::Retiring {
                tracing::warn!(peer = %self.sas[i].peer, state = ?self.sas[i].state, "IKE SA setup timed out");
            }
            return false;
        }
        let peer = self.sas[i].peer;
        let Some(request) = self.sas[i].outstanding.as_mut() else {
            return true;
        };
        if request.retx.next > now {
            return true;
        }
        if request.retx.bump(now) {
            let bytes = request.bytes.clone();
            self.send(peer, bytes);
            return true;
        }
        let sa = &self.sas[i];
        if sa.state == SaState::Retiring {
            return false;
        }
        self.stats.peer_timeouts += 1;
        tracing::warn!(
            peer = %sa.peer,
            state = ?sa.state,
            sends = super::sa::RETRANSMIT_TRIES,
            "the peer answered none of our IKE retransmissions; the IKE SA and its CHILD SAs are gone"
        );
        false
    }

    /// An SA left the list (expired, deleted, timed out): if it was the current one, its
    /// CHILD SAs go with it and a new setup is scheduled.
    fn sa_gone(&mut self, sa: IkeSa, now: Instant) {
        if self.current().is_none() {
            // Whatever CHILD SA request it carried is gone with it.
            self.creating_child = false;
        }
        if sa.state == SaState::Established && self.current().is_none() {
            for child in std::mem::take(&mut self.children) {
                self.events.push_back(Event::ChildRemoved {
                    inbound_spi: child.inbound_spi,
                    outbound_spi: child.outbound_spi,
                });
            }
            self.stats.ike_established = None;
            self.stats.child_established = None;
            self.next_initiate = Some(now);
        } else if sa.state != SaState::Retiring && self.current().is_none() && self.next_initiate.is_none() {
            self.next_initiate = Some(now + REINITIATE_DELAY);
        }
    }

    /// Starts the next planned exchange of every SA whose window is free.
    fn start_planned(&mut self, now: Instant) {
        for i in 0..self.sas.len() {
            if !self.sas[i].idle() || !matches!(self.sas[i].state, SaState::Established | SaState::Retiring) {
                continue;
            }
            let Some(work) = self.sas[i].planned.pop_front() else {
                continue;
            };
            let mut sa = self.sas.remove(i);
            self.start(now, &mut sa, work);
            self.sas.insert(i, sa);
        }
    }

    fn start(&mut self, now: Instant, sa: &mut IkeSa, work: Planned) {
        match work {
            Planned::RekeyChild { inbound } => self.start_child_request(now, sa, Some(inbound)),
            Planned::CreateChild => self.start_child_request(now, sa, None),
            Planned::RekeyIke => self.start_rekey_ike(now, sa),
            Planned::DeleteChild { inbound } => self.start_delete_child(now, sa, inbound),
            Planned::DeleteIke => self.start_delete_ike(now, sa),
            Planned::Liveness => self.start_liveness(now, sa),
        }
    }

    fn schedule_child_rekeys(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .children
            .iter()
            .filter(|c| c.state == ChildState::Active && !c.rekeying && c.rekey_at <= now)
            .map(|c| c.inbound_spi)
            .collect();
        for inbound in due {
            if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == inbound) {
                c.rekeying = true;
            }
            if let Some(sa) = self.current_mut() {
                sa.plan(Planned::RekeyChild { inbound });
            }
        }
    }

    /// An established IKE SA with no CHILD SA to send on (the peer deleted its only one, or
    /// refused the one of IKE_AUTH) gets a new one by CREATE_CHILD_SA (RFC 7296 §1.3.1). The
    /// preferred side asks at once, the other after [`MISSING_CHILD_PAUSE`], so both rarely
    /// make one; a refusal is retried after [`MISSING_CHILD_RETRY`].
    fn plan_missing_child(&mut self, now: Instant) {
        let has_child = self
            .children
            .iter()
            .any(|c| matches!(c.state, ChildState::Active | ChildState::Standby));
        let established = self.current().is_some_and(|sa| sa.state == SaState::Established);
        if has_child || !established || self.creating_child {
            self.next_child_attempt = None;
            return;
        }
        let pause = if self.config.preferred {
            Duration::ZERO
        } else {
            MISSING_CHILD_PAUSE
        };
        let due = *self.next_child_attempt.get_or_insert(now + pause);
        if now >= due {
            tracing::info!(peer = %self.config.remote_addr, "the IKE SA has no CHILD SA left; creating one");
            self.creating_child = true;
            self.next_child_attempt = None;
            if let Some(sa) = self.current_mut() {
                sa.plan(Planned::CreateChild);
            }
        }
    }

    fn plan_liveness(&mut self, now: Instant) {
        let liveness = self.config.liveness;
        if let Some(sa) = self.current_mut() {
            if sa.idle() && sa.planned.is_empty() && now.saturating_duration_since(sa.last_heard) >= liveness {
                sa.plan(Planned::Liveness);
            }
        }
    }

    fn expire_lingering(&mut self, now: Instant) {
        let (due, keep): (Vec<_>, Vec<_>) = self.lingering.iter().partition(|l| l.0 <= now);
        self.lingering = keep;
        for (_, inbound_spi, outbound_spi) in due {
            self.events.push_back(Event::ChildRemoved {
                inbound_spi,
                outbound_spi,
            });
        }
    }

    /// Builds the ESP SAs of a new CHILD SA from its key material and queues them for the data
    /// path. `we_initiated`: we started the exchange that created it, so the first half of the
    /// key material is our outbound key (RFC 7296 §2.17).
    #[allow(clippy::too_many_arguments)]
    fn install_child(
        &mut self,
        now: Instant,
        sa: &IkeSa,
        shared_nonces: (&[u8], &[u8]),
        pfs_secret: Option<&Secret>,
        we_initiated: bool,
        choice: super::negotiate::EspChoice,
        inbound_spi: u32,
        activate: bool,
    ) {
        let cipher = match choice.aead {
            Aead::AesGcm16_256 => EspCipher::AesGcm256,
            Aead::ChaCha20Poly1305 => EspCipher::ChaCha20Poly1305,
        };
        let half = cipher.keymat_len();
        let keymat = sa
            .keys
            .child_keymat(pfs_secret, shared_nonces.0, shared_nonces.1, 2 * half);
        let (i_to_r, r_to_i) = keymat.as_bytes().split_at(half);
        let (out_keys, in_keys) = if we_initiated {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        };
        let (Ok(out_keys), Ok(in_keys)) = (
            EspKeys::from_keymat(cipher, out_keys),
            EspKeys::from_keymat(cipher, in_keys),
        ) else {
            tracing::error!("CHILD SA key material has the wrong length; not installed");
            return;
        };
        let outbound = OutboundSa::new(choice.peer_spi, cipher, out_keys, choice.esn);
        let inbound = InboundSa::new(inbound_spi, cipher, in_keys, choice.esn, self.config.replay_window);
        self.children.push(Child {
            inbound_spi,
            outbound_spi: choice.peer_spi,
            state: if activate {
                ChildState::Active
            } else {
                ChildState::Standby
            },
            rekey_at: self.rekey_time(now, self.config.child_lifetime),
            rekeying: false,
        });
        if activate {
            self.stats.child_established = Some(now);
        }
        tracing::info!(
            inbound_spi = format_args!("{inbound_spi:08x}"),
            outbound_spi = format_args!("{:08x}", choice.peer_spi),
            cipher = %choice.aead,
            esn = choice.esn,
            sending = activate,
            "CHILD SA installed"
        );
        self.events.push_back(Event::ChildInstalled(Box::new(NewChild {
            inbound,
            outbound,
            activate,
        })));
    }

    /// The CHILD SA `inbound` was deleted: it lingers, then goes.
    fn child_deleted(&mut self, inbound: u32, now: Instant) {
        if let Some(pos) = self.children.iter().position(|c| c.inbound_spi == inbound) {
            let child = self.children.remove(pos);
            self.lingering
                .push((now + LINGER, child.inbound_spi, child.outbound_spi));
            tracing::info!(inbound_spi = format_args!("{inbound:08x}"), "old CHILD SA deleted");
        }
    }
}

/// The first payload of each kind in a message, by name.
pub(crate) trait Payloads {
    fn sa(&self) -> Option<&[Proposal]>;
    fn ke(&self) -> Option<(u16, &[u8])>;
    fn nonce(&self) -> Option<&[u8]>;
    fn id_i(&self) -> Option<&Identification>;
    fn id_r(&self) -> Option<&Identification>;
    fn auth(&self) -> Option<(u8, &[u8])>;
    fn ts_i(&self) -> Option<&[TrafficSelector]>;
    fn ts_r(&self) -> Option<&[TrafficSelector]>;
    /// The first notify of `kind`.
    fn notify(&self, kind: u16) -> Option<&Notify>;
    /// The first error notify (type below 16384).
    fn error_notify(&self) -> Option<&Notify>;
}

impl Payloads for [Payload] {
    fn sa(&self) -> Option<&[Proposal]> {
        self.iter().find_map(|p| match p {
            Payload::Sa(proposals) => Some(proposals.as_slice()),
            _ => None,
        })
    }

    fn ke(&self) -> Option<(u16, &[u8])> {
        self.iter().find_map(|p| match p {
            Payload::Ke { group, data } => Some((*group, data.as_slice())),
            _ => None,
        })
    }

    fn nonce(&self) -> Option<&[u8]> {
        self.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        })
    }

    fn id_i(&self) -> Option<&Identification> {
        self.iter().find_map(|p| match p {
            Payload::IdI(id) => Some(id),
            _ => None,
        })
    }

    fn id_r(&self) -> Option<&Identification> {
        self.iter().find_map(|p| match p {
            Payload::IdR(id) => Some(id),
            _ => None,
        })
    }

    fn auth(&self) -> Option<(u8, &[u8])> {
        self.iter().find_map(|p| match p {
            Payload::Auth { method, data } => Some((*method, data.as_slice())),
            _ => None,
        })
    }

    fn ts_i(&self) -> Option<&[TrafficSelector]> {
        self.iter().find_map(|p| match p {
            Payload::TsI(ts) => Some(ts.as_slice()),
            _ => None,
        })
    }

    fn ts_r(&self) -> Option<&[TrafficSelector]> {
        self.iter().find_map(|p| match p {
            Payload::TsR(ts) => Some(ts.as_slice()),
            _ => None,
        })
    }

    fn notify(&self, kind: u16) -> Option<&Notify> {
        self.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind == kind => Some(n),
            _ => None,
        })
    }

    fn error_notify(&self) -> Option<&Notify> {
        self.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind < 16384 => Some(n),
            _ => None,
        })
    }
}

/// A notify payload without SPI.
pub(crate) fn notify_payload(kind: u16, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify {
        protocol: 0,
        spi: Vec::new(),
        kind,
        data,
    })
}

/// A notify type's name for logs.
pub(crate) fn notify_name(kind: u16) -> String {
    super::wire::notify_type::name(kind).map_or_else(|| format!("notify {kind}"), str::to_string)
}
