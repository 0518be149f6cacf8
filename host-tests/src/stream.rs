//! HTTP streams as Envoy runs them through one Wasm filter: request and response flows with
//! pause/resume, body buffering with a limit, deferred local replies that pass through the
//! filter's response callbacks, and the `on_log`/`on_done`/`on_delete` ending.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::abi::{Action, Headers};
use crate::plugin::Worker;
use crate::vm::{header_value, Deferred, LogEntry};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Peer-certificate facts of a TLS connection (all optional; absent TLS is `None` on the request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub tls_version: String,
    pub requested_server_name: Option<String>,
    pub uri_san_peer_certificate: Option<String>,
    pub dns_san_peer_certificate: Option<String>,
    pub subject_peer_certificate: Option<String>,
    pub sha256_peer_certificate_digest: Option<String>,
}

impl TlsInfo {
    /// mTLS with a client certificate carrying this URI SAN (e.g. a SPIFFE id).
    pub fn mtls_with_uri_san(uri: impl Into<String>) -> TlsInfo {
        TlsInfo { tls_version: "TLSv1.3".into(), uri_san_peer_certificate: Some(uri.into()), ..TlsInfo::default() }
    }

    pub(crate) fn peer_certificate_presented(&self) -> bool {
        self.uri_san_peer_certificate.is_some()
            || self.dns_san_peer_certificate.is_some()
            || self.subject_peer_certificate.is_some()
            || self.sha256_peer_certificate_digest.is_some()
    }
}

/// A downstream request to run through the filter.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub scheme: String,
    /// Regular headers (lowercased when the map is built).
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Sizes of the body chunks as they arrive; None means one chunk.
    pub body_chunks: Option<Vec<usize>>,
    pub trailers: Headers,
    pub source_address: SocketAddr,
    pub destination_address: SocketAddr,
    pub tls: Option<TlsInfo>,
    /// `x-request-id`; generated when None and the headers carry none.
    pub request_id: Option<String>,
    /// Dynamic metadata as JSON (`{"filter_metadata": {"<namespace>": {...}}}`).
    pub metadata: serde_json::Value,
    pub protocol: String,
    /// The downstream connection (`connection.id`): requests given the same id came on one kept-alive connection,
    /// as in Envoy. None: a connection of its own.
    pub connection_id: Option<u64>,
}

impl HttpRequest {
    pub fn new(method: &str, path: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            authority: "example.com".into(),
            scheme: "http".into(),
            headers: Vec::new(),
            body: Vec::new(),
            body_chunks: None,
            trailers: Vec::new(),
            source_address: SocketAddr::from(([10, 0, 0, 1], 41000)),
            destination_address: SocketAddr::from(([10, 0, 0, 2], 8080)),
            tls: None,
            request_id: None,
            metadata: serde_json::Value::Null,
            protocol: "HTTP/1.1".into(),
            connection_id: None,
        }
    }

    pub fn get(path: &str) -> HttpRequest {
        HttpRequest::new("GET", path)
    }

    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> HttpRequest {
        HttpRequest::new("POST", path).body(body)
    }

    pub fn header(mut self, k: &str, v: &str) -> HttpRequest {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> HttpRequest {
        self.body = body.into();
        self
    }

    pub fn chunks(mut self, sizes: Vec<usize>) -> HttpRequest {
        self.body_chunks = Some(sizes);
        self
    }

    pub fn trailer(mut self, k: &str, v: &str) -> HttpRequest {
        self.trailers.push((k.into(), v.into()));
        self
    }

    pub fn authority(mut self, a: &str) -> HttpRequest {
        self.authority = a.into();
        self
    }

    pub fn source(mut self, addr: SocketAddr) -> HttpRequest {
        self.source_address = addr;
        self
    }

    pub fn tls(mut self, tls: TlsInfo) -> HttpRequest {
        self.tls = Some(tls);
        self
    }

    /// Sends it on the downstream connection `id` (see [`HttpRequest::connection_id`]).
    pub fn connection(mut self, id: u64) -> HttpRequest {
        self.connection_id = Some(id);
        self
    }

    pub fn request_id(mut self, id: &str) -> HttpRequest {
        self.request_id = Some(id.into());
        self
    }

    /// The request header map as Envoy's HCM hands it to filters: pseudo-headers first, keys
    /// lowercased, `x-forwarded-proto` and `x-request-id` added when missing.
    pub fn header_map(&self) -> Headers {
        self.clone_parts().header_map()
    }

    fn clone_parts(&self) -> RequestParts {
        RequestParts {
            authority: self.authority.clone(),
            path: self.path.clone(),
            method: self.method.clone(),
            scheme: self.scheme.clone(),
            headers: self.headers.clone(),
            body_len: self.body.len(),
            request_id: self.request_id.clone(),
        }
    }

    /// The parts of the header map, moved out of a request that is being sent (its strings are not copied).
    fn take_parts(&mut self) -> RequestParts {
        RequestParts {
            authority: std::mem::take(&mut self.authority),
            path: std::mem::take(&mut self.path),
            method: std::mem::take(&mut self.method),
            scheme: self.scheme.clone(),
            headers: std::mem::take(&mut self.headers),
            body_len: self.body.len(),
            request_id: self.request_id.take(),
        }
    }
}

