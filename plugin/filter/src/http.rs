//! The HTTP context: one per request. It reads what the host gives (headers as bytes, the mTLS peer, bodies), hands
//! each event to the gate ([`warden_core::gate::Flow`]) and carries out the step it returns: header edits, the
//! decision record, a local reply, a shared-data claim. It decides nothing itself.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use warden_core::activation::Active;
use warden_core::config::Config;
use warden_core::facts::{Peer, PeerProperty};
use warden_core::gate::{
    record, reply, run_claim, Credentials, Edit, Flow, Next, PinMemory, Request, RequestView, ResponseNext, Step,
};
use warden_core::ids::IdGen;
use warden_core::token_cache::TokenCache;

use crate::host::{log, unix_nanos, unix_secs, HostStore};
use crate::metrics::Metrics;

/// The filter-state key the decision record is written to (Envoy: `%FILTER_STATE(wasm.warden_decision:PLAIN)%`).
pub const DECISION_PROPERTY: &str = record::RECORD_PROPERTY;

/// What the root context shares with its HTTP contexts (read-only on the request path). A new bundle replaces
/// `active` in the root; HTTP contexts created before keep the `Rc` they cloned.
#[derive(Clone)]
pub struct Shared {
    pub config: Rc<Config>,
    pub active: Option<Rc<Active>>,
    pub ids: Rc<IdGen>,
    pub metrics: Rc<Metrics>,
    /// This VM's verified-token cache (hits skip signature verification only); cleared when a bundle activates.
    pub tokens: Rc<RefCell<TokenCache>>,
    /// What this VM last saw MCP servers' pinned tools listed as (read by `tools/call`s, taught by filtered
    /// `tools/list` answers); per VM, kept across reconfigurations.
    pub listed: Rc<RefCell<PinMemory>>,
    /// This VM's id in decision records (`vm-` and 8 random hex digits).
    pub vm: Rc<str>,
}

/// The HTTP context: one per request.
pub struct WardenHttp {
    /// `None` only if the host creates a stream before a successful `on_configure` (it does not): fail closed.
    pub shared: Option<Shared>,
    /// The request in the gate, with the bundle it was decided with.
    pub flow: Option<(Flow, Option<Rc<Active>>)>,
}

impl Context for WardenHttp {}

impl HttpContext for WardenHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            let r = reply::unconfigured();
            self.send_http_response(u32::from(r.status), r.header_pairs(), Some(&r.body));
            return Action::Pause;
        };
        let config = &shared.config.gate;
        let time_ns = unix_nanos(self.get_current_time());
        let headers = self.get_http_request_headers_bytes();
        let view = RequestView::scan(&headers, config);
        // The mTLS peer's properties are host calls: read only if a token check needs them.
        let peer = Peer::host(&peer_property);
        let active = shared.active.clone();
        // The cache is only borrowed here, never across a host call; if it were busy, verify without it.
        let mut tokens = shared.tokens.try_borrow_mut().ok();
        let request = Request {
            view: &view,
            peer: &peer,
            credentials: Credentials::Tokens(tokens.as_deref_mut()),
            decision_id: shared.ids.next_id(),
            time_ns,
            end_of_stream,
        };
        let (flow, step) = Flow::on_request_headers(config, active.as_deref().map(|a| &a.bundle), request);
        drop(tokens);
        self.flow = Some((flow, active));
        self.act(&shared, step, 0, Some(time_ns))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some((flow, Some(active))) = self.flow.as_mut() else { return Action::Continue };
        let step = flow.on_request_body(&shared.config.gate, &active.bundle, body_size, end_of_stream);
        self.act(&shared, step, body_size, None)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some((flow, Some(active))) = self.flow.as_mut() else { return Action::Continue };
        let step = flow.on_request_trailers(&shared.config.gate, &active.bundle);
        self.act(&shared, step, 0, None)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.flow.as_ref().is_some_and(|(f, _)| f.filters_response()) {
            return Action::Continue;
        }
        // One host call for the map instead of one per header; the first value of a name, as a single lookup gives.
        let headers = self.get_http_response_headers_bytes();
        let header = |name: &str| -> Option<String> {
            let (_, value) = headers.iter().find(|(k, _)| k == name)?;
            String::from_utf8(value.clone()).ok()
        };
        let (status, content_type, encoding) = (header(":status"), header("content-type"), header("content-encoding"));
        let Some((flow, _)) = self.flow.as_mut() else { return Action::Continue };
        let edits = flow.on_response_headers(status.as_deref(), content_type.as_deref(), encoding.as_deref());
        for (name, value) in edits {
            self.set_http_response_header(name, value);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some((flow, _)) = self.flow.as_ref() else { return Action::Continue };
        let next = flow.on_response_body(&shared.config.gate, body_size, end_of_stream);
        self.respond(&shared, next, Some(body_size), end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some((flow, _)) = self.flow.as_ref() else { return Action::Continue };
        let next = flow.on_response_trailers();
        self.respond(&shared, next, None, true)
    }
}

