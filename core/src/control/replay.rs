//! Replay and freshness for authenticated control messages: a sans-IO state machine with no
//! clock at all.
//!
//! Each end has an incarnation (64 random bits a life) and stamps every message with its
//! incarnation, a sequence number, and the `echo`: the receiver's incarnation as the sender
//! last heard it. For each peer the guard remembers the peer's current life and the highest
//! sequence number accepted in it, and a few lives it has seen replaced. A message is
//! accepted when
//!
//! * it comes from the peer's current life with a higher sequence number than any accepted,
//!   or
//! * it comes from a life not seen before and echoes this end's own incarnation: it was made
//!   after this life began, so it cannot be a recording from before (the peer restarted, or
//!   this end did and the peer has already heard from it).
//!
//! A new life whose echo is wrong is [`ControlError::Unfresh`]: the caller answers it with a
//! hello, which the peer accepts (it echoes the peer's life) and learns this end's
//! incarnation from, so the peer's next message is fresh. A replaced life is refused as
//! [`ControlError::Replayed`], so a recording of a peer's earlier life cannot flip the guard
//! back to it. Control messages are idempotent reports and commands resent on a timer, so a
//! reordered message is simply refused rather than held in a window.
//!
//! Every replaced life is remembered, up to [`RETIRED_LIVES`] per peer (32 KiB), because a
//! recording of any of them echoes this end's incarnation as well as a new life does: a life
//! forgotten could be replayed, accepted as new, and retire the peer's real life. The bound is
//! reached only by a peer that restarts thousands of times within one life of this end; a
//! restart of this end (a new incarnation) makes every earlier recording unfresh anyway.
//!
//! No wall clock takes part: hosts whose clocks disagree, or a clock stepped back, change
//! nothing. State is kept only for authenticated senders and at most `capacity` of them
//! (the controller's keyring already limits senders to the cluster's daemons); a refused
//! message never moves the guard except to remember the authentic incarnation to echo.

use std::collections::HashMap;

use super::envelope::Header;
use super::error::ControlError;
use super::message::DaemonId;

/// Replaced lives remembered per peer (see the module docs).
pub const RETIRED_LIVES: usize = 4096;

#[derive(Debug, Default)]
struct Peer {
    /// The life accepted last and its highest sequence number; `None` until one is accepted.
    current: Option<(u64, u64)>,
    /// Lives that `current` replaced, most recent last.
    retired: Vec<u64>,
    /// The peer incarnation to echo: the latest authentic one, accepted or not.
    heard: u64,
}

/// Per-peer replay and freshness state; see the module docs.
#[derive(Debug)]
pub struct ReplayGuard {
    me: u64,
    capacity: usize,
    peers: HashMap<DaemonId, Peer>,
}

impl ReplayGuard {
    /// The guard of an end whose incarnation is `me`, keeping state for at most `capacity`
    /// peers.
    pub fn new(me: u64, capacity: usize) -> Self {
        ReplayGuard {
            me,
            capacity,
            peers: HashMap::new(),
        }
    }

    /// Accepts an authentic `header` (and remembers it) or says why not.
    pub fn check(&mut self, header: &Header) -> Result<(), ControlError> {
        if !self.peers.contains_key(&header.sender) && self.peers.len() >= self.capacity {
            return Err(ControlError::UnknownSender);
        }
        let me = self.me;
        let peer = self.peers.entry(header.sender.clone()).or_default();
        if let Some((life, ref mut seq)) = peer.current {
            if life == header.incarnation {
                peer.heard = life;
                if header.seq <= *seq {
                    return Err(ControlError::Replayed);
                }
                *seq = header.seq;
                return Ok(());
            }
        }
        // Any other life: the retired ones are searched only here, off the common path.
        if peer.retired.contains(&header.incarnation) {
            return Err(ControlError::Replayed);
        }
        peer.heard = header.incarnation;
        match peer.current {
            _ if header.echo != me => Err(ControlError::Unfresh),
            current => {
                if let Some((old, _)) = current {
                    if peer.retired.len() == RETIRED_LIVES {
                        peer.retired.remove(0);
                    }
                    peer.retired.push(old);
                }
                peer.current = Some((header.incarnation, header.seq));
                Ok(())
            }
        }
    }

    /// What to echo to `peer`: its latest authentic incarnation, 0 if none was heard.
    pub fn echo_for(&self, peer: &DaemonId) -> u64 {
        self.peers.get(peer).map_or(0, |p| p.heard)
    }

    /// The current life accepted from `peer`, if any.
    pub fn current_life(&self, peer: &DaemonId) -> Option<u64> {
        self.peers.get(peer).and_then(|p| p.current.map(|(life, _)| life))
    }

    /// Forgets `peer`, e.g. once it is removed from the cluster.
    pub fn forget(&mut self, peer: &DaemonId) {
        self.peers.remove(peer);
    }

    /// Peers with state.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u64 = 0xaaaa;

    fn header(sender: DaemonId, incarnation: u64, seq: u64, echo: u64) -> Header {
        Header {
            sender,
            incarnation,
            seq,
            echo,
        }
    }