/// A body cut into the chunks it arrives in (one chunk when no sizes are given; nothing for an empty body).
fn body_pieces(body: &[u8], chunks: Option<&[usize]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    match chunks {
        Some(sizes) if !body.is_empty() => {
            let mut pos = 0;
            for &n in sizes {
                let end = (pos + n).min(body.len());
                out.push(body[pos..end].to_vec());
                pos = end;
            }
            if pos < body.len() {
                out.push(body[pos..].to_vec());
            }
        }
        _ if !body.is_empty() => out.push(body.to_vec()),
        _ => {}
    }
    out
}

/// What [`HttpRequest::header_map`] is built from.
struct RequestParts {
    authority: String,
    path: String,
    method: String,
    scheme: String,
    headers: Headers,
    body_len: usize,
    request_id: Option<String>,
}

impl RequestParts {
    fn header_map(self) -> Headers {
        let mut map: Headers = Vec::with_capacity(self.headers.len() + 7);
        map.push((":authority".into(), self.authority));
        map.push((":path".into(), self.path));
        map.push((":method".into(), self.method));
        map.push((":scheme".into(), self.scheme.clone()));
        for (mut k, v) in self.headers {
            k.make_ascii_lowercase();
            map.push((k, v));
        }
        let has = |m: &Headers, k: &str| m.iter().any(|(mk, _)| mk == k);
        if self.body_len != 0 && !has(&map, "content-length") && !has(&map, "transfer-encoding") {
            map.push(("content-length".into(), self.body_len.to_string()));
        }
        if !has(&map, "x-forwarded-proto") {
            map.push(("x-forwarded-proto".into(), self.scheme));
        }
        if !has(&map, "x-request-id") {
            let id = self.request_id.unwrap_or_else(|| {
                let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                format!("00000000-0000-4000-8000-{n:012x}")
            });
            map.push(("x-request-id".into(), id));
        }
        map
    }
}

/// A reply from `proxy_send_local_response` or made by the host itself (413, 503 …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    /// Headers the filter asked for (lowercased).
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Response code details (`wasm_fail_stream`, `request_payload_too_large`, the filter's own).
    pub details: String,
    pub grpc_status: Option<i32>,
}

impl LocalReply {
    fn host(status: u16, body: &str, details: &str) -> LocalReply {
        LocalReply {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            details: details.into(),
            grpc_status: None,
        }
    }

    /// The response header map Envoy builds: `:status`, the filter's headers, then
    /// `content-length` and (unless given) `content-type: text/plain` for a non-empty body.
    pub fn header_map(&self) -> Headers {
        let mut map: Headers = vec![(":status".into(), self.status.to_string())];
        map.extend(self.headers.iter().cloned());
        if !self.body.is_empty() {
            map.retain(|(k, _)| k != "content-length");
            map.push(("content-length".into(), self.body.len().to_string()));
            if !map.iter().any(|(k, _)| k == "content-type") {
                map.push(("content-type".into(), "text/plain".into()));
            }
        }
        map
    }
}

/// The request as the upstream received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardedRequest {
    /// Including pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`).
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    /// False when only part of the request got through (e.g. headers continued, body paused).
    pub complete: bool,
}

impl ForwardedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn method(&self) -> &str {
        self.header(":method").unwrap_or("")
    }

    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or("")
    }
}

/// What an upstream answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub body_chunks: Option<Vec<usize>>,
    pub trailers: Headers,
}

impl UpstreamResponse {
    pub fn new(status: u16) -> UpstreamResponse {
        UpstreamResponse { status, headers: Vec::new(), body: Vec::new(), body_chunks: None, trailers: Vec::new() }
    }

    pub fn ok(body: impl Into<Vec<u8>>) -> UpstreamResponse {
        UpstreamResponse::new(200).body(body)
    }