impl WardenHttp {
    /// Carries out what the flow says of a filtered response's body: `body_size` is what is buffered (`None` at the
    /// trailers, where the host gives no size: everything buffered is read).
    fn respond(
        &mut self,
        shared: &Shared,
        next: ResponseNext,
        body_size: Option<usize>,
        end_of_stream: bool,
    ) -> Action {
        match next {
            ResponseNext::Continue => Action::Continue,
            ResponseNext::Pause => Action::Pause,
            ResponseNext::Discard => {
                if let Some(size) = body_size.filter(|&n| n > 0) {
                    self.set_http_response_body(0, size, &[]);
                }
                Action::Continue
            }
            ResponseNext::Read { from } => {
                let Some(Some(active)) = self.flow.as_ref().map(|(_, a)| a.clone()) else { return Action::Continue };
                let want = body_size.map_or(MAX_READ, |n| n.saturating_sub(from));
                let rest =
                    if want == 0 { Vec::new() } else { self.get_http_response_body(from, want).unwrap_or_default() };
                let total = body_size.unwrap_or(from.saturating_add(rest.len()));
                let now = unix_secs(unix_nanos(self.get_current_time()));
                let Some((flow, _)) = self.flow.as_mut() else { return Action::Continue };
                let config = &shared.config.gate;
                // Never borrowed across a host call; if it were busy, the answer is still filtered, only not learnt.
                let mut spare = PinMemory::default();
                let mut memory = shared.listed.try_borrow_mut().ok();
                let listed = memory.as_deref_mut().unwrap_or(&mut spare);
                let released =
                    flow.on_response_body_bytes(config, &active.bundle, &rest, total, end_of_stream, now, listed);
                drop(memory);
                match released {
                    Some(body) => {
                        self.set_http_response_body(0, total, &body);
                        if self.flow.as_ref().is_some_and(|(f, _)| f.record_again()) {
                            self.record_again(shared, &active);
                        }
                        Action::Continue
                    }
                    None => Action::Pause,
                }
            }
        }
    }
}

impl WardenHttp {
    /// The decision record of a `tools/list` whose answer lost tools to pins, written again with them (see
    /// `Flow::record_again`): a warning in the log, and the filter state replaced for the access log.
    fn record_again(&self, shared: &Shared, active: &Active) {
        let Some((flow, _)) = self.flow.as_ref() else { return };
        let now_ns = unix_nanos(self.get_current_time());
        let line = record::build(&flow.record(&shared.config.gate, Some(&active.bundle), &shared.vm, now_ns));
        log(LogLevel::Warn, &line);
        let _ = hostcalls::set_property(vec![DECISION_PROPERTY], Some(line.as_bytes()));
    }
}

/// Most bytes read of a buffered response body whose size the host does not give (at the trailers): more than any
/// `max_list_response_bytes`.
const MAX_READ: usize = 1 << 30;

