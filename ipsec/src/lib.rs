//! braid-ipsec: IPsec for braid gateways, as sans-IO state machines.
//!
//! Design: nothing here touches a socket, a clock or a thread. Bytes and `now` go in; bytes,
//! timers and events come out, in the style of quinn-proto. The gateway's data thread owns one
//! engine per peer and drives it from its batched socket loop; tests drive two engines against
//! each other over a simulated network, deterministically.
//!
//! * [`replay`]: the RFC 6479 anti-replay window: a ring of bit words, O(1) per packet,
//!   window size configurable up to 65,536 packets.
//! * [`esp`]: ESP (RFC 4303) in tunnel mode with AES-256-GCM (RFC 4106) or ChaCha20-Poly1305
//!   (RFC 7634) through `ring`, extended sequence numbers (RFC 4304), sealing and opening in
//!   the caller's buffers without allocating.
//! * [`ike`]: IKEv2 (RFC 7296) with pre-shared keys: the message codec, the key schedule and
//!   the exchanges that create, rekey, check and delete IKE and CHILD SAs.
//! * [`proposal`]: the cipher suites braid offers and accepts, in strongSwan's notation.
//! * [`port`]: what shares UDP port 4500 (RFC 3948): ESP, IKE behind the non-ESP marker, and
//!   NAT keepalives.

#![forbid(unsafe_code)]

pub mod esp;
pub mod ike;
pub mod port;
pub mod proposal;
pub mod replay;
