//! Leader election through a `coordination.k8s.io/v1` Lease, with
//! client-go's algorithm (kube-runtime 5 has none).
//!
//! ```text
//!            every retry period (candidates: plus jitter)
//!  Elector ──GET Lease──► Observer::observe ──► decide() ──► create / replace (resourceVersion)
//!     │                    (when did the record          │        409: another won the race
//!     │                     last change, by our clock)    ▼
//!     └──────────────────────────────────────────► Leadership (valid until
//!                                                   last successful renew + renew deadline)
//! ```
//!
//! The rules, client-go's:
//!
//! - A candidate takes the Lease when it has no holder, or when the record
//!   has not changed for `leaseDurationSeconds` **by the candidate's own
//!   monotonic clock**, counted from when it first saw the record as it is.
//!   The holder's `renewTime` is written for people and other tools but not
//!   trusted for the decision: comparing another machine's wall clock with
//!   ours would let clock skew make two leaders. The price: a candidate that
//!   starts while a dead leader's record is still there waits one lease
//!   duration before taking over (a leader that exits cleanly releases the
//!   Lease, and the others take it at their next try).
//! - Every write carries the resourceVersion read, so of two candidates
//!   acting on the same record only one succeeds (409 Conflict for the
//!   other).
//! - `leaseTransitions` goes up by one whenever the holder changes;
//!   `acquireTime` is when the current holder took it.
//! - A leader counts its term from the *start* of its last successful
//!   renewal and stops acting `renewDeadline` after that, whether or not it
//!   could reach the API server since. Another candidate first sees the
//!   renewed record after it was written, so after the start of that
//!   renewal, and waits `leaseDuration` (longer than `renewDeadline`) from
//!   then: the old leader has stopped before anyone can take over, with
//!   `leaseDuration - renewDeadline` to spare for clocks that run at
//!   slightly different rates. [`Leadership::lost`] fires on that deadline
//!   by itself, so a starved election task cannot extend a term.
//! - On shutdown the leader, once it has stopped acting, clears
//!   `holderIdentity` ([`Elector::release`]) so that a standby takes over at
//!   its next try instead of a lease duration later.
//!
//! [`decide`], [`Observer`] and [`still_leading`] are the whole decision,
//! with no IO; [`Elector`] does the API calls around them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// The three durations of an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease holds without renewal; candidates wait this long
    /// after the record last changed before taking it over.
    pub lease_duration: Duration,
    /// How long a leader keeps acting after its last successful renewal
    /// began; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the Lease is tried (candidates) or renewed (the leader).
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's and kube-controller-manager's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Jitter added to a candidate's retry period, as a fraction of it
/// (client-go's `JitterFactor`): candidates started together do not all
/// hit the API server at the same moment.
const JITTER: f64 = 1.2;

