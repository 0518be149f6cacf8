//! What a stream is made of and what comes out of it: the downstream `HttpRequest` (with its TLS facts), the
//! `Upstream` behind the filter and its `UpstreamResponse`, local replies, the request as forwarded, and the
//! `Exchange` a finished stream reports (or the `StreamSnapshot` of a live one). The flows themselves are run by
//! `plugin::flow`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::abi::{header_value, Action, Headers};
use crate::log::LogEntry;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh process-wide id (generated `x-request-id`s, a downstream connection of its own).
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

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
    pub(crate) fn take_parts(&mut self) -> RequestParts {
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
pub(crate) fn body_pieces(body: &[u8], chunks: Option<&[usize]>) -> Vec<Vec<u8>> {
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
pub(crate) struct RequestParts {
    authority: String,
    path: String,
    method: String,
    scheme: String,
    headers: Headers,
    body_len: usize,
    request_id: Option<String>,
}

impl RequestParts {
    pub(crate) fn header_map(self) -> Headers {
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
                let n = next_id();
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
    /// A reply the host makes itself (no headers of the filter's, no gRPC status).
    pub(crate) fn host(status: u16, body: &str, details: &str) -> LocalReply {
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

/// A filter callback and what it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackRecord {
    pub callback: &'static str,
    /// For header/body/trailer callbacks; None when the callback trapped or returns nothing.
    pub action: Option<Action>,
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
