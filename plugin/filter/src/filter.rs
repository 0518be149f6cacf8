//! The proxy-wasm contexts: the root context configures and holds the active bundle; an HTTP context per request
//! gathers the request's headers, evaluates, and continues or answers with a local reply.
//!
//! Everything that can be decided without the host lives in [`crate::active`], [`crate::evaluate`],
//! [`crate::reply`] and [`crate::record`]; this module only moves bytes between them and the host.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

use warden_core::approval::{body_digest, ApprovalFailure, CallBinding};
use warden_core::compile::CompiledBundle;
use warden_core::facts::{Agent, PeerIdentity};
use warden_core::identity::TokenCache;

use crate::active::{self, Active, Candidate};
use crate::approval::{self, Presented, StepUpCall, StepUpInfo};
use crate::config::{Config, Control, Mode};
use crate::evaluate::{evaluate_with, scan_with, ApprovalRecord, Evaluation, Governance, Verdict};
use crate::ids::IdGen;
use crate::metrics::Metrics;
use crate::poll::{self, Cause, Failure, Fetched, Lease, LeaseStep, RecordHeader, Schedule};
use crate::record::{self, RecordContext};
use crate::reply;

mod mcp_flow;
mod step_up_flow;

/// The filter-state key the decision record is written to (Envoy: `%FILTER_STATE(wasm.warden_decision:PLAIN)%`).
pub const DECISION_PROPERTY: &str = "warden_decision";

/// What the root context shares with its HTTP contexts (read-only on the request path). A new bundle replaces
/// `active` in the root; HTTP contexts created before keep the `Rc` they cloned.
#[derive(Clone)]
struct Shared {
    config: Rc<Config>,
    active: Option<Rc<Active>>,
    ids: Rc<IdGen>,
    metrics: Rc<Metrics>,
    /// This VM's verified-token cache (hits skip signature verification only); cleared when a bundle activates.
    tokens: Rc<RefCell<TokenCache>>,
    /// This VM's id in decision records (`vm-` and 8 random hex digits).
    vm: Rc<str>,
}

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
    /// This VM's lease holder id (random, never 0).
    me: u64,
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
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn unix_secs(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX)
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

/// Shared data as `(value, cas)`; `None` when missing (or on a status the SDK returns instead of trapping).
fn shared_get(key: &str) -> Option<(Vec<u8>, u32)> {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), Some(cas))) => Some((value, cas)),
        _ => None,
    }
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
        let result = self.apply_fetch(fetched);
        self.finish_fetch(in_flight.started_ms, result);
    }
}