impl Timing {
    /// Checks the relations the safety argument needs (client-go's checks).
    pub fn validate(&self) -> Result<(), LeaseError> {
        let bad = |what: String| Err(LeaseError::Timing(what));
        if self.retry_period.is_zero() {
            return bad("--retry-period must be more than 0".into());
        }
        if self.lease_duration <= self.renew_deadline {
            return bad(format!(
                "--lease-duration ({:?}) must be longer than --renew-deadline ({:?}): a leader must stop acting before another may take over",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline.as_secs_f64() <= JITTER * self.retry_period.as_secs_f64() {
            return bad(format!(
                "--renew-deadline ({:?}) must be longer than 1.2 × --retry-period ({:?}), or a leader gets at most one try to renew",
                self.renew_deadline, self.retry_period
            ));
        }
        Ok(())
    }

    /// `leaseDurationSeconds`: whole seconds, rounded up so that a
    /// sub-second duration still waits at least as long as asked, and at
    /// least 1 (the API server refuses 0).
    pub fn lease_duration_seconds(&self) -> i32 {
        let secs = self.lease_duration.as_secs_f64().ceil().max(1.0);
        secs.min(f64::from(i32::MAX)) as i32
    }
}

/// What goes wrong with the election.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The durations do not allow a safe election.
    #[error("leader election: {0}")]
    Timing(String),
    /// The API server refused or failed a request.
    #[error("Lease {namespace}/{name}: cannot {action}: {source}")]
    Api {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What was tried (`read`, `create`, `update`).
        action: &'static str,
        /// The client's error (boxed: it is large, and rare).
        #[source]
        source: Box<kube::Error>,
    },
}

/// The election's view of a Lease (client-go's `LeaderElectionRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// `holderIdentity`; empty: nobody holds it.
    pub holder: String,
    /// `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// `acquireTime`.
    pub acquire_time: Option<Timestamp>,
    /// `renewTime`.
    pub renew_time: Option<Timestamp>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl Record {
    /// Reads a Lease's spec; absent fields are empty or zero.
    pub fn from_spec(spec: Option<&LeaseSpec>) -> Record {
        let Some(spec) = spec else {
            return Record::default();
        };
        Record {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// The Lease spec that says this record (fields petrel does not use,
    /// such as `strategy`, are kept from `base`).
    pub fn to_spec(&self, base: Option<&LeaseSpec>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!self.holder.is_empty()).then(|| self.holder.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..base.cloned().unwrap_or_default()
        }
    }

    /// How long the record holds, from when it was seen.
    fn duration(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.lease_duration_seconds).unwrap_or(0))
    }
}

/// Remembers the last record seen and when it was first seen as it is, by
/// this process's monotonic clock: how long a holder has gone without
/// renewing is measured here, never from its timestamps.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(Record, Instant)>,
}

impl Observer {
    /// Takes in the record just read at `now`; returns when it was first
    /// seen in this form (`now` when it changed or is new).
    pub fn observe(&mut self, record: &Record, now: Instant) -> Instant {
        match &self.last {
            Some((last, at)) if last == record => *at,
            _ => {
                self.last = Some((record.clone(), now));
                now
            }
        }
    }

    /// Forgets the record: the next one counts as new (after this process
    /// wrote one itself, or the Lease was deleted).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// What to do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it with this record.
    Create(Record),
    /// Take the Lease over (it is free or expired): write this record, with
    /// the resourceVersion read.
    Acquire(Record),
    /// We hold it: write this record, with the resourceVersion read.
    Renew(Record),
    /// Another holder's lease is valid.
    Wait {
        /// Who holds it.
        holder: String,
        /// How long until it expires, unless renewed.
        expires_in: Duration,
    },
}

/// The decision for `identity`, given the Lease's record (`None`: there is
/// no Lease), when that record was first seen as it is (`observed_at`),
/// the monotonic `now`, and the wall-clock `wall_now` for the timestamps
/// written.
pub fn decide(
    current: Option<&Record>,
    observed_at: Instant,
    now: Instant,
    wall_now: Timestamp,
    identity: &str,
    timing: &Timing,
) -> Decision {
    let ours = |acquire_time, transitions| Record {
        holder: identity.to_string(),
        lease_duration_seconds: timing.lease_duration_seconds(),
        acquire_time,
        renew_time: Some(wall_now),
        transitions,
    };
    let Some(current) = current else {
        return Decision::Create(ours(Some(wall_now), 0));
    };
    if current.holder == identity {
        return Decision::Renew(ours(
            current.acquire_time.or(Some(wall_now)),
            current.transitions,
        ));
    }
    if !current.holder.is_empty() {
        let expires = observed_at + current.duration();
        if now < expires {
            return Decision::Wait {
                holder: current.holder.clone(),
                expires_in: expires - now,
            };
        }
    }
    // Free or expired: a new holder, one more transition.
    Decision::Acquire(ours(Some(wall_now), current.transitions.saturating_add(1)))
}

