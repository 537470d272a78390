//! Leadership of a controller set: which member may act (push membership, start, kill and
//! restart daemons), and under which term.
//!
//! Design. A controller set elects its leader through etcd ([`etcd`] is the driver): a member
//! holding an etcd lease creates the leader key `<prefix>/leader` if it does not exist; the
//! etcd revision of that creation is the member's **term**, which only grows from one leader to
//! the next. The leader renews its lease and rewrites its key every quarter of its TTL; when
//! it dies, freezes or loses etcd, the rewrites stop, and a standby (polling every 100 ms) that
//! sees the key unchanged for a TTL deletes it and creates it under a newer term ([`silence`]:
//! sooner than etcd, which deletes the key once the lease runs out).
//!
//! [`Leadership`] is the pure core of that protocol, in milliseconds of one monotonic clock:
//!
//! * a member **leads** only while its last confirmed renewal (lease and key rewrite) is
//!   recent: until the moment it *sent* that renewal plus three quarters of the TTL. etcd keeps
//!   the lease at least a TTL after it *received* the renewal, and a standby deletes the key
//!   only a TTL after it read the last rewrite, so a leader stops acting before any standby can
//!   take over, whatever happens to it meanwhile (a frozen process that wakes up sees its validity gone
//!   before it does anything; a member cut off from etcd stops renewing and runs out);
//! * the term travels with every membership push, and daemons apply pushes in `(term, epoch)`
//!   order, so a deposed leader that still sends is refused once its successor has spoken
//!   (fencing; see `braid_core::control::client`).
//!
//! The operator's standing orders (pairs drained or removed) travel through etcd too: the
//! leader stores each new record under `<prefix>/orders`, fenced by its term (the write
//! succeeds only while its leader key stands), every member reads the key in each round, and a
//! member that takes over applies the last record stored, so a drain outlives the leader that
//! was ordered to do it. [`Leadership`] carries the records between the driver and the
//! supervisor.
//!
//! Without etcd the lone controller always leads, under term 0.

pub mod etcd;
pub mod silence;

/// Who leads, as one member sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Leader {
    /// The leading member's index.
    pub member: u16,
    /// Its term.
    pub term: u64,
}

/// One member's view of the election; see the module docs.
#[derive(Clone, Debug)]
pub struct Leadership {
    me: u16,
    ttl_ms: u64,
    /// Whether there is an election at all (false: a lone controller without etcd).
    elected: bool,
    /// This member's term and how long it may act, while it holds the leader key.
    mine: Option<(u64, u64)>,
    /// The leader last seen in etcd (this member or another).
    seen: Option<Leader>,
    /// Whether the last exchange with etcd succeeded.
    store_reachable: bool,
    /// Standing orders the supervisor wants stored, not yet confirmed stored.
    orders_to_store: Option<Vec<u8>>,
    /// The standing orders last read from etcd, with their modification revision.
    stored_orders: Option<(i64, Vec<u8>)>,
}

impl Leadership {
    /// A lone controller: always the leader, term 0.
    pub fn lone() -> Self {
        Leadership {
            me: 0,
            ttl_ms: 0,
            elected: false,
            mine: None,
            seen: Some(Leader { member: 0, term: 0 }),
            store_reachable: true,
            orders_to_store: None,
            stored_orders: None,
        }
    }

    /// Member `me` of a set electing through a store whose leases last `ttl_ms`.
    pub fn elected(me: u16, ttl_ms: u64) -> Self {
        Leadership {
            me,
            ttl_ms,
            elected: true,
            mine: None,
            seen: None,
            store_reachable: false,
            orders_to_store: None,
            stored_orders: None,
        }
    }

    /// How long after sending a renewal this member may still act.
    fn validity_ms(&self) -> u64 {
        self.ttl_ms - self.ttl_ms / 4
    }

    /// This member created the leader key under `term`, in a request sent at `sent_ms`.
    pub fn won(&mut self, term: u64, sent_ms: u64) {
        self.mine = Some((term, sent_ms + self.validity_ms()));
        self.seen = Some(Leader { member: self.me, term });
        self.store_reachable = true;
    }

    /// etcd confirmed the renewal of this member's lease sent at `sent_ms`.
    pub fn renewed(&mut self, sent_ms: u64) {
        let validity = self.validity_ms();
        if let Some((_, until)) = self.mine.as_mut() {
            *until = (*until).max(sent_ms + validity);
        }
        self.store_reachable = true;
    }

    /// This member's lease or key is gone (expired, revoked, deleted): it no longer leads.
    pub fn lost(&mut self) {
        self.mine = None;
        if self.seen.is_some_and(|l| l.member == self.me) {
            self.seen = None;
        }
    }

    /// etcd shows `leader` (or nobody) holding the leader key.
    pub fn observed(&mut self, leader: Option<Leader>) {
        self.store_reachable = true;
        if leader.is_none_or(|l| l.member != self.me) {
            self.mine = None;
        }
        self.seen = leader;
    }

    /// An exchange with etcd failed or timed out.
    pub fn unreachable(&mut self) {
        self.store_reachable = false;
    }

    /// The term under which this member may act at `now_ms`, if it leads.
    pub fn leading(&self, now_ms: u64) -> Option<u64> {
        if !self.elected {
            return Some(0);
        }
        self.mine.and_then(|(term, until)| (now_ms < until).then_some(term))
    }

    /// Whether this member holds the key at all (it may have to renew before it can act).
    pub fn holds_key(&self) -> bool {
        self.mine.is_some()
    }

