//! Why a control datagram was refused. Each reason is counted by the receiver.

/// Why a received control datagram was not accepted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum ControlError {
    /// The authentication tag does not match: tampered, truncated past the fixed header, or
    /// sealed with a key other than the sender's (another cluster, or another daemon's key).
    #[error("authentication failed")]
    Forged,
    /// Authentic, but already seen: a sequence number not above the sender's last in its
    /// current life, or a life of the sender that has already been replaced.
    #[error("replayed or out of order")]
    Replayed,
    /// Authentic, but not an answer to this receiver's current life: the sender has not heard
    /// from it since it started (or it is an old message replayed). Answered with a hello
    /// naming the sender's life, so the sender's next message is fresh.
    #[error("not yet fresh: the sender has not heard from this life of the receiver")]
    Unfresh,
    /// The sender named in the header is not one this end talks to: not in the cluster, a
    /// daemon when a daemon listens only to the controller, or more senders than the receiver
    /// keeps state for. Refused before any cryptography.
    #[error("unknown sender")]
    UnknownSender,
    /// Too short to hold a header and tag, an authentic datagram whose header or JSON does
    /// not parse, or a membership push that fails [`super::Membership::check`].
    #[error("malformed")]
    Malformed,
    /// Larger than [`super::MAX_DATAGRAM`].
    #[error("larger than the control datagram limit")]
    TooLarge,
    /// Authentic and well formed, but not something this receiver takes (a heartbeat whose
    /// identity differs from its sender's, a membership acknowledgement from a gateway).
    #[error("unexpected sender or message")]
    Unexpected,
}