    pub fn header(mut self, k: &str, v: &str) -> UpstreamResponse {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> UpstreamResponse {
        self.body = body.into();
        self
    }
}

/// The upstream behind the filter; called only when the filter lets the request through.
pub trait Upstream {
    fn respond(&mut self, request: &ForwardedRequest) -> UpstreamResponse;
}

impl<F: FnMut(&ForwardedRequest) -> UpstreamResponse> Upstream for F {
    fn respond(&mut self, request: &ForwardedRequest) -> UpstreamResponse {
        self(request)
    }
}

/// Always answers the same response.
#[derive(Clone, Debug)]
pub struct CannedUpstream(pub UpstreamResponse);

impl Upstream for CannedUpstream {
    fn respond(&mut self, _request: &ForwardedRequest) -> UpstreamResponse {
        self.0.clone()
    }
}

/// Answers a canned response and records every request it received.
#[derive(Clone, Debug)]
pub struct RecordingUpstream {
    pub response: UpstreamResponse,
    pub requests: Vec<ForwardedRequest>,
}

impl RecordingUpstream {
    pub fn new(response: UpstreamResponse) -> RecordingUpstream {
        RecordingUpstream { response, requests: Vec::new() }
    }
}

impl Upstream for RecordingUpstream {
    fn respond(&mut self, request: &ForwardedRequest) -> UpstreamResponse {
        self.requests.push(request.clone());
        self.response.clone()
    }
}

/// Forwards to a real HTTP/1.1 server on loopback.
#[derive(Clone, Debug)]
pub struct HttpUpstream {
    pub address: SocketAddr,
}

/// The largest piece of a body read from a socket that the host hands to the filter in one `on_*_body` call (the
/// dev gateway's requests, [`HttpUpstream`]'s responses): Envoy's codec passes data on as it is read, in slices of
/// at most 16 KiB, so a large body arrives in several callbacks and a paused body can pass the buffer limit
/// (413 for a request, 500 for a response), as in Envoy.
pub const BODY_PIECE: usize = 16 * 1024;

/// `body_chunks` for a body of `len` bytes read from a socket: pieces of [`BODY_PIECE`] (None for an empty body).
pub fn socket_pieces(len: usize) -> Option<Vec<usize>> {
    (len > 0).then(|| vec![BODY_PIECE; len.div_ceil(BODY_PIECE)])
}

impl Upstream for HttpUpstream {
    fn respond(&mut self, request: &ForwardedRequest) -> UpstreamResponse {
        match crate::http_call::request(self.address, &request.headers, &request.body) {
            crate::http_call::CallResult::Response(r) => UpstreamResponse {
                status: r.status().unwrap_or(502),
                headers: r.headers.into_iter().filter(|(k, _)| k != ":status").collect(),
                body_chunks: socket_pieces(r.body.len()),
                body: r.body,
                trailers: r.trailers,
            },
            crate::http_call::CallResult::Reset => UpstreamResponse::new(503).body(
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            ),
        }
    }
}

/// Where a flow is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowState {
    #[default]
    NotStarted,
    /// The filter paused in `on_*_headers`.
    HeadersPaused,
    /// Headers passed; body chunks pass through.
    Streaming,
    /// The filter paused in `on_*_body`: the host buffers.
    BodyPaused,
    TrailersPaused,
    /// The end of this direction went through (or the direction was abandoned by a local reply).
    Done,
}

/// One direction (request or response) of a stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flow {
    pub state: FlowState,
    pub headers_forwarded: bool,
    pub end_received: bool,
    pub held: Vec<u8>,
    pub held_end: bool,
    pub held_trailers: Option<Headers>,
    pub forwarded_headers: Option<Headers>,
    pub forwarded_body: Vec<u8>,
    pub forwarded_trailers: Headers,
    pub complete: bool,
}

/// Stream facts for properties.
#[derive(Clone, Debug)]
pub(crate) struct StreamInfo {
    pub source_address: SocketAddr,
    pub destination_address: SocketAddr,
    pub tls: Option<TlsInfo>,
    pub metadata: serde_json::Value,
    pub protocol: String,
    pub start_time: SystemTime,
    pub connection_id: u64,
}

/// A filter callback and what it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackRecord {
    pub callback: &'static str,
    /// For header/body/trailer callbacks; None when the callback trapped or returns nothing.
    pub action: Option<Action>,
}

/// Per-stream host state (in the VM's store).
#[derive(Debug)]
pub(crate) struct StreamData {
    pub info: StreamInfo,
    /// Request headers, request trailers, response headers, response trailers.
    pub maps: [Headers; 4],
    pub live: [bool; 4],
    pub bodies: [Vec<u8>; 2],
    pub body_live: [bool; 2],
    pub access_log: bool,
    pub filter_state: BTreeMap<String, Vec<u8>>,
    pub flows: [Flow; 2],
    pub local_reply: Option<LocalReply>,
    pub reset: Option<String>,
    pub bypass: bool,
    pub fail_closed: bool,
    pub trapped: bool,
    pub callbacks: Vec<CallbackRecord>,
    pub log_seq_start: u64,
    pub upstream_called: bool,
    /// What the upstream was given, moved out of the request flow (`flows[0].forwarded_*`) when the upstream is
    /// called: the flow is complete then and does not change any more. `forwarded()` reads it from here after.
    pub upstream_request: Option<ForwardedRequest>,
    pub created: bool,
}

impl StreamData {
    pub(crate) fn code_details(&self) -> &str {
        match &self.local_reply {
            Some(r) => &r.details,
            None => "via_upstream",
        }
    }

    fn terminated(&self, d: usize) -> bool {
        self.reset.is_some() || (d == 0 && self.local_reply.is_some())
    }
}

/// A stream on a worker: (worker index, context id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub worker: usize,
    pub context_id: u32,
}

/// Where a stream stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopPoint {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    /// The request went through but nobody answered (low-level API without a response).
    Upstream,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A full response went downstream (from the upstream or a local reply).
    Completed,
    /// The stream never finished: the filter paused and nothing resumed it. In Envoy the client
    /// would wait until a timeout.
    Hung { at: StopPoint },
    /// The stream was reset (`proxy_close_stream`, local reply after response headers …).
    Reset { details: String },
}

/// Everything observable about one finished stream.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub outcome: Outcome,
    pub worker: usize,
    pub context_id: u32,
    /// Status sent downstream (None when nothing was sent).
    pub status: Option<u16>,
    /// Response headers sent downstream (without `:status`).
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    /// Set when the response is a local reply (the filter's or the host's).
    pub local_reply: Option<LocalReply>,
    /// What the upstream received, if any of the request got through.
    pub forwarded: Option<ForwardedRequest>,
    /// Whether the upstream was asked for a response.
    pub upstream_called: bool,
    /// Filter state written with `proxy_set_property` (keys `wasm.<path>`).
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// Log lines this VM emitted while the stream was alive.
    pub logs: Vec<LogEntry>,
    /// The filter callbacks that ran, in order, with their results.
    pub callbacks: Vec<CallbackRecord>,
    /// A callback of this stream trapped (the VM is now failed).
    pub trapped: bool,
    /// True when the filter was skipped (fail-open after a VM failure).
    pub filter_skipped: bool,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_local_reply(&self) -> bool {
        self.local_reply.is_some()
    }

    pub fn filter_state_str(&self, key: &str) -> Option<String> {
        self.filter_state.get(key).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Log messages (any level) of this stream containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(needle))
    }
}

