//! The etcd driver of the election: a thread of its own, with a single-threaded tokio runtime,
//! that campaigns for the leader key, renews this member's lease, watches who leads, and
//! feeds every outcome into the shared [`Leadership`] (see the module docs of [`super`]).
//!
//! Every request has a deadline of a quarter of the lease TTL; a failure only marks etcd
//! unreachable (a leader's validity then runs out by itself). The leader key's value is the
//! member index; its create revision is the term. A leader's round is: read the key (or create
//! it), rewrite it on condition that it still carries this member's lease, renew the lease; a
//! standby's round reads the key and deletes it once its revision stood still for a TTL
//! ([`Silence`]). On a clean stop the lease is revoked, which deletes the key, so a standby
//! takes over at its next poll.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use braid_core::config::EtcdConfig;
use braid_core::daemon::StopFlag;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::silence::Silence;
use super::{Leader, Leadership};

/// How often a standby looks at the leader key.
const POLL: Duration = Duration::from_millis(100);

/// The key every member campaigns for.
pub fn leader_key(etcd: &EtcdConfig) -> String {
    format!("{}/leader", etcd.prefix)
}

/// The key of the operator's standing orders (see the module docs of [`super`]).
pub fn orders_key(etcd: &EtcdConfig) -> String {
    format!("{}/orders", etcd.prefix)
}

/// Starts the driver for member `me`; `origin` is the clock of `shared` (milliseconds since).
pub fn spawn(
    etcd: EtcdConfig,
    me: u16,
    shared: Arc<Mutex<Leadership>>,
    origin: Instant,
    stop: StopFlag,
) -> Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the etcd client runtime")?;
    Ok(std::thread::Builder::new().name("etcd".into()).spawn(move || {
        let mut driver = Driver {
            etcd,
            me,
            shared,
            origin,
            stop,
        };
        runtime.block_on(driver.run());
    })?)
}

