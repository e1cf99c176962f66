//! The usage state and the check itself: which limits apply, how much of each
//! is used, which one decides, and the reservation that goes with it.
//!
//! "Strictest" limit: every limit on the checked metric that applies to the
//! caller (the tenant's, the organization's, the user's) is evaluated; the
//! call is allowed only if every one of them allows it, and the limit that
//! answers (the "deciding" limit, whose figures fill `current_usage`,
//! `max_limit`, `remaining`, `resets_at`) is the one with the least
//! remaining budget. Ties go to the limit that resets later (the caller
//! must wait for that one), then to the narrower subject (user before
//! organization before tenant). Since every limit sees the same request, the
//! least remaining is also the first to deny.
//!
//! Nothing here touches ClickHouse: counters and limits are in memory, kept
//! current by `refresh`. "Now" comes from [`Clock`], which tests can pin.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::counters::{Counters, SubjectKey, Totals};
use super::limits::{Limit, LimitSet, Metric, Subject};
use super::period::{PeriodSpec, Window};
use super::reservations::{Hold, Holds};
use super::settings::UsageSettings;
use super::shared_holds::SharedHolds;
use crate::calendar::minute_of;
use crate::error::ApiError;
use crate::metrics::{Metrics, UsageMetrics};

/// Where "now" comes from: the system clock, or a pinned instant (tests).
#[derive(Debug)]
pub struct Clock {
    pinned_ms: AtomicI64,
}

const UNPINNED: i64 = i64::MIN;

impl Default for Clock {
    fn default() -> Self {
        Self { pinned_ms: AtomicI64::new(UNPINNED) }
    }
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self.pinned_ms.load(Ordering::Acquire) {
            UNPINNED => Utc::now(),
            ms => DateTime::from_timestamp_millis(ms).expect("pinned instant in range"),
        }
    }

    /// Pins "now" to `t` until pinned again or unpinned.
    pub fn pin(&self, t: DateTime<Utc>) {
        self.pinned_ms.store(t.timestamp_millis(), Ordering::Release);
    }

    pub fn unpin(&self) {
        self.pinned_ms.store(UNPINNED, Ordering::Release);
    }
}

/// Everything the usage endpoints share.
pub struct UsageState {
    pub(crate) db: clickhouse::Client,
    pub(crate) cfg: UsageSettings,
    pub(crate) counters: RwLock<Counters>,
    pub(crate) limits: RwLock<LimitSet>,
    /// Bumped by every limit write, so a reconcile that read the table
    /// before a write does not install the older set.
    pub(crate) limits_generation: AtomicU64,
    pub(crate) holds: Holds,
    /// Reservations in Valkey, shared by every replica (`--valkey-url`);
    /// `None`: [`Self::holds`], in this process only.
    pub(crate) shared: Option<SharedHolds>,
    /// Fingerprint of `plan_limits` at the last limits load.
    pub(crate) limits_version: std::sync::Mutex<Option<crate::queries::limits::LimitsVersion>>,
    /// Woken when another replica announces a limit write (Valkey pub/sub).
    pub(crate) limits_changed: Arc<tokio::sync::Notify>,
    /// Serialises limit writes of this process (dense versions, If-Match).
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    pub clock: Clock,
    /// Clock time (ms) at which the data of the last successful refresh was
    /// read; `UNPINNED` until the first full load.
    as_of_ms: AtomicI64,
    limits_loaded: AtomicBool,
    started: AtomicBool,
    pub(crate) metrics: UsageMetrics,
    /// Producer of consumed usage (`None`: no brokers, consuming is 503).
    recorder: Option<super::recorder::Recorder>,
    /// Answers of recorded usage, replayed to retries.
    pub(crate) replays: super::replays::Replays,
}

impl std::fmt::Debug for UsageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageState").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// One limit evaluated for one request.
#[derive(Debug, Clone)]
pub struct LimitCheck {
    pub limit: Limit,
    pub window: Window,
    /// Consumed in the period (billable usage in ClickHouse), metric units.
    pub used: i128,
    /// Held by other live reservations.
    pub held: i128,
    /// `max - used - held`, never below zero.
    pub remaining: i128,
    pub allowed: bool,
    pub resets_at: DateTime<Utc>,
    /// `used + held + requested` reached the soft threshold.
    pub soft_reached: bool,
}