/// Whether a leader whose last successful renewal began at `renewed_at`
/// may still act at `now`.
pub fn still_leading(renewed_at: Instant, now: Instant, timing: &Timing) -> bool {
    now < renewed_at + timing.renew_deadline
}

/// The record that gives the Lease up (client-go's release): no holder, a
/// one-second duration, the transition count kept.
pub fn released(current: &Record, wall_now: Timestamp) -> Record {
    Record {
        holder: String::new(),
        lease_duration_seconds: 1,
        acquire_time: Some(wall_now),
        renew_time: Some(wall_now),
        transitions: current.transitions,
    }
}

/// Whether this process may act as the leader now, shared between the
/// election and the tasks that only the leader runs.
///
/// Validity is a deadline, not a flag: [`Leadership::is_leading`] and
/// [`Leadership::lost`] compare it with the clock, so leadership ends on
/// time even when the election task is late to notice.
#[derive(Debug, Clone)]
pub struct Leadership {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Without leader election: always leading.
    always: bool,
    /// Leading until then; `None`: not leading.
    until: Mutex<Option<Instant>>,
    /// Bumped on every change of `until`, to wake waiters.
    changed: watch::Sender<u64>,
    /// The last holder seen (ourselves included), for logs and /readyz.
    holder: Mutex<Option<String>>,
}

impl Leadership {
    fn with(always: bool) -> Self {
        Leadership {
            inner: Arc::new(Shared {
                always,
                until: Mutex::new(None),
                changed: watch::channel(0).0,
                holder: Mutex::new(None),
            }),
        }
    }

    /// Leadership for a process that runs without election: always leading.
    pub fn always() -> Self {
        Self::with(true)
    }

    /// Not leading until an [`Elector`] says so.
    pub fn elected() -> Self {
        Self::with(false)
    }