/// A view of a live stream for step-by-step tests.
#[derive(Clone, Debug)]
pub struct StreamSnapshot {
    pub request_state: FlowState,
    pub response_state: FlowState,
    pub request_headers_forwarded: bool,
    pub request_complete: bool,
    pub response_complete: bool,
    /// The request as forwarded so far.
    pub forwarded: Option<ForwardedRequest>,
    pub local_reply: Option<LocalReply>,
    pub reset: Option<String>,
    pub callbacks: Vec<CallbackRecord>,
    /// Request body bytes the host holds back from the filter (paused at headers).
    pub held_request_bytes: usize,
}

const CB_NAMES: [[&str; 3]; 2] = [
    ["proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers"],
    ["proxy_on_response_headers", "proxy_on_response_body", "proxy_on_response_trailers"],
];

impl StreamData {
    pub(crate) fn new(info: StreamInfo, request_headers: Headers, log_seq_start: u64) -> Self {
        StreamData {
            info,
            maps: [request_headers, Vec::new(), Vec::new(), Vec::new()],
            live: [false; 4],
            bodies: [Vec::new(), Vec::new()],
            body_live: [false; 2],
            access_log: false,
            filter_state: BTreeMap::new(),
            flows: [Flow::default(), Flow::default()],
            local_reply: None,
            reset: None,
            bypass: false,
            fail_closed: false,
            trapped: false,
            callbacks: Vec::new(),
            log_seq_start,
            upstream_called: false,
            upstream_request: None,
            created: false,
        }
    }

    pub(crate) fn forwarded(&self) -> Option<ForwardedRequest> {
        if let Some(r) = &self.upstream_request {
            return Some(r.clone());
        }
        let f = &self.flows[0];
        f.forwarded_headers.as_ref().map(|h| ForwardedRequest {
            headers: h.clone(),
            body: f.forwarded_body.clone(),
            trailers: f.forwarded_trailers.clone(),
            complete: f.complete,
        })
    }

    pub(crate) fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            request_state: self.flows[0].state,
            response_state: self.flows[1].state,
            request_headers_forwarded: self.flows[0].headers_forwarded,
            request_complete: self.flows[0].complete,
            response_complete: self.flows[1].complete,
            forwarded: self.forwarded(),
            local_reply: self.local_reply.clone(),
            reset: self.reset.clone(),
            callbacks: self.callbacks.clone(),
            held_request_bytes: self.flows[0].held.len(),
        }
    }

    pub(crate) fn stop_point(&self) -> StopPoint {
        let point = |d: usize| {
            let f = &self.flows[d];
            let (h, b, t) = if d == 0 {
                (StopPoint::RequestHeaders, StopPoint::RequestBody, StopPoint::RequestTrailers)
            } else {
                (StopPoint::ResponseHeaders, StopPoint::ResponseBody, StopPoint::ResponseTrailers)
            };
            match f.state {
                FlowState::NotStarted | FlowState::HeadersPaused => h,
                FlowState::TrailersPaused => t,
                _ => b,
            }
        };
        if self.local_reply.is_none() && !self.flows[0].complete {
            point(0)
        } else if self.flows[1].state == FlowState::NotStarted {
            StopPoint::Upstream
        } else {
            point(1)
        }
    }
}

/// The flow machinery, run on the worker that owns the stream.
impl Worker {
    pub(crate) fn st(&mut self, ctx: u32) -> Option<&mut StreamData> {
        self.store.data_mut().streams.get_mut(&ctx)
    }

    fn allow_stop_iteration(&self) -> bool {
        self.settings.allow_on_headers_stop_iteration
    }

    /// Calls a header/body/trailer callback; a trap fails the stream per the failure policy.
    fn filter_cb(&mut self, ctx: u32, d: usize, kind: usize, a: i32, b: i32) -> Action {
        let was_failed = self.failed.is_some();
        let Some(st) = self.st(ctx) else {
            return Action::Continue;
        };
        // A stream that meets a VM failed since it started fails as it would had its own callback trapped:
        // 503 (fail closed), or the filter is skipped from now on (fail open). A local reply already under way
        // (that 503, or one sent before the trap) passes the failed VM.
        if st.bypass || (was_failed && st.local_reply.is_some()) {
            return Action::Continue;
        }
        let name = CB_NAMES[d][kind];
        let c = ctx as i32;
        let r = if was_failed {
            Err(())
        } else {
            match (d, kind) {
                (0, 0) => self.call(name, |f| f.request_headers.as_ref(), ctx, (c, a, b)),
                (0, 1) => self.call(name, |f| f.request_body.as_ref(), ctx, (c, a, b)),
                (0, _) => self.call(name, |f| f.request_trailers.as_ref(), ctx, (c, a)),
                (_, 0) => self.call(name, |f| f.response_headers.as_ref(), ctx, (c, a, b)),
                (_, 1) => self.call(name, |f| f.response_body.as_ref(), ctx, (c, a, b)),
                (_, _) => self.call(name, |f| f.response_trailers.as_ref(), ctx, (c, a)),
            }
        };
        let fail_open = self.settings.fail_open;
        let Some(st) = self.st(ctx) else {
            return Action::Continue;
        };
        match r {
            Ok(v) => {
                let action = v.map(Action::from_raw).unwrap_or(Action::Continue);
                st.callbacks.push(CallbackRecord { callback: name, action: Some(action) });
                action
            }
            Err(()) => {
                if !was_failed {
                    st.callbacks.push(CallbackRecord { callback: name, action: None });
                    st.trapped = true;
                }
                if fail_open {
                    st.bypass = true;
                    Action::Continue
                } else {
                    self.store.data_mut().deferred.push(Deferred::LocalReply {
                        context: ctx,
                        reply: LocalReply::host(503, "", "wasm_fail_stream"),
                    });
                    Action::Pause
                }
            }
        }
    }