/// What a check asks.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub organization_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub metric: Metric,
    pub units: i128,
    pub reserve: bool,
    pub execution_id: Option<Uuid>,
    /// With `reserve`: the id of the hold (a consume passes its event id, so
    /// a retry finds the same hold); `None`: a new one.
    pub reservation_id: Option<Uuid>,
}

impl CheckRequest {
    /// The reservation id and the execution whose usage ends the hold
    /// (the one named, else the reservation id).
    fn hold_ids(&self) -> (Uuid, Uuid) {
        let reservation_id = self.reservation_id.unwrap_or_else(Uuid::new_v4);
        (reservation_id, self.execution_id.unwrap_or(reservation_id))
    }
}

/// The answer to a check: every applicable limit, the deciding one first.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub allowed: bool,
    pub checks: Vec<LimitCheck>,
    pub reservation: Option<Hold>,
    pub now: DateTime<Utc>,
    pub as_of: DateTime<Utc>,
}

impl CheckOutcome {
    pub fn staleness_ms(&self) -> i64 {
        (self.now - self.as_of).num_milliseconds().max(0)
    }
}

impl UsageState {
    /// Built once per app from the database-bound client and the settings.
    /// Loads nothing yet: [`UsageState::start`] spawns the refresher.
    pub fn new(db: clickhouse::Client, cfg: UsageSettings, metrics: &Metrics) -> Self {
        Self {
            db,
            cfg,
            counters: RwLock::new(Counters::default()),
            limits: RwLock::new(LimitSet::default()),
            limits_generation: AtomicU64::new(0),
            holds: Holds::default(),
            shared: None,
            limits_version: std::sync::Mutex::new(None),
            limits_changed: Arc::new(tokio::sync::Notify::new()),
            write_lock: tokio::sync::Mutex::new(()),
            clock: Clock::default(),
            as_of_ms: AtomicI64::new(UNPINNED),
            limits_loaded: AtomicBool::new(false),
            started: AtomicBool::new(false),
            metrics: metrics.usage.clone(),
            recorder: None,
            replays: super::replays::Replays::default(),
        }
    }

