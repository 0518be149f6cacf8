//! The filter's Envoy stats, defined once per VM (`proxy_define_metric`); the values are process-wide.
//!
//! Envoy shows them with its `wasmcustom.` prefix (e.g. `wasmcustom.warden.bundle.revision`). Defining the same
//! name again (another VM, a reconfiguration) reaches the same stat. Every update ignores the host's status: a
//! metric must never cost a request (the SDK only returns the statuses it expects for these calls).

use std::cell::RefCell;
use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use warden_core::gate::Counters;
use warden_core::poll::Cause;

/// Metric ids of this VM. A `None` id (definition refused) is skipped.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    revision: Option<u32>,
    age_seconds: Option<u32>,
    fetch_success: Option<u32>,
    fetch_not_modified: Option<u32>,
    fetch_long_poll: Option<u32>,
    wakeups: Option<u32>,
    fetch_failure: [Option<u32>; Cause::ALL.len()],
    activations: Option<u32>,
    decisions: [Option<u32>; DECISIONS.len()],
    approvals_accepted: Option<u32>,
    exceptions_used: Option<u32>,
    shadow: [Option<u32>; SHADOW.len()],
    /// Counters whose name depends on a reason code, defined the first time the code occurs on this VM (Envoy
    /// returns the same stat for the same name): `warden.reasons.<code>`, `warden.approvals.refused.<code>`.
    by_name: RefCell<HashMap<(&'static str, &'static str), Option<u32>>>,
    /// `warden.limits.refused.<limit id>`: the calls a limit refused (the reason is counted in `warden.reasons.`),
    /// defined at the first; bounded by the number of limits the bundles name.
    by_limit: RefCell<HashMap<Box<str>, Option<u32>>>,
}

/// Labels of `warden.shadow.<label>`: what a shadow rule would have decided where it differs from the decision.
pub const SHADOW: [&str; 3] = ["would_allow", "would_deny", "would_step_up"];

/// Decision labels with a counter `warden.decisions.<label>` (the record's `decision` field).
pub const DECISIONS: [&str; 5] = ["allow", "deny", "step_up", "would_deny", "would_step_up"];

fn define(kind: MetricType, name: &str) -> Option<u32> {
    hostcalls::define_metric(kind, name).ok()
}

impl Metrics {
    pub fn define() -> Metrics {
        let mut fetch_failure = [None; Cause::ALL.len()];
        for (slot, cause) in fetch_failure.iter_mut().zip(Cause::ALL) {
            *slot = define(MetricType::Counter, &format!("warden.bundle.fetch.failure.{}", cause.code()));
        }
        let mut decisions = [None; DECISIONS.len()];
        for (slot, label) in decisions.iter_mut().zip(DECISIONS) {
            *slot = define(MetricType::Counter, &format!("warden.decisions.{label}"));
        }
        Metrics {
            revision: define(MetricType::Gauge, "warden.bundle.revision"),
            age_seconds: define(MetricType::Gauge, "warden.bundle.age_seconds"),
            fetch_success: define(MetricType::Counter, "warden.bundle.fetch.success"),
            fetch_not_modified: define(MetricType::Counter, "warden.bundle.fetch.not_modified"),
            fetch_long_poll: define(MetricType::Counter, "warden.bundle.fetch.long_poll"),
            wakeups: define(MetricType::Counter, "warden.bundle.wakeups"),
            fetch_failure,
            activations: define(MetricType::Counter, "warden.bundle.activations"),
            decisions,
            approvals_accepted: define(MetricType::Counter, "warden.approvals.accepted"),
            exceptions_used: define(MetricType::Counter, "warden.exceptions.used"),
            shadow: SHADOW.map(|label| define(MetricType::Counter, &format!("warden.shadow.{label}"))),
            by_name: RefCell::new(HashMap::new()),
            by_limit: RefCell::new(HashMap::new()),
        }
    }

    fn increment(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn set(id: Option<u32>, value: u64) {
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// One recorded request: `warden.decisions.<label>`, `warden.reasons.<reason>`, and what else it counts
    /// (shadow rules, an exception, an approval).
    pub fn recorded(&self, c: &Counters) {
        if let Some(i) = DECISIONS.iter().position(|d| *d == c.decision) {
            Metrics::increment(self.decisions[i]);
        }
        self.increment_named("warden.reasons.", c.reason);
        match c.approval {
            Some(Ok(())) => Metrics::increment(self.approvals_accepted),
            Some(Err(code)) => self.increment_named("warden.approvals.refused.", code),
            None => {}
        }
        if let Some(i) = c.shadow.and_then(|label| SHADOW.iter().position(|d| *d == label)) {
            Metrics::increment(self.shadow[i]);
        }
        if c.exception_used {
            Metrics::increment(self.exceptions_used);
        }
        if let Some(id) = &c.limit {
            self.increment_limit(id);
        }
    }

    fn increment_limit(&self, limit: &str) {
        let Ok(mut by_limit) = self.by_limit.try_borrow_mut() else { return };
        let id = *by_limit
            .entry(Box::from(limit))
            .or_insert_with(|| define(MetricType::Counter, &format!("warden.limits.refused.{limit}")));
        Metrics::increment(id);
    }

    fn increment_named(&self, prefix: &'static str, code: &'static str) {
        let Ok(mut by_name) = self.by_name.try_borrow_mut() else { return };
        let id =
            *by_name.entry((prefix, code)).or_insert_with(|| define(MetricType::Counter, &format!("{prefix}{code}")));
        Metrics::increment(id);
    }

    pub fn fetch_success(&self) {
        Metrics::increment(self.fetch_success);
    }

    pub fn fetch_not_modified(&self) {
        Metrics::increment(self.fetch_not_modified);
    }

    /// A long poll the endpoint accepted (it answered with `Preference-Applied: wait=N`).
    pub fn fetch_long_poll(&self) {
        Metrics::increment(self.fetch_long_poll);
    }

    /// Another VM woke this one through its shared queue (a bundle was published).
    pub fn woken(&self) {
        Metrics::increment(self.wakeups);
    }

    pub fn fetch_failure(&self, cause: Cause) {
        Metrics::increment(self.fetch_failure[cause.index()]);
    }

    /// A bundle became active on this VM.
    pub fn activated(&self, revision: u64) {
        Metrics::increment(self.activations);
        Metrics::set(self.revision, revision);
    }

    /// Seconds since the active bundle's `issued_at` (0 if in the future).
    pub fn age(&self, now: i64, issued_at: i64) {
        Metrics::set(self.age_seconds, u64::try_from(now.saturating_sub(issued_at)).unwrap_or(0));
    }
}
