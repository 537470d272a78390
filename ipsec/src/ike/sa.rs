//! One IKE SA: its keys, its message counters and its single outstanding request.
//!
//! Design: an IKE SA is a secure channel with a window of one request in each direction
//! (RFC 7296 §2.3): our next request's message ID, the next one we expect from the peer, the
//! last response we sent (resent, byte for byte, when the peer retransmits its request), and
//! the request we are waiting on an answer to, with its retransmission schedule. Exchanges
//! waiting for the window queue as [`Planned`] work. The engine ([`super::engine`]) decides
//! what the messages say; this module seals, opens and counts them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::crypto::{DhExchange, IkeKeys, SkCipher, SK_ICV_LEN, SK_IV_LEN};
use super::wire::{
    encode_payloads, parse_payloads, payload_type, EncryptedPart, Header, Payload, GENERIC_HEADER_LEN, IKE_HEADER_LEN,
};
use super::IkeDrop;
use crate::proposal::IkeProposal;

/// First retransmission after this long; each later one waits twice as long, up to
/// [`RETRANSMIT_MAX`].
pub const RETRANSMIT_BASE: Duration = Duration::from_millis(500);
pub const RETRANSMIT_MAX: Duration = Duration::from_secs(5);
/// Sends of one request (the first and its retransmissions) before the peer is given up on:
/// 0.5 + 1 + 2 + 4 + 5 + 5 s = 17.5 s.
pub const RETRANSMIT_TRIES: u32 = 6;

/// When to resend a request, and when to give up.
#[derive(Clone, Copy, Debug)]
pub struct Retransmit {
    pub sends: u32,
    pub next: Instant,
}

impl Retransmit {
    pub fn new(now: Instant) -> Self {
        Retransmit {
            sends: 1,
            next: now + RETRANSMIT_BASE,
        }
    }

    /// Schedules the next send; false once the request has been sent [`RETRANSMIT_TRIES`] times.
    pub fn bump(&mut self, now: Instant) -> bool {
        if self.sends >= RETRANSMIT_TRIES {
            return false;
        }
        let wait = RETRANSMIT_BASE
            .saturating_mul(1 << self.sends.min(8))
            .min(RETRANSMIT_MAX);
        self.sends += 1;
        self.next = now + wait;
        true
    }
}

/// Where an IKE SA is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SaState {
    /// We initiated; IKE_AUTH is sent and unanswered.
    AuthSent,
    /// We answered IKE_SA_INIT; the peer's IKE_AUTH has not arrived.
    AwaitingAuth,
    /// Authenticated and carrying CHILD SAs (or their exchanges).
    Established,
    /// Replaced by a newer IKE SA; deleted once the DELETE exchange is done or times out.
    Retiring,
}

/// What IKE_AUTH needs from IKE_SA_INIT (RFC 7296 §2.15).
#[derive(Debug)]
pub struct AuthContext {
    /// Our IKE_SA_INIT message as sent, and the peer's as received.
    pub our_init: Vec<u8>,
    pub peer_init: Vec<u8>,
    pub nonce_i: Vec<u8>,
    pub nonce_r: Vec<u8>,
    /// As initiator: the inbound SPI our IKE_AUTH offered for the first CHILD SA.
    pub child_spi: u32,
}

/// What a request of ours was, so its response can be understood.
#[derive(Debug)]
pub enum RequestKind {
    Auth,
    /// CREATE_CHILD_SA for a CHILD SA: a rekey of the one we receive on at `old_inbound`, or
    /// with none, a new CHILD SA where the IKE SA has none left.
    RekeyChild {
        old_inbound: Option<u32>,
        new_inbound: u32,
        nonce_i: Vec<u8>,
        /// Our half of the KE exchange, when the request offered PFS.
        dh: Option<DhExchange>,
    },
    RekeyIke {
        new_spi: u64,
        nonce_i: Vec<u8>,
        dh: DhExchange,
    },
    DeleteChild {
        inbound: u32,
    },
    DeleteIke,
    Liveness,
}

/// A request waiting for its response.
#[derive(Debug)]
pub struct Request {
    pub mid: u32,
    pub bytes: Vec<u8>,
    pub retx: Retransmit,
    pub kind: RequestKind,
}

/// Work for the request window, started when it is free.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Planned {
    RekeyChild {
        inbound: u32,
    },
    /// A CHILD SA for an IKE SA that has none left.
    CreateChild,
    RekeyIke,
    DeleteChild {
        inbound: u32,
    },
    DeleteIke,
    Liveness,
}