    /// Records consumed usage through this producer.
    pub fn with_recorder(mut self, recorder: Option<super::recorder::Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// The producer of consumed usage, if brokers are configured.
    pub fn recorder(&self) -> Option<&super::recorder::Recorder> {
        self.recorder.as_ref()
    }

    /// Keeps reservations in Valkey (shared by every replica) instead of in
    /// this process.
    pub fn with_valkey(mut self, valkey: Option<Arc<crate::valkey::Valkey>>) -> Self {
        self.replays = super::replays::Replays::new(valkey.clone());
        self.shared = valkey.map(|v| SharedHolds::new(v, self.cfg.usage_reservation_ttl_ms, self.cfg.usage_refresh_interval_ms));
        self
    }

    /// The shared reservations, if Valkey is configured.
    pub fn shared_holds(&self) -> Option<&SharedHolds> {
        self.shared.as_ref()
    }

    /// Spawns the background refresher once (later calls do nothing). Must
    /// be called inside a Tokio runtime. The task ends when the state is
    /// dropped.
    pub fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(super::refresh::run(Arc::downgrade(self)));
            tokio::spawn(super::limits_watch::watch(Arc::downgrade(self)));
            if let Some(shared) = &self.shared {
                let (valkey, notify, weak) = (shared.valkey.clone(), self.limits_changed.clone(), Arc::downgrade(self));
                tokio::spawn(async move {
                    valkey.subscribe(super::limits_watch::CHANNEL, &notify, || weak.strong_count() > 0).await;
                });
            }
            if self.shared.is_some() {
                tokio::spawn(super::shared_holds::watch(Arc::downgrade(self)));
            }
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// When the counters were last read, or 503 if they never were.
    pub fn as_of(&self) -> Result<DateTime<Utc>, ApiError> {
        match self.as_of_ms.load(Ordering::Acquire) {
            UNPINNED => Err(ApiError::Unavailable("Usage counters are loading, try again shortly".into())),
            ms => Ok(DateTime::from_timestamp_millis(ms).expect("in range")),
        }
    }

    pub(crate) fn set_as_of(&self, t: DateTime<Utc>) {
        self.as_of_ms.store(t.timestamp_millis(), Ordering::Release);
    }

    pub fn is_loaded(&self) -> bool {
        self.as_of_ms.load(Ordering::Acquire) != UNPINNED && self.limits_loaded.load(Ordering::Acquire)
    }

    pub(crate) fn install_limits(&self, set: LimitSet, generation: u64) -> bool {
        let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
        if self.limits_generation.load(Ordering::Acquire) != generation {
            return false;
        }
        *l = set;
        self.limits_loaded.store(true, Ordering::Release);
        true
    }

    /// Installs one limit written through the API (or removes it).
    /// With Valkey, the other replicas are told at once (they reload the
    /// limits without waiting for their next fingerprint read).
    pub(crate) fn put_limit(&self, tenant: Uuid, limit_id: Uuid, limit: Option<Limit>) {
        {
            let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
            self.limits_generation.fetch_add(1, Ordering::AcqRel);
            l.upsert(tenant, limit_id, limit);
        }
        self.announce(tenant);
    }

    /// Installs one plan written through the API: every organization on it
    /// moves to its new limits at once. Announced like a limit write.
    pub(crate) fn put_plan(&self, plan: super::plans::Plan) {
        let tenant = plan.tenant_id;
        {
            let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
            self.limits_generation.fetch_add(1, Ordering::AcqRel);
            l.upsert_plan(plan);
        }
        self.announce(tenant);
    }

    /// Installs one assignment written through the API (`None`: no plan).
    pub(crate) fn put_assignment(&self, tenant: Uuid, org: Uuid, plan_id: Option<Uuid>) {
        {
            let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
            self.limits_generation.fetch_add(1, Ordering::AcqRel);
            l.assign(tenant, org, plan_id);
        }
        self.announce(tenant);
    }

    /// The plan an organization is on, as this replica knows it.
    pub fn plan_of(&self, tenant: Uuid, org: Uuid) -> Option<Arc<super::plans::Plan>> {
        self.limits.read().unwrap_or_else(|e| e.into_inner()).plan_of(tenant, org)
    }

    /// Tells the other replicas (Valkey pub/sub) that limits changed.
    fn announce(&self, tenant: Uuid) {
        if let Some(shared) = &self.shared {
            let valkey = shared.valkey.clone();
            tokio::spawn(async move {
                let _ = valkey.publish(super::limits_watch::CHANNEL, &tenant.simple().to_string()).await;
            });
        }
    }

    /// Usage of one subject in a window, up to now (inclusive of the current minute).
    pub fn usage(&self, subject: SubjectKey, window: &Window, now: DateTime<Utc>) -> Totals {
        let to = minute_of(now).min(minute_of(window.end - Duration::milliseconds(1))) + 1;
        let c = self.counters.read().unwrap_or_else(|e| e.into_inner());
        c.sum(subject, minute_of(window.start), to)
    }

    /// Limits of a tenant applying to a call (see the module docs).
    pub fn applicable(&self, tenant: Uuid, metric: Metric, org: Option<Uuid>, user: Option<Uuid>) -> Vec<Limit> {
        self.limits.read().unwrap_or_else(|e| e.into_inner()).applicable(tenant, metric, org, user)
    }

    /// Every limit of a tenant.
    pub fn tenant_limits(&self, tenant: Uuid) -> Vec<Limit> {
        self.limits.read().unwrap_or_else(|e| e.into_inner()).tenant(tenant).to_vec()
    }

    /// The check. With `reserve`, an allowed request also holds its amount
    /// against every applicable limit until its execution shows up or the
    /// TTL passes; the decision and the hold are atomic per tenant.
    pub async fn check(&self, tenant: Uuid, req: &CheckRequest) -> Result<CheckOutcome, ApiError> {
        let out = self.evaluate(tenant, req).await?;
        let outcome = if out.checks.is_empty() {
            "unlimited"
        } else if out.allowed {
            "allowed"
        } else {
            "denied"
        };
        self.metrics.checks_total.with_label_values(&[outcome]).inc();
        Ok(out)
    }

    /// [`UsageState::check`] without counting it in the metrics (the
    /// current-usage endpoints evaluate with a zero request).
    pub async fn evaluate(&self, tenant: Uuid, req: &CheckRequest) -> Result<CheckOutcome, ApiError> {
        match &self.shared {
            None => self.evaluate_local(tenant, req),
            Some(shared) => self.evaluate_shared(shared, tenant, req).await,
        }
    }

    /// The figures of every applicable limit from the counters, with `held`
    /// units held against each subject.
    fn figures(&self, tenant: Uuid, req: &CheckRequest, now: DateTime<Utc>, held: impl Fn(SubjectKey) -> i128) -> Vec<LimitCheck> {
        let limits = self.applicable(tenant, req.metric, req.organization_id, req.user_id);
        let c = self.counters.read().unwrap_or_else(|e| e.into_inner());
        limits
            .into_iter()
            .map(|limit| {
                let subject = limit.subject.key(tenant);
                let window = limit.period.window_at(now);
                let from = minute_of(window.start);
                let to = minute_of(now) + 1;
                let used = c.sum(subject, from, to).get(req.metric);
                let resets_at = match limit.period {
                    PeriodSpec::Rolling { hours } => c
                        .first_used_minute(subject, req.metric, from, to)
                        .map(|m| DateTime::from_timestamp(m * 60, 0).expect("in range") + Duration::hours(i64::from(hours)))
                        .unwrap_or(window.end),
                    _ => window.end,
                };
                let mut check = LimitCheck { limit, window, used, held: 0, remaining: 0, allowed: false, resets_at, soft_reached: false };
                check.set_held(held(subject), req.units);
                check
            })
            .collect()
    }

    /// The check against reservations shared in Valkey (one script call;
    /// see `shared_holds`). A reserving check that cannot reach a decision
    /// there is a 503; a plain check answers from the counters alone.
    async fn evaluate_shared(&self, shared: &SharedHolds, tenant: Uuid, req: &CheckRequest) -> Result<CheckOutcome, ApiError> {
        let as_of = self.as_of()?;
        if !self.limits_loaded.load(Ordering::Acquire) {
            return Err(ApiError::Unavailable("Plan limits are loading, try again shortly".into()));
        }
        // Read before the counters: the counters are at least this new.
        let snapshot_us = shared.snapshot_us();
        let now = self.now();
        let mut checks = self.figures(tenant, req, now, |_| 0);
        if checks.is_empty() {
            return Ok(CheckOutcome { allowed: true, checks, reservation: None, now, as_of });
        }
        let budgets: Vec<(SubjectKey, i128)> = checks.iter().map(|c| (c.limit.subject.key(tenant), c.limit.max_units - c.used)).collect();
        let (reservation_id, execution_id) = req.hold_ids();
        let reserve = req.reserve.then_some((reservation_id, Some(execution_id)));
        let decision = match shared.decide(tenant, req.metric, req.units, &budgets, snapshot_us, reserve, now).await {
            Ok(d) => d,
            Err(detail) if req.reserve => return Err(ApiError::Unavailable(detail)),
            Err(_) => {
                sort_strictest(&mut checks);
                let allowed = checks.iter().all(|c| c.allowed);
                return Ok(CheckOutcome { allowed, checks, reservation: None, now, as_of });
            }
        };
        for (c, held) in checks.iter_mut().zip(&decision.held) {
            c.set_held(*held, req.units);
        }
        sort_strictest(&mut checks);
        let allowed = decision.allowed && checks.iter().all(|c| c.allowed);
        let reservation = (req.reserve && allowed).then(|| Hold {
            reservation_id,
            execution_id: Some(execution_id),
            organization_id: req.organization_id,
            user_id: req.user_id,
            subjects: budgets.iter().map(|(s, _)| *s).collect(),
            metric: req.metric,
            units: req.units,
            created_at: now,
            expires_at: now + Duration::milliseconds(self.cfg.usage_reservation_ttl_ms as i64),
        });
        if let Some(h) = &reservation {
            // What a commit of it will need, from any replica.
            if let Err(detail) = shared.remember(tenant, h).await {
                let _ = shared.release(tenant, h.reservation_id).await;
                return Err(ApiError::Unavailable(detail));
            }
        }
        Ok(CheckOutcome { allowed, checks, reservation, now, as_of })
    }

    /// The live reservation `reservation_id` of a tenant (in Valkey when
    /// shared), or `None`.
    pub async fn reservation(&self, tenant: Uuid, reservation_id: Uuid) -> Result<Option<Hold>, ApiError> {
        if let Some(shared) = &self.shared {
            return shared.lookup(tenant, reservation_id).await.map_err(ApiError::Unavailable);
        }
        let holds = self.holds.tenant(tenant);
        let mut holds = holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.expire(self.now());
        Ok(holds.find(reservation_id))
    }

    /// The check against this process's own holds.
    fn evaluate_local(&self, tenant: Uuid, req: &CheckRequest) -> Result<CheckOutcome, ApiError> {
        let as_of = self.as_of()?;
        if !self.limits_loaded.load(Ordering::Acquire) {
            return Err(ApiError::Unavailable("Plan limits are loading, try again shortly".into()));
        }
        let now = self.now();
        let holds = self.holds.tenant(tenant);
        let mut holds = holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.expire(now);
        let (reservation_id, execution_id) = req.hold_ids();
        if req.reserve {
            // A retried reserving check for the same execution (or a retried
            // consume: the same reservation) replaces its hold instead of
            // holding twice.
            holds.release(&[execution_id, reservation_id]);
        }
        let mut checks = self.figures(tenant, req, now, |subject| holds.held(subject, req.metric));
        sort_strictest(&mut checks);
        let allowed = checks.iter().all(|c| c.allowed);
        let reservation = (req.reserve && allowed && !checks.is_empty()).then(|| {
            let hold = Hold {
                reservation_id,
                execution_id: Some(execution_id),
                organization_id: req.organization_id,
                user_id: req.user_id,
                subjects: checks.iter().map(|c| c.limit.subject.key(tenant)).collect(),
                metric: req.metric,
                units: req.units,
                created_at: now,
                expires_at: now + Duration::milliseconds(self.cfg.usage_reservation_ttl_ms as i64),
            };
            holds.add(hold.clone());
            hold
        });
        drop(holds);
        Ok(CheckOutcome { allowed, checks, reservation, now, as_of })
    }

    /// Ends a reservation early; false if it was not live.
    pub async fn release(&self, tenant: Uuid, reservation_id: Uuid) -> Result<bool, ApiError> {
        if let Some(shared) = &self.shared {
            return shared.release(tenant, reservation_id).await.map_err(ApiError::Unavailable);
        }
        let holds = self.holds.tenant(tenant);
        let mut holds = holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.expire(self.now());
        Ok(holds.release(&[reservation_id]) > 0)
    }
}

impl LimitCheck {
    /// Sets the units held by others and what follows from them.
    fn set_held(&mut self, held: i128, units: i128) {
        let (used, max) = (self.used, self.limit.max_units);
        self.held = held;
        self.remaining = (max - used - held).max(0);
        self.allowed = used + held + units <= max;
        // A ratio, not money: f64 is fine here.
        self.soft_reached = self.limit.soft_threshold.is_some_and(|f| (used + held + units) as f64 >= f * max as f64);
    }
}

/// The deciding limit first: least remaining, then the later reset, then
/// the narrower subject (see the module docs).
fn sort_strictest(checks: &mut [LimitCheck]) {
    checks.sort_by(|a, b| {
        a.remaining
            .cmp(&b.remaining)
            .then(b.resets_at.cmp(&a.resets_at))
            .then(b.limit.subject.rank().cmp(&a.limit.subject.rank()))
            .then(a.limit.limit_id.cmp(&b.limit.limit_id))
    });
}

/// Subject key of a request's (organization, user) for usage figures: the
/// user if given, else the organization, else the tenant.
pub fn request_subject(tenant: Uuid, org: Option<Uuid>, user: Option<Uuid>) -> SubjectKey {
    match (org, user) {
        (Some(o), Some(u)) => SubjectKey::User(tenant, o, u),
        (Some(o), None) => SubjectKey::Organization(tenant, o),
        _ => SubjectKey::Tenant(tenant),
    }
}

/// Subject of a limit, for display.
pub fn subject_ids(s: &Subject) -> (Option<Uuid>, Option<Uuid>) {
    match *s {
        Subject::Tenant => (None, None),
        Subject::Organization { organization_id } => (Some(organization_id), None),
        Subject::User { organization_id, user_id } => (Some(organization_id), Some(user_id)),
    }
}
