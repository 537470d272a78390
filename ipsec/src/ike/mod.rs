//! IKEv2 (RFC 7296) with pre-shared keys, as a sans-IO engine per peer.
//!
//! Design: [`Engine`] is everything one gateway knows about its one peer: the IKE SA (and,
//! briefly, the one it replaces), the CHILD SAs negotiated under it, and the exchanges under
//! way. It is driven like quinn-proto: [`Engine::handle`] takes a received IKE message and
//! `now`, [`Engine::handle_timeout`] drives retransmissions, liveness checks and rekeys, and the
//! caller collects what to send with [`Engine::poll_transmit`] and what changed with
//! [`Engine::poll_event`]: CHILD SAs to install, activate and remove, as ready-made ESP SAs
//! ([`crate::esp`]). The engine never touches a socket or a clock.
//!
//! * [`wire`]: the message codec.
//! * [`crypto`]: the key schedule, SK payload protection, PSK authentication, NAT detection.
//! * [`negotiate`]: proposal choice and traffic-selector narrowing.
//! * [`sa`]: one IKE SA: its keys, message IDs, outstanding request and retransmissions.
//! * [`engine`]: the exchanges: IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA (CHILD and IKE
//!   rekeys, make-before-break), INFORMATIONAL (liveness, DELETE), COOKIE and
//!   INVALID_KE_PAYLOAD retries.

pub mod config;
pub mod crypto;
pub mod engine;
pub mod negotiate;
pub mod sa;
pub mod wire;

#[cfg(test)]
mod tests;

pub use config::IkeConfig;
pub use engine::{Engine, EngineStats, Event, NewChild, Transmit};

/// Why an IKE message was dropped without an answer. Each is a counted reason.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IkeDrop {
    #[error("malformed IKE message: {0}")]
    Wire(wire::WireError),
    #[error("malformed IKE message")]
    Malformed,
    #[error("no IKE SA with these SPIs")]
    UnknownSpi,
    #[error("the SK payload did not authenticate")]
    Decrypt,
    #[error("message ID out of the window")]
    MessageId,
    #[error("a message this state does not expect")]
    Unexpected,
    #[error("IKE_SA_INIT refused: too many half-open SAs")]
    Overloaded,
}
