//! One whole request through the gate, event by event as the filter runs it, with shared data in memory: what
//! `warden eval`, `warden test` and the equivalence test decide with, so that they give warden.wasm's answer.
//!
//! [`run`] feeds the [`Flow`] the request headers, the body in one chunk (as the dev gateway does), and, when the
//! request went on and an upstream answer is given, the response; it carries out every [`Step`] as the filter does
//! (header edits on a copy of the headers, claims through [`run_claim`] against the caller's [`SharedStore`], the
//! record built once). [`Exchange::from_recorded`] turns a recorded request (`crate::request`) into the events the
//! host would deliver for it.

use crate::compile::CompiledBundle;
use crate::config::GateConfig;
use crate::facts::{Peer, PeerIdentity};
use crate::gate::outcome::Counters;
use crate::gate::record;
use crate::gate::reply::LocalReply;
use crate::gate::step::{Credentials, Edit, Next, ResponseNext, Step};
use crate::gate::store::{run_claim, SharedStore};
use crate::gate::view::RequestView;
use crate::gate::{Flow, Request};
use crate::pins::PinMemory;
use crate::request::{RecordedRequest, RequestError};

/// The decision id the driver gives a request when the caller has none.
pub const DRIVER_DECISION_ID: &str = "00000000-0000-4000-8000-000000000000";

/// The VM id the driver writes into records.
pub const DRIVER_VM: &str = "vm-offline";

/// What the host delivers for one request.
#[derive(Debug)]
pub struct Exchange<'c> {
    /// The request header map as Envoy hands it to filters: pseudo-headers first, names lower case, values bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request body; empty: the headers end the stream.
    pub body: Vec<u8>,
    /// The connection's mTLS peer.
    pub peer: Option<PeerIdentity>,
    /// Host time, nanoseconds since the epoch.
    pub time_ns: u64,
    pub decision_id: String,
    pub credentials: Credentials<'c>,
    /// What the upstream answers if the request reaches it (for a filtered `tools/list`); `None`: not simulated.
    pub response: Option<Response>,
    /// What the VM last saw pinned tools listed as (read by a `tools/call`, taught by a filtered `tools/list`);
    /// `None`: a VM that has listed nothing yet.
    pub listed: Option<&'c mut PinMemory>,
}

/// An upstream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Exchange<'_> {
    /// The events for a recorded request (validated), at `now` (seconds since the epoch), with the tokens in its
    /// headers verified.
    pub fn from_recorded(r: &RecordedRequest, now: i64) -> Result<Exchange<'static>, RequestError> {
        let mut headers = vec![
            (":authority".to_string(), r.authority()?.as_bytes().to_vec()),
            (":path".to_string(), r.path.as_bytes().to_vec()),
            (":method".to_string(), r.method.as_bytes().to_vec()),
            (":scheme".to_string(), b"http".to_vec()),
        ];
        for (k, v) in &r.headers {
            if !k.eq_ignore_ascii_case("host") {
                headers.push((k.to_ascii_lowercase(), v.as_bytes().to_vec()));
            }
        }
        Ok(Exchange {
            headers,
            body: r.body_bytes()?,
            peer: PeerIdentity::from_envoy(r.peer_uri_san.as_deref(), None),
            time_ns: u64::try_from(now).unwrap_or(0).saturating_mul(1_000_000_000),
            decision_id: DRIVER_DECISION_ID.to_string(),
            credentials: Credentials::Tokens(None),
            response: None,
            listed: None,
        })
    }
}

/// What one request came to.
#[derive(Debug)]
pub struct Run {
    /// The request in the gate after its last event: decision, identity, tool, governance, step-up.
    pub flow: Flow,
    /// The local reply the client got instead of the upstream's answer.
    pub reply: Option<LocalReply>,
    /// The request headers the upstream received (after the gate's edits), when the request went on.
    pub forwarded: Option<Vec<(String, Vec<u8>)>>,
    /// The response body the client got when the upstream answered ([`Exchange::response`]): rewritten for a
    /// filtered `tools/list`.
    pub response_body: Option<Vec<u8>>,
    /// The response headers the client got when the upstream answered, after the gate's edits (a rewritten
    /// `tools/list` answer changes its content type and drops its length).
    pub response_headers: Option<Vec<(String, String)>>,
    /// The decision record (one JSON object), as the filter logs it; `None` if the gate never asked for it.
    pub record: Option<String>,
    /// The counters the record bumps.
    pub counters: Option<Counters>,
}

impl Run {
    /// The status the client saw: the local reply's, else the upstream's (200 when not simulated).
    pub fn status(&self, exchange_response: Option<&Response>) -> u16 {
        match (&self.reply, exchange_response) {
            (Some(r), _) => r.status,
            (None, Some(r)) => r.status,
            (None, None) => 200,
        }
    }
}