    /// The leader as last seen (this member only while it may act).
    pub fn leader(&self, now_ms: u64) -> Option<Leader> {
        match self.seen {
            Some(l) if l.member == self.me && self.elected => {
                self.leading(now_ms).map(|term| Leader { member: self.me, term })
            }
            other => other,
        }
    }

    /// The leader's new standing orders, to be stored (the latest replaces any not yet stored).
    pub fn store_orders(&mut self, record: Vec<u8>) {
        self.orders_to_store = Some(record);
    }

    /// The orders waiting to be stored, if any.
    pub fn orders_to_store(&self) -> Option<&[u8]> {
        self.orders_to_store.as_deref()
    }

    /// `record` was stored: it no longer waits (unless newer orders replaced it meanwhile).
    pub fn orders_stored(&mut self, record: &[u8]) {
        if self.orders_to_store.as_deref() == Some(record) {
            self.orders_to_store = None;
        }
    }

    /// etcd holds `record` under the orders key, written at `revision` (`None`: no record).
    pub fn observed_orders(&mut self, stored: Option<(i64, Vec<u8>)>) {
        self.stored_orders = stored;
    }

    /// The standing orders last read from etcd.
    pub fn stored_orders(&self) -> Option<&[u8]> {
        self.stored_orders.as_ref().map(|(_, r)| r.as_slice())
    }

    /// This member's index.
    pub fn me(&self) -> u16 {
        self.me
    }

    /// Whether there is an election (a controller set on etcd).
    pub fn is_elected(&self) -> bool {
        self.elected
    }

    /// Whether the last exchange with etcd succeeded (always true without etcd).
    pub fn store_reachable(&self) -> bool {
        self.store_reachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_controller_always_leads_under_term_zero() {
        let l = Leadership::lone();
        assert_eq!(l.leading(0), Some(0));
        assert_eq!(l.leading(u64::MAX - 1), Some(0));
        assert_eq!(l.leader(5), Some(Leader { member: 0, term: 0 }));
    }

    #[test]
    fn a_member_leads_only_until_three_quarters_of_a_ttl_after_its_last_renewal_was_sent() {
        let mut l = Leadership::elected(1, 2_000);
        assert_eq!(l.leading(0), None, "nobody leads before winning");
        l.won(42, 1_000);
        assert_eq!(l.leading(1_000), Some(42));
        assert_eq!(l.leading(2_499), Some(42));
        assert_eq!(l.leading(2_500), None, "validity ends at sent + 3/4 ttl");
        assert!(l.holds_key());
        // A renewal sent at 2_400 and confirmed late still extends from when it was sent.
        l.renewed(2_400);
        assert_eq!(l.leading(3_899), Some(42));
        assert_eq!(l.leading(3_900), None);
        // An older renewal confirmed after a newer one never shortens validity.
        l.renewed(2_000);
        assert_eq!(l.leading(3_899), Some(42));
    }

    #[test]
    fn a_frozen_leader_that_wakes_up_does_not_act() {
        let mut l = Leadership::elected(0, 1_000);
        l.won(7, 0);
        l.renewed(250);
        l.renewed(500);
        // SIGSTOP at 600 for 5 s: on waking, before any renewal, it may not act.
        assert_eq!(l.leading(5_600), None);
        assert_eq!(l.leader(5_600), None, "nor does it claim to lead in status");
    }

    #[test]
    fn seeing_another_leader_or_losing_the_key_ends_leadership_at_once() {
        let mut l = Leadership::elected(0, 2_000);
        l.won(10, 0);
        l.observed(Some(Leader { member: 2, term: 12 }));
        assert_eq!(l.leading(1), None);
        assert_eq!(l.leader(1), Some(Leader { member: 2, term: 12 }));

        let mut l = Leadership::elected(0, 2_000);
        l.won(10, 0);
        l.lost();
        assert_eq!(l.leading(1), None);
        assert_eq!(l.leader(1), None);
        // Renewals arriving after the loss do not bring it back.
        l.renewed(5);
        assert_eq!(l.leading(6), None);
    }

    #[test]
    fn a_standby_reports_the_leader_it_saw_and_whether_etcd_answers() {
        let mut l = Leadership::elected(1, 2_000);
        assert!(!l.store_reachable());
        l.observed(Some(Leader { member: 0, term: 3 }));
        assert!(l.store_reachable());
        assert_eq!(l.leader(0), Some(Leader { member: 0, term: 3 }));
        assert_eq!(l.leading(0), None);
        l.unreachable();
        assert!(!l.store_reachable());
        l.observed(None);
        assert_eq!(l.leader(0), None);
    }

    #[test]
    fn orders_wait_until_stored_and_newer_orders_replace_older_ones() {
        let mut l = Leadership::elected(0, 1_000);
        assert_eq!(l.orders_to_store(), None);
        l.store_orders(b"drain 2".to_vec());
        l.store_orders(b"drain 2, remove 3".to_vec());
        assert_eq!(l.orders_to_store(), Some(&b"drain 2, remove 3"[..]));
        // Storing the older record (in flight when the newer came) leaves the newer waiting.
        l.orders_stored(b"drain 2");
        assert_eq!(l.orders_to_store(), Some(&b"drain 2, remove 3"[..]));
        l.orders_stored(b"drain 2, remove 3");
        assert_eq!(l.orders_to_store(), None);
        l.observed_orders(Some((40, b"drain 2, remove 3".to_vec())));
        assert_eq!(l.stored_orders(), Some(&b"drain 2, remove 3"[..]));
        l.observed_orders(None);
        assert_eq!(l.stored_orders(), None);
    }
}