    /// After a local reply or close in the same callback, any return value counts as stop.
    fn stop_override(&self, ctx: u32, action: Action) -> Action {
        let stop = self.store.data().deferred.iter().any(
            |a| matches!(a, Deferred::LocalReply { context, .. } | Deferred::Close { context } if *context == ctx),
        );
        if stop {
            Action::Pause
        } else {
            action
        }
    }

    /// Runs the actions hostcalls deferred until the guest returned.
    pub(crate) fn run_deferred(&mut self) {
        loop {
            let actions = std::mem::take(&mut self.store.data_mut().deferred);
            if actions.is_empty() {
                return;
            }
            for a in actions {
                match a {
                    Deferred::Continue { context, response } => self.resume(context, response as usize),
                    Deferred::Close { context } => {
                        if let Some(st) = self.st(context) {
                            if st.reset.is_none() {
                                st.reset = Some("wasm_close_stream".into());
                            }
                        }
                    }
                    Deferred::LocalReply { context, reply } => self.apply_local_reply(context, reply),
                }
            }
        }
    }

    fn release_headers(&mut self, ctx: u32, d: usize) {
        if let Some(st) = self.st(ctx) {
            if !st.flows[d].headers_forwarded {
                st.flows[d].headers_forwarded = true;
                st.flows[d].forwarded_headers = Some(st.maps[2 * d].clone());
                st.live[2 * d] = false;
            }
        }
    }

    fn release_body(&mut self, ctx: u32, d: usize) {
        if let Some(st) = self.st(ctx) {
            let body = std::mem::take(&mut st.bodies[d]);
            st.flows[d].forwarded_body.extend(body);
            st.body_live[d] = false;
        }
    }

    fn complete(&mut self, ctx: u32, d: usize) {
        self.release_headers(ctx, d);
        self.release_body(ctx, d);
        if let Some(st) = self.st(ctx) {
            st.flows[d].forwarded_trailers = st.maps[2 * d + 1].clone();
            st.live[2 * d + 1] = false;
            st.flows[d].state = FlowState::Done;
            st.flows[d].complete = true;
        }
    }

    /// Headers arrive for direction `d` (0 request, 1 response).
    pub(crate) fn flow_headers(&mut self, ctx: u32, d: usize, eos: bool) {
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || st.flows[d].state != FlowState::NotStarted {
            return;
        }
        st.flows[d].end_received = eos;
        st.flows[d].state = FlowState::Streaming;
        st.live[2 * d] = true;
        let n = st.maps[2 * d].len() as i32;
        if d == 0 && st.fail_closed {
            let reply = LocalReply::host(503, "", "wasm_fail_stream");
            self.apply_local_reply(ctx, reply);
            return;
        }
        let action = self.filter_cb(ctx, d, 0, n, eos as i32);
        let action = self.stop_override(ctx, action);
        match action {
            Action::Continue => self.continue_after_headers(ctx, d),
            Action::Pause => {
                if let Some(st) = self.st(ctx) {
                    st.flows[d].state = FlowState::HeadersPaused;
                }
            }
        }
        self.run_deferred();
    }