/// Runs a request through the gate, the bundle being `None` while none is active.
pub fn run(
    config: &GateConfig,
    bundle: Option<&CompiledBundle>,
    exchange: Exchange<'_>,
    store: &mut impl SharedStore,
) -> Run {
    let Exchange { headers, body, peer, time_ns, decision_id, credentials, response, listed } = exchange;
    let mut fresh = PinMemory::default();
    let listed = listed.unwrap_or(&mut fresh);
    let view = RequestView::scan(&headers, config);
    let peer = Peer::given(peer.as_ref());
    let request =
        Request { view: &view, peer: &peer, credentials, decision_id, time_ns, end_of_stream: body.is_empty() };
    let (flow, step) = Flow::on_request_headers(config, bundle, request);
    let mut host =
        Host { flow, headers: headers.clone(), reply: None, record: None, counters: None, store, listed: &mut *listed };
    let mut next = host.act(config, bundle, step, &body, time_ns);
    if matches!(next, Next::Continue | Next::Pause) && !body.is_empty() {
        if let Some(b) = bundle {
            let step = host.flow.on_request_body(config, b, body.len(), true);
            next = host.act(config, bundle, step, &body, time_ns);
        }
    }
    let went_on = host.reply.is_none() && next == Next::Continue;
    let mut response_body = None;
    let mut response_headers = None;
    if let (true, Some(resp), Some(b)) = (went_on, response, bundle) {
        let mut out = resp.body.clone();
        let mut headers = resp.headers.clone();
        if host.flow.filters_response() {
            let get = |name: &str| resp.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
            let status = resp.status.to_string();
            let edits = host.flow.on_response_headers(
                Some(&status),
                get("content-type").map(String::as_str),
                get("content-encoding").map(String::as_str),
            );
            for (name, value) in edits {
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
                if let Some(v) = value {
                    headers.push((name.to_string(), v.to_string()));
                }
            }
            if let ResponseNext::Read { from } = host.flow.on_response_body(config, resp.body.len(), true) {
                let rest = resp.body.get(from..).unwrap_or_default();
                let now = i64::try_from(time_ns / 1_000_000_000).unwrap_or(i64::MAX);
                let len = resp.body.len();
                if let Some(body) = host.flow.on_response_body_bytes(config, b, rest, len, true, now, host.listed) {
                    out = body;
                }
                if host.flow.record_again() {
                    host.record = Some(record::build(&host.flow.record(config, bundle, DRIVER_VM, time_ns)));
                }
            }
        }
        response_body = Some(out);
        response_headers = Some(headers);
    }
    Run {
        forwarded: went_on.then_some(host.headers),
        flow: host.flow,
        reply: host.reply,
        response_body,
        response_headers,
        record: host.record,
        counters: host.counters,
    }
}

/// The driver's host: the headers as edited, and what was sent and written.
struct Host<'s, S> {
    flow: Flow,
    headers: Vec<(String, Vec<u8>)>,
    reply: Option<LocalReply>,
    record: Option<String>,
    counters: Option<Counters>,
    store: &'s mut S,
    listed: &'s mut PinMemory,
}

impl<S: SharedStore> Host<'_, S> {
    /// Carries out a step and those it leads to (reading the body, claims); returns where the request stands.
    fn act(
        &mut self,
        config: &GateConfig,
        bundle: Option<&CompiledBundle>,
        mut step: Step,
        body: &[u8],
        now_ns: u64,
    ) -> Next {
        loop {
            if step.edit_headers {
                let headers = &mut self.headers;
                self.flow.for_each_header_edit(config, |e| match e {
                    Edit::Remove(name) => headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name)),
                    Edit::Path(path) => {
                        headers.retain(|(k, _)| k != ":path");
                        headers.insert(0, (":path".to_string(), path.as_bytes().to_vec()));
                    }
                    Edit::Add(name, value) => headers.push((name.to_string(), value.as_bytes().to_vec())),
                });
            }
            if step.record {
                self.record = Some(record::build(&self.flow.record(config, bundle, DRIVER_VM, now_ns)));
                self.counters = Some(self.flow.counters(config));
            }
            step = match (step.next, bundle) {
                (Next::ReadBody, Some(b)) => self.flow.on_request_body_bytes(config, b, Some(body), self.listed),
                (Next::Claim(claim), Some(b)) => {
                    let outcome = run_claim(self.store, &claim);
                    self.flow.on_claimed(config, b, outcome)
                }
                (Next::Reply(r), _) => {
                    self.reply = Some(r);
                    return Next::Pause;
                }
                (other, _) => return other,
            };
        }
    }
}