impl WardenHttp {
    /// Carries out a step (and the steps it leads to: reading the body, claiming in shared data). `body_size` is
    /// what a [`Next::ReadBody`] reads. `now_ns`: the host clock already read in this callback with no host call
    /// since (the request headers' time), which the first step's record takes instead of a second clock read.
    fn act(&mut self, shared: &Shared, mut step: Step, body_size: usize, mut now_ns: Option<u64>) -> Action {
        let config = &shared.config;
        loop {
            let Some((flow, active)) = self.flow.as_ref() else { return Action::Continue };
            let bundle = active.as_deref().map(|a| &a.bundle);
            if step.edit_headers {
                flow.for_each_header_edit(&config.gate, |e| match e {
                    Edit::Remove(name) => self.set_http_request_header(name, None),
                    Edit::Path(path) => self.set_http_request_header(":path", Some(path)),
                    Edit::Add(name, value) => self.add_http_request_header(name, value),
                });
            }
            if step.record {
                let now_ns = now_ns.take().unwrap_or_else(|| unix_nanos(self.get_current_time()));
                let fields = flow.record(&config.gate, bundle, &shared.vm, now_ns);
                let line = record::build(&fields);
                if config.decision_fields {
                    record::field_properties(&fields, |key, value| {
                        let _ = hostcalls::set_property(vec![key], Some(value.as_bytes()));
                    });
                }
                let counters = flow.counters(&config.gate);
                shared.metrics.recorded(&counters);
                if counters.exception_used {
                    log(LogLevel::Warn, &line);
                } else if config.log_decisions {
                    log(LogLevel::Info, &line);
                }
                let _ = hostcalls::set_property(vec![DECISION_PROPERTY], Some(line.as_bytes()));
            }
            // Whatever comes next follows a host call: its record reads the clock.
            now_ns = None;
            let next = step.next;
            let active = active.clone();
            let bundle = active.as_deref().map(|a| &a.bundle);
            step = match (next, bundle) {
                (Next::ReadBody, Some(bundle)) => {
                    let body = if body_size == 0 { Some(Vec::new()) } else { self.get_http_request_body(0, body_size) };
                    let Some((flow, _)) = self.flow.as_mut() else { return Action::Continue };
                    // Never borrowed across a host call; if it were busy, every pinned tool counts as changed.
                    let unknown;
                    let memory = shared.listed.try_borrow().ok();
                    let listed = match memory.as_deref() {
                        Some(m) => m,
                        None => {
                            unknown = PinMemory::unknown();
                            &unknown
                        }
                    };
                    flow.on_request_body_bytes(&config.gate, bundle, body.as_deref(), listed)
                }
                (Next::Claim(claim), Some(bundle)) => {
                    let outcome = run_claim(&mut HostStore, &claim);
                    let Some((flow, _)) = self.flow.as_mut() else { return Action::Continue };
                    flow.on_claimed(&config.gate, bundle, outcome)
                }
                (other, _) => return self.finish(other),
            };
        }
    }

    fn finish(&self, next: Next) -> Action {
        match next {
            Next::Continue => Action::Continue,
            Next::Pause | Next::ReadBody | Next::Claim(_) => Action::Pause,
            Next::Reply(r) => {
                self.send_http_response(u32::from(r.status), r.header_pairs(), Some(&r.body));
                Action::Pause
            }
        }
    }
}

/// One property of the connection's mTLS peer (Envoy `connection.uri_san_peer_certificate`, the first URI SAN, and
/// `connection.sha256_peer_certificate_digest`, the certificate's SHA-256 as hex); `None` without a client
/// certificate.
fn peer_property(property: PeerProperty) -> Option<String> {
    let name = match property {
        PeerProperty::UriSan => "uri_san_peer_certificate",
        PeerProperty::CertSha256 => "sha256_peer_certificate_digest",
    };
    // The hostcall, not `Context::get_property`: the SDK unwraps a failed status (a trap).
    let bytes = hostcalls::get_property(vec!["connection", name]).ok()??;
    String::from_utf8(bytes).ok()
}
