//! The root context: one per VM (per worker thread). It configures the filter, holds the active bundle and shares it
//! with the HTTP contexts, and polls the control endpoint (plain polls or long polls): the lease, schedule, pace and
//! verification decisions are the core's ([`warden_core::poll`], [`warden_core::activation`]); this module does the
//! host calls (http calls, shared data, the wake-up shared queues) and the logging.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, Status};
use warden_core::activation::{self, Active, Candidate, RejectCause};
use warden_core::config::Control;
use warden_core::gate::PinMemory;
use warden_core::ids::IdGen;
use warden_core::poll::{
    self, Answer, Cause, Failure, Fetched, Lease, LeaseStep, Pace, RecordHeader, Schedule, Wakers,
};
use warden_core::token_cache::TokenCache;

use crate::host::{log, shared_get, unix_nanos, unix_secs};
use crate::http::{Shared, WardenHttp};
use crate::metrics::Metrics;

/// The root context: one per VM (per worker thread).
#[derive(Default)]
pub struct WardenRoot {
    shared: Option<Shared>,
    poller: Option<Poller>,
}

/// This VM's part in polling the control endpoint (see [`crate::poll`]).
struct Poller {
    control: Control,
    schedule: Schedule,
    bundle_key: String,
    lease_key: String,
    /// The wake-up registry's shared-data key ([`Wakers`]).
    wakers_key: String,
    /// This VM's lease holder id (random, never 0; kept across reconfigurations of the VM).
    me: u64,
    /// The `vm_id` the shared queues are registered under (Envoy's `plugin_vm_id`).
    vm_id: String,
    /// This VM's wake-up queue, when registered.
    wake_queue: Option<u32>,
    rng: IdGen,
    /// ETag the control endpoint gave the active bundle (sent as `If-None-Match`).
    etag: Option<String>,
    /// CAS of the shared bundle record last looked at (unchanged: nothing to do).
    seen_cas: Option<u32>,
    in_flight: Option<InFlight>,
    /// How the last fetch this VM knows of ended (`ok` or a cause code), when the lease cannot tell.
    last: String,
}

struct InFlight {
    token: u32,
    started_ms: u64,
    /// The fetch asked the endpoint to hold it (`Prefer: wait=N`).
    long_poll: bool,
}

fn describe(a: &Active) -> String {
    format!(
        "revision {} from `{}` (key `{}`, sha256 {}, expires {})",
        a.bundle.revision,
        a.bundle.authority,
        a.key_id,
        a.digest,
        warden_core::time::format_rfc3339(a.bundle.expires_at),
    )
}

impl Context for WardenRoot {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(poller) = self.poller.as_mut() else { return };
        let Some(in_flight) = poller.in_flight.take_if(|f| f.token == token_id) else { return };
        // Envoy delivers a reset as (0, 0, 0) with no header map: reading it would trap the SDK.
        let headers = (num_headers > 0).then(|| self.get_http_call_response_headers_bytes());
        // The size first: a body over the limit is never copied into the VM.
        let fetched = match poll::body_to_read(headers.as_deref(), body_size) {
            Err(f) => Fetched::Failed(f),
            Ok(n) => {
                let body = if n > 0 { self.get_http_call_response_body(0, n) } else { None };
                poll::classify(headers.as_deref(), body.as_deref())
            }
        };
        let applied = poll::preference_applied_wait(headers.as_deref());
        let result = self.apply_fetch(fetched);
        let now_ms = unix_nanos(self.get_current_time()) / 1_000_000;
        let answer = match &result {
            Ok(true) => Answer::Newer,
            Ok(false) => Answer::Current,
            Err(_) => Answer::Failed,
        };
        let held_ms = now_ms.saturating_sub(in_flight.started_ms);
        let pace = poll::pace(in_flight.long_poll, applied, answer, held_ms);
        if in_flight.long_poll && applied.is_some() {
            if let Some(shared) = &self.shared {
                shared.metrics.fetch_long_poll();
            }
        }
        self.finish_fetch(in_flight.started_ms, result.map(|_| pace));
        if pace == Pace::AtOnce {
            // The next long poll now, not on the next tick: the endpoint always holds one of this proxy's requests.
            self.maybe_fetch(now_ms);
        }
    }
}