    fn until(&self) -> Option<Instant> {
        *self
            .inner
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this process may act as the leader now.
    pub fn is_leading(&self) -> bool {
        self.inner.always || self.until().is_some_and(|t| Instant::now() < t)
    }

    /// The holder the election last saw (`None` before the first read).
    pub fn holder(&self) -> Option<String> {
        self.inner
            .holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_holder(&self, holder: &str) {
        *self
            .inner
            .holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(holder.to_string());
    }

    /// Waits until this process leads.
    pub async fn acquired(&self) {
        let mut rx = self.inner.changed.subscribe();
        while !self.is_leading() {
            if rx.changed().await.is_err() {
                // The election is gone: nothing will make us lead.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until this process no longer leads: the election says so, or
    /// the deadline of its last renewal passes. Never returns without
    /// election.
    pub async fn lost(&self) {
        if self.inner.always {
            return std::future::pending().await;
        }
        let mut rx = self.inner.changed.subscribe();
        loop {
            let Some(until) = self.until() else { return };
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    fn set_until(&self, until: Option<Instant>) {
        *self
            .inner
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
        self.inner.changed.send_modify(|g| *g += 1);
    }
}

/// Runs the election for one identity on one Lease.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
    observer: Observer,
    leadership: Leadership,
    /// Something was read from the API server at least once (for /readyz).
    contact: watch::Sender<bool>,
}

/// The outcome of one try.
enum Tried {
    /// We hold the Lease; the try began then.
    Held,
    /// Someone else does (or won the race).
    NotHeld,
}

impl Elector {
    /// An election on the Lease `namespace/name` as `identity`, reporting
    /// to `leadership` (made with [`Leadership::elected`]).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
        leadership: Leadership,
    ) -> Result<Self, LeaseError> {
        timing.validate()?;
        Ok(Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observer: Observer::default(),
            leadership,
            contact: watch::channel(false).0,
        })
    }

    /// Becomes true once the Lease could be read (leader or standby: the
    /// API server answers).
    pub fn contact(&self) -> watch::Receiver<bool> {
        self.contact.subscribe()
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            action,
            source: Box::new(source),
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_once(&mut self) -> Result<Tried, LeaseError> {
        let lease = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error("read", e))?;
        self.contact.send_replace(true);
        let now = Instant::now();
        let record = lease.as_ref().map(|l| Record::from_spec(l.spec.as_ref()));
        let observed_at = match &record {
            Some(r) => self.observer.observe(r, now),
            None => {
                self.observer.reset();
                now
            }
        };
        let decision = decide(
            record.as_ref(),
            observed_at,
            now,
            Timestamp::now(),
            &self.identity,
            &self.timing,
        );
        let (new, create) = match decision {
            Decision::Wait { holder, expires_in } => {
                tracing::debug!(%holder, ?expires_in, "the Lease is held by another");
                self.leadership.set_holder(&holder);
                return Ok(Tried::NotHeld);
            }
            Decision::Create(r) => (r, true),
            Decision::Acquire(r) | Decision::Renew(r) => (r, false),
        };
        let written = if create {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(new.to_spec(None)),
            };
            self.api.create(&PostParams::default(), &lease).await
        } else {
            // `lease` is Some here: only Create comes from no Lease. The
            // resourceVersion read travels along, so a concurrent writer
            // makes this fail with 409 rather than be overwritten.
            let mut lease = lease.unwrap_or_default();
            lease.spec = Some(new.to_spec(lease.spec.as_ref()));
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
        };
        match written {
            Ok(_) => {
                self.observer.observe(&new, Instant::now());
                self.leadership.set_holder(&self.identity);
                Ok(Tried::Held)
            }
            // Another candidate wrote first (AlreadyExists or Conflict).
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("another candidate wrote the Lease first");
                self.observer.reset();
                Ok(Tried::NotHeld)
            }
            Err(e) => Err(self.api_error(if create { "create" } else { "update" }, e)),
        }
    }

    /// Tries, renews and gives up the Lease until `stop` becomes true;
    /// then stops leading (without releasing: see [`Elector::release`]).
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        let mut leading_since: Option<Instant> = None;
        let mut renewed_at: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let started = Instant::now();
            // A try may take no longer than the term has left (or, for a
            // candidate, one renew deadline): a hung request must not keep
            // the loop from noticing the deadline.
            let limit = match renewed_at {
                Some(r) => (r + self.timing.renew_deadline).saturating_duration_since(started),
                None => self.timing.renew_deadline,
            };
            let result = tokio::select! {
                r = tokio::time::timeout(limit, self.try_once()) => r,
                _ = stop.changed() => break,
            };
            match result {
                Ok(Ok(Tried::Held)) => {
                    renewed_at = Some(started);
                    self.leadership
                        .set_until(Some(started + self.timing.renew_deadline));
                    if leading_since.is_none() {
                        leading_since = Some(started);
                        tracing::info!(
                            identity = %self.identity,
                            lease = %format!("{}/{}", self.namespace, self.name),
                            "started leading"
                        );
                    }
                }
                Ok(Ok(Tried::NotHeld)) => {
                    if leading_since.take().is_some() {
                        tracing::warn!(
                            holder = ?self.leadership.holder(),
                            "lost the Lease to another holder; stopped leading"
                        );
                        self.leadership.set_until(None);
                    }
                    renewed_at = None;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election try failed"),
                Err(_) => tracing::warn!(?limit, "leader election try timed out"),
            }
            if let Some(r) = renewed_at
                && !still_leading(r, Instant::now(), &self.timing)
            {
                tracing::error!(
                    renew_deadline = ?self.timing.renew_deadline,
                    "could not renew the Lease within the renew deadline; stopped leading"
                );
                self.leadership.set_until(None);
                leading_since = None;
                renewed_at = None;
            }
            let wait = if renewed_at.is_some() {
                self.timing.retry_period
            } else {
                jittered(self.timing.retry_period)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
        }
        self.leadership.set_until(None);
    }

    /// Gives the Lease up if this process holds it, so a standby takes
    /// over at its next try. Call only once nothing acts as the leader any
    /// more.
    pub async fn release(&mut self) -> Result<bool, LeaseError> {
        self.leadership.set_until(None);
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error("read", e))?
        else {
            return Ok(false);
        };
        let record = Record::from_spec(lease.spec.as_ref());
        if record.holder != self.identity {
            return Ok(false);
        }
        let new = released(&record, Timestamp::now());
        lease.spec = Some(new.to_spec(lease.spec.as_ref()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.api_error("update", e))?;
        tracing::info!(identity = %self.identity, "released the Lease");
        Ok(true)
    }
}

/// `base` plus a random part of up to [`JITTER`] times it.
fn jittered(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A fresh RandomState is randomly keyed: random enough for jitter,
    // without a dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    base + base.mul_f64(JITTER * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing::default()
    }

    fn wall(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("in range")
    }

    fn held_by(holder: &str, transitions: i32) -> Record {
        Record {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(wall(100)),
            renew_time: Some(wall(110)),
            transitions,
        }
    }

    #[test]
    fn no_lease_is_created_as_ours() {
        let t0 = Instant::now();
        let d = decide(None, t0, t0, wall(200), "a", &timing());
        assert_eq!(
            d,
            Decision::Create(Record {
                holder: "a".into(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(200)),
                renew_time: Some(wall(200)),
                transitions: 0,
            })
        );
    }

    #[test]
    fn a_valid_lease_of_another_is_waited_for() {
        let t0 = Instant::now();
        let current = held_by("b", 3);
        let d = decide(
            Some(&current),
            t0,
            t0 + Duration::from_secs(10),
            wall(200),
            "a",
            &timing(),
        );
        assert_eq!(
            d,
            Decision::Wait {
                holder: "b".into(),
                expires_in: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_one_more_transition() {
        let t0 = Instant::now();
        let current = held_by("b", 3);
        let d = decide(
            Some(&current),
            t0,
            t0 + Duration::from_secs(15),
            wall(200),
            "a",
            &timing(),
        );
        let Decision::Acquire(r) = d else {
            panic!("expected Acquire, got {d:?}")
        };
        assert_eq!(r.holder, "a");
        assert_eq!(r.transitions, 4);
        assert_eq!(r.acquire_time, Some(wall(200)));
        assert_eq!(r.renew_time, Some(wall(200)));
    }

    #[test]
    fn expiry_is_judged_by_our_clock_not_the_holders_timestamps() {
        // The holder's renewTime is far in the past by our wall clock (its
        // clock lags, or ours runs ahead); what counts is that we saw the
        // record change just now.
        let t0 = Instant::now();
        let mut current = held_by("b", 0);
        current.renew_time = Some(wall(0));
        let d = decide(Some(&current), t0, t0, wall(1_000_000), "a", &timing());
        assert!(matches!(d, Decision::Wait { .. }), "{d:?}");
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let current = released(&held_by("b", 5), wall(150));
        assert_eq!(current.holder, "");
        assert_eq!(current.transitions, 5, "release keeps the count");
        let d = decide(Some(&current), t0, t0, wall(151), "a", &timing());
        let Decision::Acquire(r) = d else {
            panic!("expected Acquire, got {d:?}")
        };
        assert_eq!((r.holder.as_str(), r.transitions), ("a", 6));
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let current = held_by("a", 7);
        // Even long after it would have expired for others: it is ours.
        let d = decide(
            Some(&current),
            t0,
            t0 + Duration::from_secs(60),
            wall(300),
            "a",
            &timing(),
        );
        assert_eq!(
            d,
            Decision::Renew(Record {
                holder: "a".into(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(100)),
                renew_time: Some(wall(300)),
                transitions: 7,
            })
        );
    }

    #[test]
    fn the_observer_dates_a_record_from_its_last_change() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        let r1 = held_by("b", 0);
        assert_eq!(o.observe(&r1, t0), t0);
        assert_eq!(o.observe(&r1, t0 + Duration::from_secs(5)), t0);
        let mut r2 = r1.clone();
        r2.renew_time = Some(wall(112));
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(o.observe(&r2, t1), t1, "a renewal is a change");
        o.reset();
        let t2 = t0 + Duration::from_secs(7);
        assert_eq!(o.observe(&r2, t2), t2);
    }

    #[test]
    fn a_silent_holder_expires_one_lease_duration_after_its_last_renewal_was_seen() {
        let t0 = Instant::now();
        let timing = timing();
        let mut o = Observer::default();
        let r = held_by("b", 0);
        let seen = o.observe(&r, t0);
        for secs in [2, 8, 14] {
            let now = t0 + Duration::from_secs(secs);
            let at = o.observe(&r, now);
            assert!(matches!(
                decide(Some(&r), at, now, wall(0), "a", &timing),
                Decision::Wait { .. }
            ));
        }
        let now = seen + timing.lease_duration;
        let at = o.observe(&r, now);
        assert!(matches!(
            decide(Some(&r), at, now, wall(0), "a", &timing),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn a_leader_stops_before_a_candidate_may_take_over() {
        // The leader's renewal begins at t0 and is written a little later;
        // the candidate sees the record after that. The leader's last
        // moment must come before the candidate's first.
        let timing = timing();
        let t0 = Instant::now();
        let seen_by_candidate = t0 + Duration::from_millis(300);
        let leader_last = t0 + timing.renew_deadline;
        assert!(still_leading(
            t0,
            leader_last - Duration::from_millis(1),
            &timing
        ));
        assert!(!still_leading(t0, leader_last, &timing));
        let r = held_by("leader", 0);
        let before = leader_last;
        assert!(matches!(
            decide(Some(&r), seen_by_candidate, before, wall(0), "c", &timing),
            Decision::Wait { .. }
        ));
        let first_takeover = seen_by_candidate + timing.lease_duration;
        assert!(first_takeover > leader_last);
    }

    #[test]
    fn timing_is_checked() {
        assert!(Timing::default().validate().is_ok());
        let t = Timing {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert!(
            t.validate()
                .expect_err("equal")
                .to_string()
                .contains("--lease-duration")
        );
        let t = Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_secs(2),
        };
        assert!(
            t.validate()
                .expect_err("one try")
                .to_string()
                .contains("--retry-period")
        );
        let t = Timing {
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        };
        assert!(t.validate().is_ok());
        assert_eq!(t.lease_duration_seconds(), 3, "rounded up");
    }

    #[test]
    fn records_round_trip_through_the_lease_spec() {
        let r = held_by("a", 2);
        let spec = r.to_spec(None);
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(Record::from_spec(Some(&spec)), r);
        let free = released(&r, wall(5));
        let spec = free.to_spec(Some(&spec));
        assert_eq!(spec.holder_identity, None);
        assert_eq!(Record::from_spec(Some(&spec)).holder, "");
        assert_eq!(Record::from_spec(None), Record::default());
    }

    #[tokio::test]
    async fn leadership_ends_at_its_deadline_by_itself() {
        let l = Leadership::elected();
        assert!(!l.is_leading());
        l.set_until(Some(Instant::now() + Duration::from_millis(50)));
        assert!(l.is_leading());
        tokio::time::timeout(Duration::from_secs(2), l.lost())
            .await
            .expect("lost() fires at the deadline without the election's help");
        assert!(!l.is_leading());
        assert!(Leadership::always().is_leading());
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let base = Duration::from_secs(2);
        for _ in 0..100 {
            let j = jittered(base);
            assert!(j >= base && j <= base.mul_f64(1.0 + JITTER), "{j:?}");
        }
    }
}