struct Driver {
    etcd: EtcdConfig,
    me: u16,
    shared: Arc<Mutex<Leadership>>,
    origin: Instant,
    stop: StopFlag,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn update(&self, f: impl FnOnce(&mut Leadership)) {
        f(&mut self.shared.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis((self.etcd.lease_ttl_s * 1000 / 4).max(100))
    }

    async fn run(&mut self) {
        let mut logged_down = false;
        while !self.stop.is_stopped() {
            match self.session().await {
                Ok(()) => return,
                Err(error) => {
                    self.update(|l| {
                        l.unreachable();
                    });
                    if !logged_down {
                        tracing::error!(endpoints = ?self.etcd.endpoints, "etcd: {error:#}; retrying");
                        logged_down = true;
                    } else {
                        tracing::debug!("etcd: {error:#}");
                    }
                    tokio::time::sleep(POLL * 5).await;
                }
            }
        }
    }

    /// Stores the supervisor's new standing orders, on condition that the leader key is still
    /// the one this member created under `term` (a deposed leader's write fails).
    async fn store_orders(&self, client: &mut Client, key: &str, orders: &str, term: u64) -> Result<()> {
        let pending = self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .orders_to_store()
            .map(<[u8]>::to_vec);
        let Some(record) = pending else {
            return Ok(());
        };
        let store = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, term as i64)])
            .and_then([TxnOp::put(orders, record.clone(), None)]);
        let stored = tokio::time::timeout(self.deadline(), client.txn(store))
            .await
            .context("storing the standing orders timed out")?
            .context("storing the standing orders failed")?;
        if stored.succeeded() {
            self.update(|l| l.orders_stored(&record));
        }
        Ok(())
    }

    /// One connection and lease: campaigns, leads or watches until the stop flag (Ok) or an
    /// error that needs a new connection or lease.
    async fn session(&mut self) -> Result<()> {
        let deadline = self.deadline();
        let options = ConnectOptions::new()
            .with_connect_timeout(deadline)
            .with_timeout(deadline)
            .with_keep_alive(Duration::from_secs(2), deadline);
        let mut client = Client::connect(&self.etcd.endpoints, Some(options))
            .await
            .context("cannot connect")?;
        let ttl = i64::try_from(self.etcd.lease_ttl_s).unwrap_or(60);
        let lease = client
            .lease_grant(ttl, None)
            .await
            .context("cannot grant a lease")?
            .id();
        let (mut keeper, mut renewals) = client
            .lease_keep_alive(lease)
            .await
            .context("cannot keep the lease alive")?;
        let key = leader_key(&self.etcd);
        let orders = orders_key(&self.etcd);
        let ttl_ms = self.etcd.lease_ttl_s * 1000;
        let renew_every = Duration::from_millis(ttl_ms / 4);
        let mut was_leading = false;
        let mut silence = Silence::default();
        let result = async {
            while !self.stop.is_stopped() {
                let sent = self.now_ms();
                let campaign = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([
                        TxnOp::put(
                            key.clone(),
                            self.me.to_string(),
                            Some(PutOptions::new().with_lease(lease)),
                        ),
                        TxnOp::get(orders.clone(), None),
                    ])
                    .or_else([TxnOp::get(key.clone(), None), TxnOp::get(orders.clone(), None)]);
                let response = tokio::time::timeout(deadline, client.txn(campaign))
                    .await
                    .context("campaign timed out")?
                    .context("campaign failed")?;
                let stored_orders = response.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Get(get) => get
                        .kvs()
                        .iter()
                        .find(|kv| kv.key() == orders.as_bytes())
                        .map(|kv| (kv.mod_revision(), kv.value().to_vec())),
                    _ => None,
                });
                self.update(|l| l.observed_orders(stored_orders));
                let holder = if response.succeeded() {
                    let revision = response.header().map_or(0, |h| h.revision());
                    let term = revision as u64;
                    Some((Leader { member: self.me, term }, lease, revision))
                } else {
                    response.op_responses().into_iter().find_map(|op| match op {
                        TxnOpResponse::Get(get) => get.kvs().iter().find(|kv| kv.key() == key.as_bytes()).map(|kv| {
                            let member = kv
                                .value_str()
                                .ok()
                                .and_then(|v| v.parse::<u16>().ok())
                                .unwrap_or(u16::MAX);
                            (
                                Leader {
                                    member,
                                    term: kv.create_revision() as u64,
                                },
                                kv.lease(),
                                kv.mod_revision(),
                            )
                        }),
                        _ => None,
                    })
                };
                let leading = match holder {
                    Some((leader, held_with, _)) if leader.member == self.me && held_with == lease => {
                        // Ours: created just now, or still held with our lease. Rewrite it (the
                        // standbys time its revision), then renew the lease.
                        silence.reset();
                        if !response.succeeded() {
                            let rewrite = Txn::new()
                                .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
                                .and_then([TxnOp::put(
                                    key.clone(),
                                    self.me.to_string(),
                                    Some(PutOptions::new().with_lease(lease)),
                                )]);
                            let rewritten = tokio::time::timeout(deadline, client.txn(rewrite))
                                .await
                                .context("leader key rewrite timed out")?
                                .context("leader key rewrite failed")?;
                            if !rewritten.succeeded() {
                                self.update(Leadership::lost);
                                anyhow::bail!("the leader key no longer carries this member's lease");
                            }
                        }
                        tokio::time::timeout(deadline, keeper.keep_alive())
                            .await
                            .context("lease renewal timed out")?
                            .context("lease renewal failed")?;
                        let renewed = tokio::time::timeout(deadline, renewals.message())
                            .await
                            .context("lease renewal timed out")?
                            .context("lease renewal failed")?;
                        match renewed {
                            Some(r) if r.ttl() > 0 => {
                                self.update(|l| {
                                    if response.succeeded() || !l.holds_key() {
                                        l.won(leader.term, sent);
                                    } else {
                                        l.renewed(sent);
                                    }
                                });
                                self.store_orders(&mut client, &key, &orders, leader.term).await?;
                                true
                            }
                            _ => {
                                self.update(Leadership::lost);
                                anyhow::bail!("the lease expired");
                            }
                        }
                    }
                    Some((leader, _, revision)) => {
                        if let Some(revision) = silence.observe(revision, self.now_ms(), ttl_ms) {
                            let depose = Txn::new()
                                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                                .and_then([TxnOp::delete(key.clone(), None)]);
                            let deposed = tokio::time::timeout(deadline, client.txn(depose))
                                .await
                                .context("deleting a silent leader's key timed out")?
                                .context("deleting a silent leader's key failed")?;
                            silence.reset();
                            if deposed.succeeded() {
                                tracing::warn!(
                                    member = leader.member,
                                    term = leader.term,
                                    "the leader's key stood still for a lease TTL: deleted it to campaign"
                                );
                                self.update(|l| l.observed(None));
                                continue;
                            }
                        }
                        self.update(|l| l.observed(Some(leader)));
                        false
                    }
                    None => {
                        silence.reset();
                        self.update(|l| l.observed(None));
                        false
                    }
                };
                if leading != was_leading {
                    match holder {
                        Some((leader, _, _)) if leading => {
                            tracing::warn!(term = leader.term, "this controller leads the set")
                        }
                        _ => tracing::warn!("this controller no longer leads the set"),
                    }
                    was_leading = leading;
                }
                let pause = if leading { renew_every } else { POLL };
                tokio::time::sleep(pause.saturating_sub(Duration::from_millis(self.now_ms() - sent))).await;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            self.update(Leadership::lost);
        }
        // Stopping (or starting over): give the key up at once rather than after a TTL.
        let _ = tokio::time::timeout(deadline, client.lease_revoke(lease)).await;
        result
    }
}