impl RootContext for WardenRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let now = unix_secs(unix_nanos(self.get_current_time()));
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let loaded = match active::load(&bytes, now) {
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
            Some(c) => format!("control `{}` (cluster `{}`) every {} s", c.path, c.cluster, c.poll_seconds),
            None => "no control endpoint".to_string(),
        };
        match &loaded.active {
            Some(a) => {
                metrics.activated(a.bundle.revision);
                log(
                    LogLevel::Info,
                    &format!(
                        "warden: configured: environment `{}`, mode {}, bundle {}; {source}",
                        config.environment,
                        config.mode.as_str(),
                        describe(a),
                    ),
                )
            }
            None => log(
                LogLevel::Warn,
                &format!(
                    "warden: configured: environment `{}`, mode {}, no bundle yet: requests are answered 503 \
                     no_active_bundle until one is fetched; {source}",
                    config.environment,
                    config.mode.as_str()
                ),
            ),
        }
        self.poller = match &config.control {
            None => None,
            Some(control) => match Poller::new(control) {
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
        if let Some(a) = &loaded.active {
            record_mark(&config.authority, a);
        }
        self.shared =
            Some(Shared { config: Rc::new(config), active: loaded.active.map(Rc::new), ids, metrics, tokens, vm });
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK traps on it.
        Some(Box::new(WardenHttp { shared: self.shared.clone(), mcp: None, step_up: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Poller {
    fn new(control: &Control) -> Result<Poller, getrandom::Error> {
        let rng = IdGen::from_entropy()?;
        let me = rng.next_u64().max(1);
        let (bundle_key, lease_key) = poll::keys(&control.cluster, &control.authority, &control.path);
        Ok(Poller {
            control: control.clone(),
            schedule: Schedule {
                period_ms: control.poll_seconds.saturating_mul(1000),
                jitter_percent: control.jitter_percent,
                timeout_ms: control.timeout_ms,
                backoff_max_ms: control.backoff_max_seconds.saturating_mul(1000),
            },
            bundle_key,
            lease_key,
            me,
            rng,
            etag: None,
            seen_cas: None,
            in_flight: None,
            last: "ok".to_string(),
        })
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
        match active::check_candidate(&shared.config, active, mark.as_ref(), signed, now) {
            Ok(Candidate::Newer(a)) => {
                poller.etag = header.etag;
                self.activate(*a, "shared by another worker");
            }
            Ok(Candidate::Unchanged) => poller.etag = header.etag,
            Err(f) => log(
                LogLevel::Error,
                &format!(
                    "warden: bundle revision {} shared by another worker refused ({}): {}",
                    header.revision, f.cause, f.detail
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
        let mut headers = vec![(":method", "GET"), (":path", c.path.as_str()), (":authority", c.authority.as_str())];
        headers.push(("accept", "application/jose, text/plain, */*"));
        if !etag.is_empty() {
            headers.push(("if-none-match", etag.as_str()));
        }
        let timeout = Duration::from_millis(c.timeout_ms);
        match self.dispatch_http_call(&c.cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                if let Some(p) = self.poller.as_mut() {
                    p.in_flight = Some(InFlight { token, started_ms: now_ms });
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

    /// Acts on a fetch's result: counts it, and activates and publishes a newer bundle.
    fn apply_fetch(&mut self, fetched: Fetched) -> Result<(), Failure> {
        let Some(shared) = self.shared.clone() else { return Ok(()) };
        let now = unix_secs(unix_nanos(self.get_current_time()));
        let result = match fetched {
            Fetched::NotModified => {
                shared.metrics.fetch_not_modified();
                return Ok(());
            }
            Fetched::Failed(f) => Err(f),
            Fetched::Body { bytes, etag } => {
                let mark = shared_mark(&shared.config.authority);
                match active::check_candidate(&shared.config, shared.active.as_deref(), mark.as_ref(), &bytes, now) {
                    Ok(Candidate::Unchanged) => {
                        if let (Some(p), Some(e)) = (self.poller.as_mut(), etag) {
                            p.etag = Some(e);
                        }
                        Ok(())
                    }
                    Ok(Candidate::Newer(a)) => {
                        let header = RecordHeader { revision: a.bundle.revision, digest: a.digest.clone(), etag };
                        if let Some(p) = self.poller.as_mut() {
                            p.etag = header.etag.clone();
                        }
                        self.activate(*a, "fetched from the control endpoint");
                        self.publish(&header, &bytes);
                        Ok(())
                    }
                    Err(f) => Err(f),
                }
            }
        };
        match &result {
            Ok(()) => shared.metrics.fetch_success(),
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
    fn finish_fetch(&mut self, started_ms: u64, result: Result<(), Failure>) {
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
            let outcome = cause.map_or(Ok(()), Err);
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
                    Cause::HttpStatus | Cause::Connect | Cause::Timeout | Cause::Reset | Cause::Malformed => {
                        LogLevel::Warn
                    }
                    Cause::Signature
                    | Cause::Rollback
                    | Cause::Expired
                    | Cause::Invalid
                    | Cause::UnknownKey
                    | Cause::RevisionJump => LogLevel::Error,
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
            Ok(()) if previous != "ok" => log(
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

/// The HTTP context: one per request.
pub struct WardenHttp {
    /// `None` only if the host creates a stream before a successful `on_configure` (it does not): fail closed.
    shared: Option<Shared>,
    /// An MCP request waiting for (or decided on) its body.
    mcp: Option<mcp_flow::McpFlow>,
    /// An HTTP step-up waiting for the body its approval binds to.
    step_up: Option<step_up_flow::StepUpFlow>,
}

impl Context for WardenHttp {}

impl HttpContext for WardenHttp {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.mcp_response_headers()
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.mcp_response_body(body_size, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.step_up.is_some() {
            return self.step_up_body(body_size, end_of_stream);
        }
        self.mcp_request_body(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.step_up.is_some() {
            return self.step_up_trailers();
        }
        self.mcp_request_trailers()
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            self.send_http_response(
                503,
                vec![("content-type", "application/json"), ("cache-control", "no-store")],
                Some(br#"{"decision":"deny","reason":"no_active_bundle","rule":"default","revision":null}"#),
            );
            return Action::Pause;
        };
        let config = &shared.config;
        let start_ns = unix_nanos(self.get_current_time());
        let headers = self.get_http_request_headers_bytes();
        let request = scan_with(&headers, &config.token_header, &config.txn_token_header, &config.approval_header);
        let peer = self.mtls_peer();
        // The cache is only borrowed here, never across a host call; if it were busy, verify without it.
        let mut tokens = shared.tokens.try_borrow_mut().ok();
        let mut ev = evaluate_with(
            shared.active.as_deref(),
            config,
            &request,
            peer.as_ref(),
            tokens.as_deref_mut(),
            unix_secs(start_ns),
        );
        drop(tokens);
        let decision_id = shared.ids.next_id();
        if let Some(action) = self.mcp_request_headers(
            &shared,
            mcp_flow::HeaderPhase {
                headers: &headers,
                request: &request,
                ev: &ev,
                decision_id: &decision_id,
                start_ns,
                end_of_stream,
            },
        ) {
            return action;
        }

        let mut step_up = None;
        if let (true, Some(active), Some(agent)) = (ev.verdict.is_step_up(), shared.active.clone(), ev.agent.clone()) {
            let presented = Presented::from_header(request.approval);
            if !end_of_stream && config.mode == Mode::Enforce {
                // The approval binds to the body: hold the request until it is complete.
                return self.hold_for_body(&shared, &request, ev, active, agent, presented, decision_id, start_ns);
            }
            if end_of_stream {
                let check = StepUpCheck {
                    bundle: &active.bundle,
                    agent: &agent,
                    tool: ev.tool,
                    digest: body_digest(b""),
                    digest_of: "body",
                    presented: &presented,
                    decision_id: &decision_id,
                    now: unix_secs(start_ns),
                };
                let (verdict, info) = self.settle_step_up(&shared, ev.verdict.clone(), check, &mut ev.gov);
                ev.verdict = verdict;
                step_up = info;
            }
        }
        self.conclude(&shared, &request.reserved, &ev, &decision_id, start_ns, step_up.as_ref())
    }
}

/// A step-up approval to check: the call it must bind to and what the request presented.
pub(super) struct StepUpCheck<'a> {
    bundle: &'a CompiledBundle,
    agent: &'a Agent,
    tool: Option<&'a str>,
    /// Lower-case hex SHA-256 of the arguments (MCP) or the body (HTTP).
    digest: String,
    digest_of: &'static str,
    presented: &'a Presented,
    decision_id: &'a str,
    now: i64,
}

impl WardenHttp {
    /// The connection's mTLS peer (Envoy: the first URI SAN, and the certificate's SHA-256 as hex); `None` without a
    /// client certificate.
    fn mtls_peer(&self) -> Option<PeerIdentity> {
        let text = |name: &str| -> Option<String> {
            // The hostcall, not `Context::get_property`: the SDK unwraps a failed status (a trap).
            let bytes = hostcalls::get_property(vec!["connection", name]).ok()??;
            String::from_utf8(bytes).ok()
        };
        let uri_san = text("uri_san_peer_certificate");
        let digest = text("sha256_peer_certificate_digest");
        PeerIdentity::from_envoy(uri_san.as_deref(), digest.as_deref())
    }

    /// Checks the approval of a step-up verdict and claims it (single use); the verdict after that, and what the
    /// step-up reply must say when the call still needs an approval.
    fn settle_step_up(
        &self,
        shared: &Shared,
        verdict: Verdict,
        c: StepUpCheck<'_>,
        gov: &mut Governance,
    ) -> (Verdict, Option<StepUpInfo>) {
        let rule = verdict.rule_id().to_string();
        let call = CallBinding {
            agent: &c.agent.id,
            task: c.agent.task.as_ref().map(|t| t.id.as_str()),
            tool: c.tool.unwrap_or_default(),
            arguments_digest: &c.digest,
        };
        let result = approval::check(c.bundle, &rule, c.presented, &call, c.now)
            .map(|r| r.and_then(|a| claim_used(&a, c.now).map(|()| a)));
        let info = || {
            StepUpInfo::new(
                c.bundle,
                &StepUpCall {
                    call: CallBinding { ..call },
                    digest_of: c.digest_of,
                    decision_id: c.decision_id,
                    rule: &rule,
                    header: &shared.config.approval_header,
                },
            )
        };
        let out = match &result {
            None => (verdict, Some(info())),
            Some(Ok(a)) => {
                shared.metrics.approval_accepted();
                gov.approval = Some(ApprovalRecord::new(a));
                (verdict.with_approval(Ok(a)), None)
            }
            Some(Err(f)) => {
                shared.metrics.approval_refused(f.code());
                (verdict.with_approval(Err(*f)), Some(info()))
            }
        };
        gov.arguments_digest = Some(c.digest);
        out
    }

    /// Header changes for a request that (may) go upstream: the `reserved` headers removed (client-supplied
    /// `x-warden-*`, the approval), the normalized path, and the verified identity.
    fn prepare_upstream(
        &self,
        shared: &Shared,
        reserved: &[&str],
        rewrite_path: Option<&str>,
        decision_id: &str,
        agent: Option<&Agent>,
    ) {
        for name in reserved {
            self.set_http_request_header(name, None);
        }
        if let Some(path) = rewrite_path {
            self.set_http_request_header(":path", Some(path));
        }
        if shared.config.forward_identity_headers {
            self.add_http_request_header("x-warden-decision-id", decision_id);
            if let Some(agent) = agent {
                if header_safe(&agent.id) {
                    self.add_http_request_header("x-warden-agent", &agent.id);
                }
                if let Some(task) = agent.task.as_ref().filter(|t| header_safe(&t.id)) {
                    self.add_http_request_header("x-warden-task", &task.id);
                }
            }
        }
    }

    /// Writes the decision record (log and filter state) and counts the decision. Requests an exception allowed
    /// are logged at warn, whatever `log_decisions` says.
    fn write_record(
        &self,
        shared: &Shared,
        ev: &Evaluation<'_>,
        decision_id: &str,
        start_ns: u64,
        mcp: Option<&crate::mcp::McpRecord>,
    ) {
        let config = &shared.config;
        let latency_ns = unix_nanos(self.get_current_time()).saturating_sub(start_ns);
        let ctx = RecordContext {
            decision_id,
            time_ns: start_ns,
            environment: &config.environment,
            vm: &shared.vm,
            mode: config.mode,
            latency_ns,
        };
        shared.metrics.decision(record::decision_label(&ev.verdict, config.mode), ev.verdict.reason);
        if let Some(shadow) = &ev.gov.shadow {
            shared.metrics.shadow(shadow.decision);
        }
        let line = match mcp {
            Some(m) => record::build_mcp(ev, &ctx, m),
            None => record::build(ev, &ctx),
        };
        if ev.gov.exception.is_some() {
            shared.metrics.exception_used();
            log(LogLevel::Warn, &line);
        } else if config.log_decisions {
            log(LogLevel::Info, &line);
        }
        let _ = hostcalls::set_property(vec![DECISION_PROPERTY], Some(line.as_bytes()));
    }

    /// Acts on a decided HTTP request: continue (allow, or anything in shadow mode) or a local reply.
    fn conclude(
        &self,
        shared: &Shared,
        reserved: &[&str],
        ev: &Evaluation<'_>,
        decision_id: &str,
        start_ns: u64,
        step_up: Option<&StepUpInfo>,
    ) -> Action {
        if ev.verdict.allows() || shared.config.mode == Mode::Shadow {
            self.prepare_upstream(shared, reserved, ev.rewrite_path.as_deref(), decision_id, ev.agent.as_ref());
        }
        self.conclude_prepared(shared, ev, decision_id, start_ns, step_up)
    }

    /// [`WardenHttp::conclude`] for a request whose upstream headers were prepared already.
    fn conclude_prepared(
        &self,
        shared: &Shared,
        ev: &Evaluation<'_>,
        decision_id: &str,
        start_ns: u64,
        step_up: Option<&StepUpInfo>,
    ) -> Action {
        self.write_record(shared, ev, decision_id, start_ns, None);
        if ev.verdict.allows() || shared.config.mode == Mode::Shadow {
            return Action::Continue;
        }
        let reply = reply::build(&ev.verdict, decision_id, step_up.filter(|_| ev.verdict.is_step_up()));
        self.send_http_response(u32::from(reply.status), reply.header_pairs(), Some(&reply.body));
        Action::Pause
    }
}

/// The process's activation mark for bundles of `authority` (see [`active::Mark`]).
fn shared_mark(authority: &str) -> Option<active::Mark> {
    shared_get(&active::Mark::key(authority)).and_then(|(v, _)| active::Mark::decode(&v))
}

/// Merges the activation of `a` into the process's mark (compare-and-swap; a missing mark is created with a CAS
/// value Envoy never hands out for it, as the used-approval record is).
fn record_mark(authority: &str, a: &Active) {
    let key = active::Mark::key(authority);
    for _ in 0..16 {
        let current = shared_get(&key);
        let previous = current.as_ref().and_then(|(v, _)| active::Mark::decode(v));
        let next = active::Mark::merged(previous.as_ref(), a);
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

/// Records an approval as used in the process-wide record (compare-and-swap; a missing record is created with a
/// CAS value Envoy never hands out for it, so two workers creating it at once cannot both succeed).
fn claim_used(a: &warden_core::approval::VerifiedApproval, now: i64) -> Result<(), ApprovalFailure> {
    let id = approval::used_id(a);
    for _ in 0..16 {
        let current = shared_get(approval::USED_KEY);
        let next = approval::claim(current.as_ref().map(|(v, _)| v.as_slice()), &id, a.expires_at, now)?;
        // Envoy inserts a missing key whatever the CAS; an existing one needs the CAS it was read with.
        let cas = current.map_or(u32::MAX, |(_, cas)| cas);
        match hostcalls::set_shared_data(approval::USED_KEY, Some(&next), Some(cas)) {
            Ok(()) => return Ok(()),
            Err(Status::CasMismatch) => continue,
            Err(_) => return Err(ApprovalFailure::StoreUnavailable),
        }
    }
    Err(ApprovalFailure::StoreUnavailable)
}

/// Visible ASCII and spaces only: a value that cannot smuggle a header line or confuse the upstream's parser.
/// An identity that fails this is not forwarded (the upstream sees no identity header, never a mangled one).
fn header_safe(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|c| (0x20..0x7f).contains(&c))
}