impl RootContext for WardenRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let now = unix_secs(unix_nanos(self.get_current_time()));
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let loaded = match activation::load(&bytes, now) {
            Ok(loaded) => loaded,
            Err(e) => {
                log(LogLevel::Error, &format!("warden: plugin configuration: {e}"));
                return false;
            }
        };
        let (ids, metrics, vm) = match &self.shared {
            Some(shared) => (Rc::clone(&shared.ids), Rc::clone(&shared.metrics), Rc::clone(&shared.vm)),
            None => match IdGen::from_entropy() {
                Ok(ids) => {
                    let vm: Rc<str> = Rc::from(format!("vm-{:08x}", ids.next_u64() >> 32));
                    (Rc::new(ids), Rc::new(Metrics::define()), vm)
                }
                Err(e) => {
                    log(LogLevel::Critical, &format!("warden: cannot seed decision ids from host randomness: {e}"));
                    return false;
                }
            },
        };
        let config = loaded.config;
        let source = match &config.control {
            Some(c) => match c.long_poll_wait_seconds {
                None => format!("control `{}` (cluster `{}`) every {} s", c.path, c.cluster, c.poll_seconds),
                Some(w) => format!(
                    "control `{}` (cluster `{}`), long polls of up to {w} s (every {} s where the endpoint does not \
                     hold them)",
                    c.path, c.cluster, c.poll_seconds
                ),
            },
            None => "no control endpoint".to_string(),
        };
        match &loaded.active {
            Some(a) => {
                metrics.activated(a.bundle.revision);
                log(
                    LogLevel::Info,
                    &format!(
                        "warden: configured: environment `{}`, mode {}, bundle {}; {source}",
                        config.gate.environment,
                        config.gate.mode.as_str(),
                        describe(a),
                    ),
                )
            }
            None => log(
                LogLevel::Warn,
                &format!(
                    "warden: configured: environment `{}`, mode {}, no bundle yet: requests are answered 503 \
                     no_active_bundle until one is fetched; {source}",
                    config.gate.environment,
                    config.gate.mode.as_str()
                ),
            ),
        }
        let previous = self.poller.take();
        self.poller = match &config.control {
            None => None,
            Some(control) => match Poller::new(control, previous) {
                Ok(p) => Some(p),
                Err(e) => {
                    log(
                        LogLevel::Critical,
                        &format!("warden: cannot seed the poll schedule from host randomness: {e}"),
                    );
                    return false;
                }
            },
        };
        if self.poller.is_some() {
            let _ = hostcalls::set_tick_period(Duration::from_millis(poll::TICK_MS));
        }
        let tokens = match &self.shared {
            Some(shared) => {
                if let Ok(mut cache) = shared.tokens.try_borrow_mut() {
                    cache.clear();
                }
                Rc::clone(&shared.tokens)
            }
            None => Rc::new(RefCell::new(TokenCache::default())),
        };
        // What this VM saw pinned tools listed as outlives a reconfiguration: it is about the servers.
        let listed = match &self.shared {
            Some(shared) => Rc::clone(&shared.listed),
            None => Rc::new(RefCell::new(PinMemory::default())),
        };
        if let Some(a) = &loaded.active {
            record_mark(&config.authority, a);
        }
        let active = loaded.active.map(Rc::new);
        self.shared = Some(Shared { config: Rc::new(config), active, ids, metrics, tokens, listed, vm });
        // A VM that starts after others (a new worker, a reconfiguration) takes their bundle at once.
        self.adopt_shared(now);
        true
    }

    fn on_tick(&mut self) {
        let now_ms = unix_nanos(self.get_current_time()) / 1_000_000;
        let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        self.adopt_shared(now);
        if let Some(shared) = &self.shared {
            if let Some(a) = &shared.active {
                shared.metrics.age(now, a.bundle.issued_at);
            }
        }
        self.maybe_fetch(now_ms);
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let Some(poller) = self.poller.as_ref() else { return };
        if poller.wake_queue == Some(queue_id) {
            // Emptied, so the queue never grows (the publisher also empties it before it enqueues).
            while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue_id) {}
        }
        if let Some(shared) = &self.shared {
            shared.metrics.woken();
        }
        let now = unix_secs(unix_nanos(self.get_current_time()));
        self.adopt_shared(now);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK traps on it.
        Some(Box::new(WardenHttp { shared: self.shared.clone(), flow: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Poller {
    /// The poller of `control`. A reconfiguration hands over the `previous` poller: its holder id (so the lease and
    /// the wake-up registry still name this VM), and, for the same control source, its fetch in flight (a long poll
    /// held at the endpoint is answered to this poller).
    fn new(control: &Control, previous: Option<Poller>) -> Result<Poller, getrandom::Error> {
        let rng = IdGen::from_entropy()?;
        let me = previous.as_ref().map_or_else(|| rng.next_u64().max(1), |p| p.me);
        let (bundle_key, lease_key) = poll::keys(&control.cluster, &control.authority, &control.path);
        let same = previous.filter(|p| p.bundle_key == bundle_key);
        let vm_id = hostcalls::get_property(vec!["plugin_vm_id"])
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .unwrap_or_default();
        let mut poller = Poller {
            control: control.clone(),
            schedule: Schedule {
                period_ms: control.poll_seconds.saturating_mul(1000),
                jitter_percent: control.jitter_percent,
                timeout_ms: control.call_timeout_ms(),
                backoff_max_ms: control.backoff_max_seconds.saturating_mul(1000),
            },
            bundle_key,
            lease_key,
            wakers_key: poll::wakers_key(&control.cluster, &control.authority, &control.path),
            me,
            vm_id,
            wake_queue: None,
            rng,
            etag: same.as_ref().and_then(|p| p.etag.clone()),
            seen_cas: None,
            in_flight: same.and_then(|p| p.in_flight),
            last: "ok".to_string(),
        };
        poller.register_wake_queue();
        Ok(poller)
    }

    /// Registers this VM's wake-up queue and lists it in the registry, so a VM that publishes a bundle wakes this
    /// one at once. Best effort: without it the VM adopts new bundles on its next tick.
    fn register_wake_queue(&mut self) {
        let c = &self.control;
        let name = poll::wake_queue(&c.cluster, &c.authority, &c.path, self.me);
        let Ok(token) = hostcalls::register_shared_queue(&name) else { return };
        self.wake_queue = Some(token);
        for _ in 0..16 {
            let current = shared_get(&self.wakers_key);
            let listed = current.as_ref().and_then(|(v, _)| Wakers::decode(v));
            let Some(next) = Wakers::with(listed.as_ref(), self.me) else { return };
            // A missing registry is created with a CAS value Envoy never hands out for it (as the mark is).
            let cas = current.map_or(u32::MAX, |(_, cas)| cas);
            match hostcalls::set_shared_data(&self.wakers_key, Some(next.encode().as_bytes()), Some(cas)) {
                Ok(()) => return,
                Err(Status::CasMismatch) => continue,
                Err(_) => break,
            }
        }
        log(LogLevel::Warn, &format!("warden: could not list this VM in shared data `{}`: other VMs adopt bundles it publishes on their next tick", self.wakers_key));
    }

    /// Wakes every other listed VM: on each one's queue, what is left there is taken off and one wake-up put on
    /// (so a queue whose VM is gone holds one item at most). A VM that cannot be woken adopts on its next tick.
    fn wake_others(&self) {
        let Some(listed) = shared_get(&self.wakers_key).and_then(|(v, _)| Wakers::decode(&v)) else { return };
        let c = &self.control;
        for id in listed.others(self.me) {
            let name = poll::wake_queue(&c.cluster, &c.authority, &c.path, id);
            let Ok(Some(queue)) = hostcalls::resolve_shared_queue(&self.vm_id, &name) else { continue };
            for _ in 0..4 {
                if !matches!(hostcalls::dequeue_shared_queue(queue), Ok(Some(_))) {
                    break;
                }
            }
            let _ = hostcalls::enqueue_shared_queue(queue, Some(b"1"));
        }
    }
}

impl WardenRoot {
    /// Makes `a` the active bundle of this VM.
    fn activate(&mut self, a: Active, origin: &str) {
        let Some(shared) = self.shared.as_mut() else { return };
        let previous = shared.active.as_ref().map(|p| p.bundle.revision);
        shared.metrics.activated(a.bundle.revision);
        let from = previous.map_or_else(|| "no bundle".to_string(), |r| format!("revision {r}"));
        log(LogLevel::Info, &format!("warden: activated bundle {} ({origin}; replaces {from})", describe(&a)));
        if let Ok(mut cache) = shared.tokens.try_borrow_mut() {
            cache.clear();
        }
        record_mark(&shared.config.authority, &a);
        shared.active = Some(Rc::new(a));
    }

    /// Looks at the shared bundle record and adopts a newer bundle from it, after verifying and compiling it here:
    /// the record is another VM's say-so, not trusted as such.
    fn adopt_shared(&mut self, now: i64) {
        let (Some(poller), Some(shared)) = (self.poller.as_mut(), self.shared.as_ref()) else { return };
        let Some((bytes, cas)) = shared_get(&poller.bundle_key) else { return };
        if poller.seen_cas == Some(cas) {
            return;
        }
        poller.seen_cas = Some(cas);
        let Some((header, signed)) = poll::decode_record(&bytes) else {
            log(
                LogLevel::Warn,
                &format!("warden: shared data `{}` is not a bundle record: ignored", poller.bundle_key),
            );
            return;
        };
        let active = shared.active.as_deref();
        if let Some(a) = active {
            if header.revision < a.bundle.revision {
                return;
            }
            if header.revision == a.bundle.revision && header.digest == a.digest {
                if header.etag.is_some() {
                    poller.etag = header.etag;
                }
                return;
            }
        }
        let mark = shared_mark(&shared.config.authority);
        match activation::check_candidate(&shared.config, active, mark.as_ref(), signed, now) {
            Ok(Candidate::Newer(a)) => {
                poller.etag = header.etag;
                self.activate(*a, "shared by another worker");
            }
            Ok(Candidate::Unchanged) => poller.etag = header.etag,
            Err(f) => log(
                LogLevel::Error,
                &format!(
                    "warden: bundle revision {} shared by another worker refused ({}): {}",
                    header.revision,
                    Cause::from(f.cause),
                    f.detail
                ),
            ),
        }
    }

    /// Takes the fetch lease if a fetch is due and nobody holds it, and dispatches the fetch.
    fn maybe_fetch(&mut self, now_ms: u64) {
        let Some(poller) = self.poller.as_mut() else { return };
        if let Some(f) = &poller.in_flight {
            let lease_ms = poller.schedule.timeout_ms.saturating_add(poll::LEASE_SLACK_MS);
            // Either way from the start (the wall clock may have stepped back since).
            if now_ms.abs_diff(f.started_ms) < lease_ms {
                return;
            }
            poller.in_flight = None; // never answered (Envoy always answers or times out): give up on it
        }
        let current = shared_get(&poller.lease_key);
        let lease = current.as_ref().and_then(|(v, _)| Lease::decode(v));
        let LeaseStep::Take(taken) = poll::on_tick(lease.as_ref(), poller.me, now_ms, &poller.schedule) else {
            return;
        };
        let cas = current.map(|(_, cas)| cas);
        if hostcalls::set_shared_data(&poller.lease_key, Some(taken.encode().as_bytes()), cas).is_err() {
            return; // another VM took it first
        }
        let etag = self
            .shared
            .as_ref()
            .and_then(|s| s.active.as_ref())
            .and(poller.etag.as_deref())
            .unwrap_or_default()
            .to_string();
        let c = poller.control.clone();
        let timeout = Duration::from_millis(poller.schedule.timeout_ms);
        let mut headers = vec![(":method", "GET"), (":path", c.path.as_str()), (":authority", c.authority.as_str())];
        headers.push(("accept", "application/jose, text/plain, */*"));
        if !etag.is_empty() {
            headers.push(("if-none-match", etag.as_str()));
        }
        // Also without an ETag (no bundle yet): the endpoint answers at once, and its `Preference-Applied` says it
        // holds long polls, so the next fetch (with the ETag) starts at once.
        let wait = c.long_poll_wait_seconds.map(|w| format!("wait={w}"));
        if let Some(wait) = &wait {
            headers.push(("prefer", wait.as_str()));
        }
        match self.dispatch_http_call(&c.cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                if let Some(p) = self.poller.as_mut() {
                    p.in_flight = Some(InFlight { token, started_ms: now_ms, long_poll: wait.is_some() });
                }
            }
            Err(status) => {
                let f = Failure::new(
                    Cause::Connect,
                    format!(
                        "Envoy refused to dispatch to cluster `{}` ({status:?}): is the cluster defined?",
                        c.cluster
                    ),
                );
                self.count_failure(&f);
                self.finish_fetch(now_ms, Err(f));
            }
        }
    }

    fn count_failure(&self, f: &Failure) {
        if let Some(shared) = &self.shared {
            shared.metrics.fetch_failure(f.cause);
        }
    }

    /// Acts on a fetch's result: counts it, and activates and publishes a newer bundle (then wakes the other VMs).
    /// `Ok(true)`: a newer bundle was activated.
    fn apply_fetch(&mut self, fetched: Fetched) -> Result<bool, Failure> {
        let Some(shared) = self.shared.clone() else { return Ok(false) };
        let now = unix_secs(unix_nanos(self.get_current_time()));
        let result = match fetched {
            Fetched::NotModified => {
                shared.metrics.fetch_not_modified();
                return Ok(false);
            }
            Fetched::Failed(f) => Err(f),
            Fetched::Body { bytes, etag } => {
                let mark = shared_mark(&shared.config.authority);
                match activation::check_candidate(&shared.config, shared.active.as_deref(), mark.as_ref(), &bytes, now)
                {
                    Ok(Candidate::Unchanged) => {
                        if let (Some(p), Some(e)) = (self.poller.as_mut(), etag) {
                            p.etag = Some(e);
                        }
                        Ok(false)
                    }
                    Ok(Candidate::Newer(a)) => {
                        let header = RecordHeader { revision: a.bundle.revision, digest: a.digest.clone(), etag };
                        if let Some(p) = self.poller.as_mut() {
                            p.etag = header.etag.clone();
                        }
                        self.activate(*a, "fetched from the control endpoint");
                        self.publish(&header, &bytes);
                        if let Some(p) = self.poller.as_ref() {
                            p.wake_others();
                        }
                        Ok(true)
                    }
                    Err(r) => Err(Failure::from(r)),
                }
            }
        };
        match &result {
            Ok(_) => shared.metrics.fetch_success(),
            Err(f) => shared.metrics.fetch_failure(f.cause),
        }
        result
    }

    /// Writes the verified bundle to shared data (compare-and-swap) unless a record at least as new is there.
    fn publish(&mut self, header: &RecordHeader, signed: &[u8]) {
        let Some(poller) = self.poller.as_mut() else { return };
        let record = poll::encode_record(header, signed);
        for _ in 0..3 {
            let current = shared_get(&poller.bundle_key);
            if let Some((h, _)) = current.as_ref().and_then(|(v, _)| poll::decode_record(v)) {
                if h.revision >= header.revision {
                    return;
                }
            }
            match hostcalls::set_shared_data(&poller.bundle_key, Some(&record), current.map(|(_, cas)| cas)) {
                Ok(()) => return,
                Err(Status::CasMismatch) => continue,
                Err(_) => break,
            }
        }
        log(LogLevel::Warn, &format!("warden: could not publish bundle revision {} to shared data", header.revision));
    }

    /// Releases the lease with the next due time, and logs when the outcome differs from the last one.
    fn finish_fetch(&mut self, started_ms: u64, result: Result<Pace, Failure>) {
        let now_ms = unix_nanos(self.get_current_time()) / 1_000_000;
        let revision = self.shared.as_ref().and_then(|s| s.active.as_ref()).map(|a| a.bundle.revision);
        let Some(poller) = self.poller.as_mut() else { return };
        let r = poller.rng.next_u64();
        let cause = result.as_ref().err().map(|f| f.cause);
        let mut previous = poller.last.clone();
        let mut next_in = None;
        for _ in 0..3 {
            let current = shared_get(&poller.lease_key);
            let lease = current.as_ref().and_then(|(v, _)| Lease::decode(v));
            if let Some(l) = &lease {
                previous = l.last.clone();
            }
            let outcome = result.as_ref().map(|p| *p).map_err(|f| f.cause);
            let Some(next) = poll::on_done(lease.as_ref(), poller.me, started_ms, now_ms, outcome, &poller.schedule, r)
            else {
                break;
            };
            let cas = current.map(|(_, cas)| cas);
            match hostcalls::set_shared_data(&poller.lease_key, Some(next.encode().as_bytes()), cas) {
                Ok(()) => {
                    next_in = Some(next.next_due_ms.saturating_sub(now_ms));
                    break;
                }
                Err(_) => continue,
            }
        }
        poller.last = cause.map_or("ok", Cause::code).to_string();
        let keeping = revision.map_or_else(
            || "no bundle is active: requests get 503 no_active_bundle".to_string(),
            |r| format!("keeping revision {r}"),
        );
        let next = next_in.map(|ms| format!("; next attempt in {} s", ms.div_ceil(1000))).unwrap_or_default();
        match result {
            Err(f) if previous != f.cause.code() => {
                let level = match f.cause {
                    Cause::HttpStatus
                    | Cause::Connect
                    | Cause::Timeout
                    | Cause::Reset
                    | Cause::Rejected(RejectCause::Malformed) => LogLevel::Warn,
                    Cause::Rejected(_) => LogLevel::Error,
                };
                log(
                    level,
                    &format!(
                        "warden: bundle fetch from `{}` failed ({}): {}; {keeping}{next} (logged once until the \
                         cause changes; see warden.bundle.fetch.failure.{})",
                        poller.control.path, f.cause, f.detail, f.cause
                    ),
                );
            }
            Ok(_) if previous != "ok" => log(
                LogLevel::Info,
                &format!(
                    "warden: bundle fetch from `{}` works again (after `{previous}` failures)",
                    poller.control.path
                ),
            ),
            _ => {}
        }
    }
}

/// The process's activation mark for bundles of `authority` (see [`activation::Mark`]).
fn shared_mark(authority: &str) -> Option<activation::Mark> {
    shared_get(&activation::Mark::key(authority)).and_then(|(v, _)| activation::Mark::decode(&v))
}

/// Merges the activation of `a` into the process's mark (compare-and-swap; a missing mark is created with a CAS
/// value Envoy never hands out for it, as the used-approval record is).
fn record_mark(authority: &str, a: &Active) {
    let key = activation::Mark::key(authority);
    for _ in 0..16 {
        let current = shared_get(&key);
        let previous = current.as_ref().and_then(|(v, _)| activation::Mark::decode(v));
        let next = activation::Mark::merged(previous.as_ref(), a);
        if previous.as_ref() == Some(&next) {
            return;
        }
        let cas = current.map_or(u32::MAX, |(_, cas)| cas);
        match hostcalls::set_shared_data(&key, Some(&next.encode()), Some(cas)) {
            Ok(()) => return,
            Err(Status::CasMismatch) => continue,
            Err(_) => break,
        }
    }
    log(
        LogLevel::Warn,
        &format!("warden: could not record bundle revision {} in shared data `{key}`", a.bundle.revision),
    );
}