    fn continue_after_headers(&mut self, ctx: u32, d: usize) {
        self.release_headers(ctx, d);
        let Some(st) = self.st(ctx) else { return };
        st.flows[d].state = FlowState::Streaming;
        let f = &mut st.flows[d];
        if !f.held.is_empty() || f.held_end {
            let data = std::mem::take(&mut f.held);
            let end = std::mem::take(&mut f.held_end);
            self.deliver_data(ctx, d, data, end);
        }
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) {
            return;
        }
        if let Some(t) = st.flows[d].held_trailers.take() {
            self.deliver_trailers(ctx, d, t);
        } else if st.flows[d].end_received && st.flows[d].state == FlowState::Streaming {
            self.complete(ctx, d);
        }
    }

    /// A body chunk arrives.
    pub(crate) fn flow_data(&mut self, ctx: u32, d: usize, chunk: Vec<u8>, eos: bool) {
        let allow = self.allow_stop_iteration();
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || matches!(st.flows[d].state, FlowState::NotStarted | FlowState::Done) {
            return;
        }
        let f = &mut st.flows[d];
        f.end_received |= eos;
        if f.state == FlowState::HeadersPaused && !allow {
            f.held.extend(chunk);
            f.held_end |= eos;
            return;
        }
        self.deliver_data(ctx, d, chunk, eos);
    }

    fn deliver_data(&mut self, ctx: u32, d: usize, chunk: Vec<u8>, eos: bool) {
        let limit =
            if d == 0 { self.settings.request_body_buffer_limit } else { self.settings.response_body_buffer_limit };
        let Some(st) = self.st(ctx) else { return };
        if st.flows[d].state == FlowState::BodyPaused && st.bodies[d].len() + chunk.len() > limit {
            let reply = if d == 0 {
                LocalReply::host(413, "Payload Too Large", "request_payload_too_large")
            } else {
                LocalReply::host(500, "Internal Server Error", "response_payload_too_large")
            };
            self.apply_local_reply(ctx, reply);
            return;
        }
        st.bodies[d].extend(chunk);
        st.body_live[d] = true;
        if eos {
            st.live[2 * d + 1] = true;
        }
        let size = st.bodies[d].len() as i32;
        let action = self.filter_cb(ctx, d, 1, size, eos as i32);
        let action = self.stop_override(ctx, action);
        match action {
            Action::Continue => {
                if eos {
                    self.complete(ctx, d);
                } else {
                    self.release_headers(ctx, d);
                    self.release_body(ctx, d);
                    if let Some(st) = self.st(ctx) {
                        st.flows[d].state = FlowState::Streaming;
                    }
                }
            }
            Action::Pause => {
                if let Some(st) = self.st(ctx) {
                    st.flows[d].state = FlowState::BodyPaused;
                }
            }
        }
        self.run_deferred();
    }

    /// Trailers arrive (the end of the direction).
    pub(crate) fn flow_trailers(&mut self, ctx: u32, d: usize, trailers: Headers) {
        let allow = self.allow_stop_iteration();
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || matches!(st.flows[d].state, FlowState::NotStarted | FlowState::Done) {
            return;
        }
        let trailers: Headers = trailers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let f = &mut st.flows[d];
        f.end_received = true;
        if f.state == FlowState::HeadersPaused && !allow {
            f.held_trailers = Some(trailers);
            return;
        }
        self.deliver_trailers(ctx, d, trailers);
    }

    fn deliver_trailers(&mut self, ctx: u32, d: usize, trailers: Headers) {
        let Some(st) = self.st(ctx) else { return };
        st.maps[2 * d + 1] = trailers;
        st.live[2 * d + 1] = true;
        let n = st.maps[2 * d + 1].len() as i32;
        let action = self.filter_cb(ctx, d, 2, n, 0);
        let action = self.stop_override(ctx, action);
        match action {
            Action::Continue => self.complete(ctx, d),
            Action::Pause => {
                if let Some(st) = self.st(ctx) {
                    st.flows[d].state = FlowState::TrailersPaused;
                }
            }
        }
        self.run_deferred();
    }

    /// `proxy_continue_stream` for direction `d`, run after the guest returned.
    pub(crate) fn resume(&mut self, ctx: u32, d: usize) {
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || st.flows[d].complete {
            return;
        }
        match st.flows[d].state {
            FlowState::HeadersPaused => self.continue_after_headers(ctx, d),
            FlowState::BodyPaused => {
                self.release_headers(ctx, d);
                self.release_body(ctx, d);
                let Some(st) = self.st(ctx) else { return };
                st.flows[d].state = FlowState::Streaming;
                if let Some(t) = st.flows[d].held_trailers.take() {
                    self.deliver_trailers(ctx, d, t);
                } else if st.flows[d].end_received {
                    self.complete(ctx, d);
                }
            }
            FlowState::TrailersPaused => self.complete(ctx, d),
            _ => {}
        }
    }

    /// Sends a local reply (deferred from `proxy_send_local_response`, or made by the host).
    pub(crate) fn apply_local_reply(&mut self, ctx: u32, reply: LocalReply) {
        let Some(st) = self.st(ctx) else { return };
        if st.local_reply.is_some() || st.reset.is_some() {
            return;
        }
        let headers = reply.header_map();
        let body = reply.body.clone();
        st.local_reply = Some(reply);
        st.flows[0].state = FlowState::Done;
        st.live[0] = false;
        st.live[1] = false;
        st.body_live[0] = false;
        if st.flows[1].headers_forwarded {
            st.reset = Some("local reply after response headers were sent".into());
            return;
        }
        if st.flows[1].state != FlowState::NotStarted {
            // The response is in progress in this filter: the local reply replaces it as is.
            st.flows[1] = Flow {
                state: FlowState::Done,
                headers_forwarded: true,
                end_received: true,
                forwarded_headers: Some(headers),
                forwarded_body: body,
                complete: true,
                ..Flow::default()
            };
            st.live[2] = false;
            st.live[3] = false;
            st.body_live[1] = false;
            return;
        }
        st.maps[2] = headers;
        self.flow_headers(ctx, 1, body.is_empty());
        if !body.is_empty() {
            self.flow_data(ctx, 1, body, true);
        }
    }

    // ---- the public stream API of a worker ----

    /// Creates a stream context (`proxy_on_context_create(id, root)`); nothing is sent yet.
    pub fn open_stream(&mut self, req: &HttpRequest) -> StreamId {
        self.open_stream_with(req, req.header_map())
    }

    fn open_stream_with(&mut self, req: &HttpRequest, header_map: Headers) -> StreamId {
        let s = self.store.data_mut();
        let ctx = s.next_context;
        s.next_context += 1;
        let info = StreamInfo {
            source_address: req.source_address,
            destination_address: req.destination_address,
            tls: req.tls.clone(),
            metadata: req.metadata.clone(),
            protocol: req.protocol.clone(),
            start_time: s.clock.now(),
            connection_id: req.connection_id.unwrap_or_else(|| NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        };
        let seq = s.log_seq.load(Ordering::Relaxed);
        let mut data = StreamData::new(info, header_map, seq);
        if self.failed.is_some() {
            if self.settings.fail_open {
                data.bypass = true;
            } else {
                data.fail_closed = true;
            }
        }
        let root = s.root_context;
        s.streams.insert(ctx, data);
        if self.failed.is_none() {
            if self
                .call("proxy_on_context_create", |f| f.context_create.as_ref(), ctx, (ctx as i32, root as i32))
                .is_err()
            {
                let fail_open = self.settings.fail_open;
                if let Some(st) = self.st(ctx) {
                    st.trapped = true;
                    if fail_open {
                        st.bypass = true;
                    } else {
                        st.fail_closed = true;
                    }
                }
            } else if let Some(st) = self.st(ctx) {
                st.created = true;
            }
        }
        StreamId { worker: self.index, context_id: ctx }
    }

    pub fn request_headers(&mut self, ctx: u32, end_of_stream: bool) {
        self.flow_headers(ctx, 0, end_of_stream);
    }

    pub fn request_body(&mut self, ctx: u32, chunk: &[u8], end_of_stream: bool) {
        self.flow_data(ctx, 0, chunk.to_vec(), end_of_stream);
    }

    pub fn request_trailers(&mut self, ctx: u32, trailers: Headers) {
        self.flow_trailers(ctx, 0, trailers);
    }

    /// Upstream response headers (`:status` is put first; keys lowercased).
    pub fn response_headers(&mut self, ctx: u32, status: u16, headers: &Headers, eos: bool) {
        self.response_headers_owned(ctx, status, headers.clone(), eos);
    }

    fn response_headers_owned(&mut self, ctx: u32, status: u16, headers: Headers, eos: bool) {
        let Some(st) = self.st(ctx) else { return };
        if st.local_reply.is_some() || st.reset.is_some() {
            return;
        }
        let mut map: Headers = Vec::with_capacity(headers.len() + 1);
        map.push((":status".into(), status.to_string()));
        map.extend(headers.into_iter().map(|(mut k, v)| {
            k.make_ascii_lowercase();
            (k, v)
        }));
        st.maps[2] = map;
        self.flow_headers(ctx, 1, eos);
    }

    pub fn response_body(&mut self, ctx: u32, chunk: &[u8], end_of_stream: bool) {
        self.flow_data(ctx, 1, chunk.to_vec(), end_of_stream);
    }

    pub fn response_trailers(&mut self, ctx: u32, trailers: Headers) {
        self.flow_trailers(ctx, 1, trailers);
    }

    pub fn stream_snapshot(&self, ctx: u32) -> Option<StreamSnapshot> {
        self.store.data().streams.get(&ctx).map(StreamData::snapshot)
    }

    /// Feeds an upstream response through the response flow.
    fn feed_response(&mut self, ctx: u32, resp: UpstreamResponse) {
        let UpstreamResponse { status, mut headers, body, body_chunks, trailers } = resp;
        let has = |h: &Headers, k: &str| h.iter().any(|(hk, _)| hk.eq_ignore_ascii_case(k));
        if !body.is_empty() && !has(&headers, "content-length") && !has(&headers, "transfer-encoding") {
            headers.push(("content-length".into(), body.len().to_string()));
        }
        let eos = body.is_empty() && trailers.is_empty();
        self.response_headers_owned(ctx, status, headers, eos);
        let pieces = match body_chunks {
            Some(sizes) => body_pieces(&body, Some(&sizes)),
            None if body.is_empty() => Vec::new(),
            None => vec![body],
        };
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            self.flow_data(ctx, 1, p, i + 1 == n && trailers.is_empty());
        }
        if !trailers.is_empty() {
            self.response_trailers(ctx, trailers);
        }
    }

    /// Runs a whole request through the filter and the upstream; see [`crate::Plugin::send`].
    pub fn send(&mut self, mut req: HttpRequest, upstream: &mut dyn Upstream) -> Exchange {
        let map = req.take_parts().header_map();
        let id = self.open_stream_with(&req, map);
        let ctx = id.context_id;
        let body = std::mem::take(&mut req.body);
        let pieces = match req.body_chunks.take() {
            Some(sizes) => body_pieces(&body, Some(&sizes)),
            None if body.is_empty() => Vec::new(),
            None => vec![body],
        };
        let eos = pieces.is_empty() && req.trailers.is_empty();
        self.request_headers(ctx, eos);
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            self.flow_data(ctx, 0, p, i + 1 == n && req.trailers.is_empty());
        }
        if !req.trailers.is_empty() {
            self.request_trailers(ctx, req.trailers);
        }
        self.drive(ctx, upstream);
        self.finish_stream(ctx)
    }

    /// Moves a stream forward until it completes or cannot progress: calls the upstream once the
    /// request is through, and waits (real time) for pending http calls of this VM: on a real clock until the
    /// last of their own timeouts has passed (each ends as a response or a 504, as in Envoy), and at least
    /// `PluginConfig::send_wait` (the only bound for a call without a timeout, or on a manual clock, whose
    /// timeouts pass only when the test advances it).
    fn drive(&mut self, ctx: u32, upstream: &mut dyn Upstream) {
        let wait_until = std::time::Instant::now() + self.send_wait.max(self.until_call_deadlines());
        loop {
            let Some(st) = self.st(ctx) else { return };
            if st.reset.is_some() || st.flows[1].complete {
                return;
            }
            if st.local_reply.is_none() && st.flows[0].complete && !st.upstream_called {
                st.upstream_called = true;
                let f = &mut st.flows[0];
                let fwd = f.forwarded_headers.take().map(|headers| ForwardedRequest {
                    headers,
                    body: std::mem::take(&mut f.forwarded_body),
                    trailers: std::mem::take(&mut f.forwarded_trailers),
                    complete: f.complete,
                });
                let resp = match &fwd {
                    Some(r) => upstream.respond(r),
                    None => upstream.respond(&ForwardedRequest::default()),
                };
                st.upstream_request = fwd;
                self.feed_response(ctx, resp);
                continue;
            }
            if self.store.data().http_calls.is_empty() && !self.has_events() {
                return;
            }
            let now = std::time::Instant::now();
            if now >= wait_until {
                return;
            }
            self.wait_and_deliver(wait_until - now);
        }
    }

    /// On a real clock, how long until the last timeout of this VM's pending http calls has passed (plus a
    /// moment for its 504 to be delivered); zero on a manual clock or without timed calls.
    fn until_call_deadlines(&self) -> std::time::Duration {
        let s = self.store.data();
        if s.clock.is_manual() {
            return std::time::Duration::ZERO;
        }
        let now = s.clock.monotonic();
        s.http_calls
            .values()
            .filter_map(|c| c.deadline)
            .max()
            .map(|d| d.saturating_sub(now) + std::time::Duration::from_millis(100))
            .unwrap_or_default()
    }

    /// Ends a stream: `on_log`, `on_done`, `on_delete`, then reports what happened.
    pub fn finish_stream(&mut self, ctx: u32) -> Exchange {
        let created = self.st(ctx).map(|s| s.created).unwrap_or(false);
        if created && self.failed.is_none() {
            if let Some(st) = self.st(ctx) {
                st.access_log = true;
                st.live = [true, false, st.flows[1].state != FlowState::NotStarted, !st.maps[3].is_empty()];
            }
            let _ = self.call("proxy_on_log", |f| f.log.as_ref(), ctx, ctx as i32);
            if let Some(st) = self.st(ctx) {
                st.access_log = false;
                st.live = [false; 4];
            }
            let _ = self.call("proxy_on_done", |f| f.done.as_ref(), ctx, ctx as i32);
            let _ = self.call("proxy_on_delete", |f| f.delete.as_ref(), ctx, ctx as i32);
            // Actions deferred from the end callbacks have no stream left to act on.
            self.store.data_mut().deferred.retain(|a| {
                !matches!(a, Deferred::Continue { context, .. } | Deferred::Close { context } | Deferred::LocalReply { context, .. } if *context == ctx)
            });
        }
        let index = self.index;
        let s = self.store.data_mut();
        let st = s.streams.remove(&ctx);
        let Some(st) = st else {
            return Exchange {
                outcome: Outcome::Reset { details: "unknown stream".into() },
                worker: index,
                context_id: ctx,
                status: None,
                headers: Vec::new(),
                body: Vec::new(),
                trailers: Vec::new(),
                local_reply: None,
                forwarded: None,
                upstream_called: false,
                filter_state: BTreeMap::new(),
                logs: Vec::new(),
                callbacks: Vec::new(),
                trapped: false,
                filter_skipped: false,
            };
        };
        let logs = s.logs.iter().filter(|l| l.seq >= st.log_seq_start).cloned().collect();
        // The stream is gone from the VM: its parts move into the exchange.
        let mut st = st;
        let outcome = match st.reset.take() {
            Some(details) => Outcome::Reset { details },
            None if st.flows[1].complete => Outcome::Completed,
            None => Outcome::Hung { at: st.stop_point() },
        };
        let forwarded = match st.upstream_request.take() {
            Some(f) => Some(f),
            None => {
                let f = &mut st.flows[0];
                f.forwarded_headers.take().map(|headers| ForwardedRequest {
                    headers,
                    body: std::mem::take(&mut f.forwarded_body),
                    trailers: std::mem::take(&mut f.forwarded_trailers),
                    complete: f.complete,
                })
            }
        };
        let resp = &mut st.flows[1];
        let mut sent = resp.forwarded_headers.take().unwrap_or_default();
        let status = header_value(&sent, ":status").and_then(|v| v.parse().ok());
        sent.retain(|(k, _)| k != ":status");
        Exchange {
            outcome,
            worker: index,
            context_id: ctx,
            status,
            headers: sent,
            body: std::mem::take(&mut resp.forwarded_body),
            trailers: std::mem::take(&mut resp.forwarded_trailers),
            local_reply: st.local_reply.take(),
            forwarded,
            upstream_called: st.upstream_called,
            filter_state: std::mem::take(&mut st.filter_state),
            logs,
            callbacks: std::mem::take(&mut st.callbacks),
            trapped: st.trapped,
            filter_skipped: st.bypass,
        }
    }
}