    fn gw() -> DaemonId {
        DaemonId::gateway("a", 1)
    }

    #[test]
    fn a_new_life_needs_the_echo_then_sequence_numbers_rise() {
        let mut guard = ReplayGuard::new(ME, 10);
        assert_eq!(guard.check(&header(gw(), 7, 0, 0)), Err(ControlError::Unfresh));
        assert_eq!(guard.echo_for(&gw()), 7, "the authentic life is echoed in the hello");
        assert_eq!(guard.current_life(&gw()), None);
        assert_eq!(guard.check(&header(gw(), 7, 1, ME)), Ok(()));
        assert_eq!(guard.check(&header(gw(), 7, 1, ME)), Err(ControlError::Replayed));
        assert_eq!(guard.check(&header(gw(), 7, 0, ME)), Err(ControlError::Replayed));
        // Within the accepted life the echo no longer matters (the peer may not have heard a
        // hello of ours yet); only the sequence number does.
        assert_eq!(guard.check(&header(gw(), 7, 5, 0)), Ok(()));
        assert_eq!(guard.current_life(&gw()), Some(7));
    }

    #[test]
    fn a_restarted_peer_is_accepted_and_its_old_life_cannot_come_back() {
        let mut guard = ReplayGuard::new(ME, 10);
        guard.check(&header(gw(), 7, 3, ME)).unwrap();
        // Restarted: it has not heard from us in its new life.
        assert_eq!(guard.check(&header(gw(), 8, 0, 0)), Err(ControlError::Unfresh));
        assert_eq!(guard.current_life(&gw()), Some(7), "an unfresh message moves nothing");
        guard.check(&header(gw(), 8, 1, ME)).unwrap();
        // Recordings of the old life, even fresh-looking ones with higher numbers, are refused.
        assert_eq!(guard.check(&header(gw(), 7, 99, ME)), Err(ControlError::Replayed));
        assert_eq!(guard.echo_for(&gw()), 8, "a replayed life is not echoed");
        assert_eq!(guard.check(&header(gw(), 8, 2, ME)), Ok(()));
    }

    /// After this end restarts (a new `me`), a recording made in its previous life echoes the
    /// wrong incarnation and is never accepted, however high its numbers.
    #[test]
    fn recordings_from_before_this_life_are_never_accepted() {
        let mut guard = ReplayGuard::new(ME + 1, 10);
        for seq in [0, 5, u64::MAX] {
            assert_eq!(guard.check(&header(gw(), 7, seq, ME)), Err(ControlError::Unfresh));
        }
        assert_eq!(guard.current_life(&gw()), None);
    }

    #[test]
    fn retired_lives_are_bounded() {
        let mut guard = ReplayGuard::new(ME, 10);
        let lives = RETIRED_LIVES as u64 + 10;
        for life in 1..=lives {
            guard.check(&header(gw(), life, 0, ME)).unwrap();
        }
        for life in 11..lives {
            assert_eq!(guard.check(&header(gw(), life, 50, ME)), Err(ControlError::Replayed));
        }
        assert_eq!(guard.peers[&gw()].retired.len(), RETIRED_LIVES);
        assert_eq!(guard.current_life(&gw()), Some(lives));
    }

    /// A peer that restarted many times while this end kept its life: a recording of any
    /// earlier life it had (a crash-looping gateway makes many) is refused and leaves the real
    /// life current.
    #[test]
    fn a_recording_from_any_of_many_earlier_lives_cannot_retire_the_real_one() {
        let mut guard = ReplayGuard::new(ME, 10);
        for life in 1..=100 {
            guard.check(&header(gw(), life, 3, ME)).unwrap();
        }
        for life in 1..100 {
            assert_eq!(guard.check(&header(gw(), life, 4, ME)), Err(ControlError::Replayed));
        }
        assert_eq!(guard.current_life(&gw()), Some(100));
        assert_eq!(guard.echo_for(&gw()), 100, "a replayed life is not echoed");
        assert_eq!(guard.check(&header(gw(), 100, 4, 0)), Ok(()));
    }

    #[test]
    fn state_is_capped_and_forgettable() {
        let mut guard = ReplayGuard::new(ME, 2);
        guard.check(&header(DaemonId::gateway("a", 1), 1, 0, ME)).unwrap();
        guard.check(&header(DaemonId::gateway("a", 2), 1, 0, ME)).unwrap();
        assert_eq!(
            guard.check(&header(DaemonId::gateway("a", 3), 1, 0, ME)),
            Err(ControlError::UnknownSender)
        );
        assert_eq!(guard.len(), 2);
        guard.forget(&DaemonId::gateway("a", 1));
        guard.check(&header(DaemonId::gateway("a", 3), 1, 0, ME)).unwrap();
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn peers_are_independent() {
        let mut guard = ReplayGuard::new(ME, 10);
        guard.check(&header(DaemonId::gateway("a", 1), 5, 9, ME)).unwrap();
        assert_eq!(guard.check(&header(DaemonId::gateway("a", 2), 5, 1, ME)), Ok(()));
        assert_eq!(guard.check(&header(DaemonId::demux("a"), 5, 0, ME)), Ok(()));
    }
}