/// One IKE SA.
#[derive(Debug)]
pub struct IkeSa {
    pub spi_i: u64,
    pub spi_r: u64,
    /// Whether we are this SA's original initiator (the I flag on what we send).
    pub initiator: bool,
    pub state: SaState,
    pub proposal: IkeProposal,
    pub keys: IkeKeys,
    seal: SkCipher,
    open: SkCipher,
    pub auth: Option<AuthContext>,
    pub next_mid: u32,
    pub peer_mid: u32,
    pub last_response: Option<(u32, Vec<u8>)>,
    pub outstanding: Option<Request>,
    pub planned: VecDeque<Planned>,
    pub created: Instant,
    pub rekey_at: Instant,
    /// The last time the peer proved it was alive on this SA.
    pub last_heard: Instant,
    pub peer: SocketAddr,
    /// A half-open or retiring SA is dropped at this time.
    pub deadline: Option<Instant>,
}

impl IkeSa {
    /// A new SA with fresh message counters. `initiator`: we seal with SK_ei, else SK_er.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spi_i: u64,
        spi_r: u64,
        initiator: bool,
        state: SaState,
        proposal: IkeProposal,
        keys: IkeKeys,
        peer: SocketAddr,
        now: Instant,
        rekey_at: Instant,
    ) -> IkeSa {
        let (seal_key, open_key) = if initiator {
            (&keys.sk_ei, &keys.sk_er)
        } else {
            (&keys.sk_er, &keys.sk_ei)
        };
        let seal = SkCipher::new(proposal.aead, seal_key);
        let open = SkCipher::new(proposal.aead, open_key);
        IkeSa {
            spi_i,
            spi_r,
            initiator,
            state,
            proposal,
            keys,
            seal,
            open,
            auth: None,
            next_mid: 0,
            peer_mid: 0,
            last_response: None,
            outstanding: None,
            planned: VecDeque::new(),
            created: now,
            rekey_at,
            last_heard: now,
            peer,
            deadline: None,
        }
    }

    /// Whether a message with this header belongs to this SA.
    pub fn owns(&self, header: &Header) -> bool {
        header.spi_i == self.spi_i && header.spi_r == self.spi_r
    }

    /// A message of ours on this SA with `payloads` inside an SK payload.
    pub fn encrypt(&mut self, exchange: u8, response: bool, message_id: u32, payloads: &[Payload]) -> Vec<u8> {
        let mut inner = Vec::new();
        let first = if payloads.is_empty() {
            payload_type::NONE
        } else {
            encode_payloads(payloads, &mut inner)
        };
        inner.push(0); // pad length: an AEAD needs no padding
        let sk_len = GENERIC_HEADER_LEN + SK_IV_LEN + inner.len() + SK_ICV_LEN;
        let header = Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: payload_type::SK,
            exchange,
            initiator: self.initiator,
            response,
            message_id,
            length: (IKE_HEADER_LEN + sk_len) as u32,
        };
        let mut message = Vec::with_capacity(IKE_HEADER_LEN + sk_len);
        header.write(&mut message);
        message.push(first);
        message.push(0);
        message.extend_from_slice(&(sk_len as u16).to_be_bytes());
        self.seal.seal(&mut message, &inner);
        message
    }

    /// The payloads inside the SK payload of `message`.
    pub fn decrypt(&self, message: &[u8], part: EncryptedPart) -> Result<Vec<Payload>, IkeDrop> {
        let plain = self
            .open
            .open(message, part.body_offset)
            .map_err(|_| IkeDrop::Decrypt)?;
        if part.first_inner == payload_type::NONE {
            return if plain.is_empty() {
                Ok(Vec::new())
            } else {
                Err(IkeDrop::Malformed)
            };
        }
        parse_payloads(part.first_inner, &plain).map_err(IkeDrop::Wire)
    }

    /// Sends `payloads` as our next request; it is retransmitted until answered.
    pub fn request(&mut self, now: Instant, exchange: u8, payloads: &[Payload], kind: RequestKind) -> Vec<u8> {
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        let bytes = self.encrypt(exchange, false, mid, payloads);
        self.outstanding = Some(Request {
            mid,
            bytes: bytes.clone(),
            retx: Retransmit::new(now),
            kind,
        });
        bytes
    }

    /// Answers the peer's request `mid` with `payloads`, remembering the answer for
    /// retransmitted copies of the request.
    pub fn respond(&mut self, exchange: u8, mid: u32, payloads: &[Payload]) -> Vec<u8> {
        let bytes = self.encrypt(exchange, true, mid, payloads);
        self.last_response = Some((mid, bytes.clone()));
        self.peer_mid = mid.wrapping_add(1);
        bytes
    }

    /// Whether the window is free for a new request of ours.
    pub fn idle(&self) -> bool {
        self.outstanding.is_none()
    }

    /// Queues `work` unless the same work is already queued.
    pub fn plan(&mut self, work: Planned) {
        if !self.planned.contains(&work) {
            self.planned.push_back(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_back_off_and_give_up() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(t0);
        let mut total = r.next - t0;
        let mut now = r.next;
        while r.bump(now) {
            total += r.next - now;
            now = r.next;
        }
        assert_eq!(r.sends, RETRANSMIT_TRIES);
        assert_eq!(total, Duration::from_millis(500 + 1000 + 2000 + 4000 + 5000 + 5000));
    }
}
