//! Why a control datagram was refused. Each reason is counted by the receiver.

/// Why a received control datagram was not accepted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum ControlError {
    /// The authentication tag does not match: tampered, truncated past the fixed header, or
    /// sealed with another cluster secret.
    #[error("authentication failed")]
    Forged,
    /// Authentic, but already seen: a sequence number not above the sender's last, or an
    /// incarnation older than the sender's newest.
    #[error("replayed or out of order")]
    Replayed,
    /// Authentic, but sent too far from the receiver's clock.
    #[error("send time outside the accepted clock skew")]
    Stale,
    /// Too short to hold a header and tag, or an authentic datagram whose header or JSON does
    /// not parse.
    #[error("malformed")]
    Malformed,
    /// Larger than [`super::MAX_DATAGRAM`].
    #[error("larger than the control datagram limit")]
    TooLarge,
    /// Authentic and well formed, but not something this receiver takes (a daemon hearing from
    /// another daemon, a heartbeat whose identity differs from its sender's).
    #[error("unexpected sender or message")]
    Unexpected,
}
