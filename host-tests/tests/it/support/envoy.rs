//! Support for the tests through real Envoy: a [`Gateway`] (Envoy with `warden.wasm` in front of a recording
//! upstream), one request through it with what the client, the upstream and the access log saw ([`Seen`]), and the
//! differential: the same request through the in-process host, both reduced to an [`Outcome`] and compared, where
//! every field that may differ is one of [`KNOWN_DIFFERENCES`] (the same table as `host-tests/README.md`); and
//! through the core's driver ([`driver_outcome`], the offline tools' pipeline), compared the same way.
#![allow(dead_code)] // each test module uses a different part

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_host::client::{self, Response};
use warden_host::envoy::{AccessLogEntry, Envoy, EnvoyOptions};
use warden_host::upstream::{Received, RecordingServer, Reply, Responder};
use warden_host::{Clock, Exchange, ForwardedRequest, HttpRequest, Plugin, PluginConfig, UpstreamResponse};

pub use super::{warden_module, warden_wasm};

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A request id unique in this process (`x-request-id`), so that a test finds its own request in the upstream's
/// record and in the access log of an Envoy that other tests use at the same time.
pub fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// How the test upstream answers a request (its path and headers as received): the same function answers for
/// Envoy's recording upstream and for the host's upstream in the differential.
pub type ReplyFn = Arc<dyn Fn(&str, &[(String, String)]) -> Reply + Send + Sync>;

/// The default tool: JSON-RPC for `/mcp`, text otherwise.
pub fn tool_reply(path: &str) -> Reply {
    if path.starts_with("/mcp") {
        Reply::new(200)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"done"}]}}"#)
    } else {
        Reply::ok("from the tool")
    }
}

pub fn default_reply() -> ReplyFn {
    Arc::new(|path: &str, _: &[(String, String)]| tool_reply(path))
}

fn responder(f: ReplyFn) -> Responder {
    Arc::new(move |r: &Received| f(&r.path, &r.headers))
}

/// Envoy with `warden.wasm` and a recording upstream.
pub struct Gateway {
    pub envoy: Envoy,
    pub tools: RecordingServer,
    /// The plugin configuration Envoy runs (for the host side of the differential).
    pub config: Value,
    pub hold: bool,
    pub reply: ReplyFn,
}

impl Gateway {
    /// Envoy (`concurrency` workers, `allow_on_headers_stop_iteration` = `hold`, which the plugin configuration
    /// is told as well) running `config`, in front of a [`tool_responder`] upstream.
    pub fn start(config: &Value, hold: bool, concurrency: usize) -> Gateway {
        Gateway::start_with(config, hold, |o| o.concurrency(concurrency))
    }

    pub fn start_with(config: &Value, hold: bool, f: impl FnOnce(EnvoyOptions) -> EnvoyOptions) -> Gateway {
        Gateway::start_full(config, hold, default_reply(), f)
    }

    pub fn start_full(
        config: &Value,
        hold: bool,
        reply: ReplyFn,
        f: impl FnOnce(EnvoyOptions) -> EnvoyOptions,
    ) -> Gateway {
        let mut config = config.clone();
        config["allow_on_headers_stop_iteration"] = json!(hold);
        let tools = RecordingServer::start(responder(reply.clone())).expect("upstream");
        let opts =
            f(EnvoyOptions::new(warden_wasm(), config.to_string(), tools.addr).allow_on_headers_stop_iteration(hold));
        let envoy = Envoy::start(&opts).unwrap_or_else(|e| panic!("Envoy did not start: {e}"));
        Gateway { envoy, tools, config, hold, reply }
    }

    /// Sends `req` (with a fresh `x-request-id`) and collects what the client, the upstream and the access log saw.
    pub fn send(&self, req: HttpRequest) -> Seen {
        let id = request_id();
        let req = req.header("x-request-id", &id);
        let response = client::send(self.envoy.listener(), &req).unwrap_or_else(|e| panic!("{e}"));
        self.seen(&id, response)
    }

    /// What the upstream and the access log saw of the request with this `x-request-id`.
    pub fn seen(&self, id: &str, response: Response) -> Seen {
        let log = self.log_entry(id);
        // The upstream records a request as soon as its headers arrive; Envoy writes the access log when the
        // stream is over (after the upstream request ended or was reset). A moment for the recorder's thread.
        let mut upstream = None;
        for _ in 0..20 {
            upstream = self.tools.received().into_iter().find(|r| r.header("x-request-id") == Some(id));
            match &upstream {
                Some(r) if r.complete || r.aborted => break,
                None if log.as_ref().is_some_and(|l| l.upstream_host.is_none()) => break,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Seen { response, upstream, log }
    }

    /// The access-log line of the request with this id (waits up to 10 s for it, a bound for a loaded machine).
    pub fn log_entry(&self, id: &str) -> Option<AccessLogEntry> {
        self.envoy.access_log_entry(id, Duration::from_secs(10))
    }
}

/// One request through Envoy.
#[derive(Debug)]
pub struct Seen {
    pub response: Response,
    /// The upstream's record of this request, if any part of it arrived there.
    pub upstream: Option<Received>,
    pub log: Option<AccessLogEntry>,
}

impl Seen {
    /// The decision record from the access log.
    pub fn record(&self) -> Value {
        self.log.as_ref().and_then(|l| l.record.clone()).unwrap_or_else(|| panic!("no decision record: {self:#?}"))
    }

    pub fn json(&self) -> Value {
        self.response.json()
    }

    /// A refusal answered by the filter: status, decision, reason and rule in the body and the record, the decision
    /// id consistent between header, body and record; nothing reached the upstream.
    pub fn assert_refused(&self, status: u16, decision: &str, reason: &str, rule: &str) -> Value {
        assert_eq!(self.response.status, status, "{self:#?}");
        let body = self.json();
        let r = self.record();
        assert_eq!(r["reason"], reason, "record {r}");
        assert_eq!(r["rule"], rule, "record {r}");
        assert_eq!(r["decision"], decision, "record {r}");
        let data = if body["jsonrpc"] == "2.0" { body["error"]["data"].clone() } else { body.clone() };
        assert_eq!(data["reason"], reason, "{body}");
        assert_eq!(data["decision_id"], r["decision_id"], "{body}");
        assert_eq!(self.response.header("x-warden-decision-id"), r["decision_id"].as_str());
        assert_eq!(self.response.header("content-type"), Some("application/json"));
        assert!(self.upstream.is_none(), "nothing may reach the upstream: {:#?}", self.upstream);
        body
    }

    /// Forwarded whole to the upstream, the tool's answer back to the client; returns the upstream's request.
    pub fn assert_forwarded(&self) -> &Received {
        assert_eq!(self.response.status, 200, "{self:#?}");
        let up = self.upstream.as_ref().unwrap_or_else(|| panic!("not forwarded: {self:#?}"));
        assert!(up.complete, "{up:#?}");
        up
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The differential

/// What reached the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forwarded {
    Nothing,
    /// Headers (and possibly part of the body), then the request was abandoned.
    Partial,
    Whole,
}

/// What a request came to, in a form that Envoy and the host can be compared on.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: u16,
    pub forwarded: Forwarded,
    /// Method and path the upstream received.
    pub upstream_request: Option<(String, String)>,
    /// The `x-warden-*` headers the upstream received (the decision id written `<decision-id>`).
    pub warden_headers: Vec<(String, String)>,
    pub upstream_body: Vec<u8>,
    /// The reply headers Warden is responsible for ([`COMPARED_REPLY_HEADERS`]).
    pub reply_headers: Vec<(String, String)>,
    /// The reply body (JSON with the decision id written `<decision-id>`, else the raw text).
    pub body: Value,
    /// The decision record less the fields of [`KNOWN_DIFFERENCES`].
    pub record: Value,
}

/// Reply headers compared; the others are the proxy's own (see [`KNOWN_DIFFERENCES`]).
pub const COMPARED_REPLY_HEADERS: [&str; 5] =
    ["content-type", "cache-control", "www-authenticate", "x-warden-decision-id", "content-length"];

/// Every difference the differential allows between Envoy and the host, with its reason. `host-tests/README.md`
/// ("Known differences") has the same table; a test checks that they agree.
pub const KNOWN_DIFFERENCES: [(&str, &str); 7] = [
    ("decision_id", "random per request (UUID v4); compared as consistent within a run: header = body = record"),
    ("timestamp", "the wall clock of the request (Envoy) versus the host's manual clock"),
    ("latency_ns", "measured time in the filter"),
    ("vm", "a random id per VM instance"),
    (
        "reply headers other than Warden's",
        "`date`, `server`, `x-envoy-*` are Envoy's own; only content-type, \
     cache-control, www-authenticate, x-warden-decision-id and content-length are compared",
    ),
    (
        "upstream headers other than x-warden-*",
        "the proxy adds its own (`x-forwarded-proto`, `x-envoy-*`, \
     `content-length` framing); only the x-warden-* headers, the method and the path are compared",
    ),
    (
        "headers of a refused request that continued at the header phase",
        "with allow_on_headers_stop_iteration false the filter lets the headers go and holds the body; Envoy sends \
         them upstream as soon as its upstream connection is up (the upstream sees the head, then a reset), the host \
         calls its upstream only with a whole request. Headers without a body byte count the same as nothing",
    ),
];

/// An abandoned request that got no body byte upstream counts as not forwarded (see [`KNOWN_DIFFERENCES`]).
fn at_most_headers_as_nothing(mut o: Outcome) -> Outcome {
    if o.forwarded == Forwarded::Partial && o.upstream_body.is_empty() {
        o.forwarded = Forwarded::Nothing;
        o.upstream_request = None;
        o.warden_headers.clear();
    }
    o
}

fn replace_id(v: &mut Value, id: &str) {
    match v {
        Value::String(s) if !id.is_empty() && s == id => *s = "<decision-id>".into(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_id(x, id)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_id(x, id)),
        _ => {}
    }
}

fn normalize_record(record: Option<Value>) -> (Value, String) {
    let Some(mut r) = record else { return (Value::Null, String::new()) };
    let id = r["decision_id"].as_str().unwrap_or("").to_string();
    if let Some(o) = r.as_object_mut() {
        for k in ["timestamp", "latency_ns", "vm"] {
            o.remove(k);
        }
    }
    replace_id(&mut r, &id);
    (r, id)
}

/// What an upstream received: method, path, regular headers, body, whether complete.
type UpstreamSaw = (String, String, Vec<(String, String)>, Vec<u8>, bool);

fn outcome(
    status: u16,
    reply_headers: &[(String, String)],
    reply_body: &[u8],
    up: Option<UpstreamSaw>,
    record: Option<Value>,
) -> Outcome {
    let (record, id) = normalize_record(record);
    let norm = |v: &str| if !id.is_empty() && v == id { "<decision-id>".to_string() } else { v.to_string() };
    let mut body: Value = serde_json::from_slice(reply_body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(reply_body).into()));
    replace_id(&mut body, &id);
    let reply_headers = COMPARED_REPLY_HEADERS
        .iter()
        .flat_map(|name| {
            reply_headers
                .iter()
                .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(k, v)| (k.to_ascii_lowercase(), norm(v)))
        })
        .collect();
    let (forwarded, upstream_request, warden_headers, upstream_body) = match up {
        None => (Forwarded::Nothing, None, Vec::new(), Vec::new()),
        Some((method, path, headers, body, complete)) => {
            let mut w: Vec<(String, String)> = headers
                .iter()
                .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-warden-"))
                .map(|(k, v)| (k.to_ascii_lowercase(), norm(v)))
                .collect();
            w.sort();
            (if complete { Forwarded::Whole } else { Forwarded::Partial }, Some((method, path)), w, body)
        }
    };
    Outcome { status, forwarded, upstream_request, warden_headers, upstream_body, reply_headers, body, record }
}

impl Seen {
    pub fn outcome(&self) -> Outcome {
        let up = self
            .upstream
            .as_ref()
            .map(|r| (r.method.clone(), r.path.clone(), r.headers.clone(), r.body.clone(), r.complete));
        outcome(
            self.response.status,
            &self.response.headers,
            &self.response.body,
            up,
            self.log.as_ref().and_then(|l| l.record.clone()),
        )
    }
}

/// The in-process host with the same plugin configuration as an Envoy (one worker, a manual clock at the real
/// time, the same `allow_on_headers_stop_iteration`).
pub fn host_plugin(config: &Value, hold: bool) -> Plugin {
    let clock = Clock::manual(SystemTime::now());
    let pc = PluginConfig::new(config.to_string()).workers(1).clock(clock).allow_on_headers_stop_iteration(hold);
    Plugin::start(&warden_module(), pc).unwrap_or_else(|e| panic!("host did not start: {e}; {:#?}", e.logs()))
}

/// The same request through the host, with an upstream answering as `reply` says.
pub fn host_outcome(p: &mut Plugin, req: HttpRequest, reply: &ReplyFn) -> (Outcome, Exchange) {
    let mut up = |f: &ForwardedRequest| {
        let regular: Vec<(String, String)> = f.headers.iter().filter(|(k, _)| !k.starts_with(':')).cloned().collect();
        let r = reply(f.path(), &regular);
        let mut resp = UpstreamResponse::new(r.status).body(r.body);
        resp.headers = r.headers;
        resp.body_chunks = r.chunks;
        resp.trailers = r.trailers;
        resp
    };
    let x = p.send(0, req, &mut up);
    let fwd = x.forwarded.as_ref().map(|f| {
        let regular = f.headers.iter().filter(|(k, _)| !k.starts_with(':')).cloned().collect();
        (f.method().to_string(), f.path().to_string(), regular, f.body.clone(), f.complete && x.upstream_called)
    });
    let record = x.filter_state_str("wasm.warden_decision").and_then(|s| serde_json::from_str(&s).ok());
    let mut reply_headers = x.headers.clone();
    if x.is_local_reply() && !reply_headers.iter().any(|(k, _)| k == "content-length") {
        reply_headers.push(("content-length".into(), x.body.len().to_string()));
    }
    (outcome(x.status.unwrap_or(0), &reply_headers, &x.body, fwd, record), x)
}

/// Runs `req` through the gateway's Envoy and through the host and asserts the outcomes agree; returns Envoy's.
pub fn differential(g: &Gateway, req: HttpRequest) -> Seen {
    let id = request_id();
    let req = req.header("x-request-id", &id);
    let response = client::send(g.envoy.listener(), &req).unwrap_or_else(|e| panic!("{e}"));
    let seen = g.seen(&id, response);
    let envoy = at_most_headers_as_nothing(seen.outcome());
    if std::env::var_os("WARDEN_SHOW_OUTCOMES").is_some() {
        eprintln!("{envoy:#?}");
    }
    let mut p = host_plugin(&g.config, g.hold);
    if let Some(offline) = driver_outcome(&g.config, &req, &g.reply, &seen) {
        let offline = at_most_headers_as_nothing(offline);
        assert_eq!(
            envoy, offline,
            "Envoy and the core's driver (what `warden eval` and `warden test` decide with) differ:\n\
             Envoy: {envoy:#?}\ndriver: {offline:#?}"
        );
    }
    let (host, x) = host_outcome(&mut p, req, &g.reply);
    let host = at_most_headers_as_nothing(host);
    assert_eq!(
        envoy, host,
        "Envoy and the host differ (only the fields of KNOWN_DIFFERENCES may):\nEnvoy: {envoy:#?}\nhost:  {host:#?}\n\
         host logs: {:#?}",
        x.logs
    );
    seen
}

/// The same request through the core's driver (`warden_core::gate::driver`, what `warden eval`, `warden test` and
/// replay decide with), at the time Envoy decided it (the record's timestamp), with the gateway's plugin
/// configuration and inline bundle and its upstream's answer; `None` when the gateway polls for its bundle (the
/// driver has no control endpoint) or Envoy wrote no record.
pub fn driver_outcome(config: &Value, req: &HttpRequest, reply: &ReplyFn, seen: &Seen) -> Option<Outcome> {
    use warden_core::gate::driver::{self, Exchange as Offline, Response as OfflineResponse};
    use warden_core::gate::{Credentials, MemoryStore};
    config.get("inline_bundle")?;
    let record = seen.log.as_ref()?.record.as_ref()?;
    let timestamp = record["timestamp"].as_str()?;
    let secs = warden_core::time::parse_rfc3339(&format!("{}Z", timestamp.split('.').next()?))?;
    let loaded = warden_core::activation::load(config.to_string().as_bytes(), secs)
        .unwrap_or_else(|e| panic!("the driver refuses the gateway's configuration: {e}"));
    let bundle = loaded.active.as_ref().map(|a| &a.bundle);
    let headers: Vec<(String, Vec<u8>)> = req.header_map().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    let regular: Vec<(String, String)> = req.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    let answer = reply(&req.path, &regular);
    let exchange = Offline {
        headers,
        body: req.body.clone(),
        peer: None,
        time_ns: u64::try_from(secs).ok()?.saturating_mul(1_000_000_000),
        decision_id: record["decision_id"].as_str()?.to_string(),
        credentials: Credentials::Tokens(None),
        response: Some(OfflineResponse {
            status: answer.status,
            headers: answer.headers.clone(),
            body: answer.body.clone(),
        }),
        listed: None,
    };
    let run = driver::run(&loaded.config.gate, bundle, exchange, &mut MemoryStore::default());
    let record: Option<Value> = run.record.as_deref().and_then(|r| serde_json::from_str(r).ok());
    Some(match &run.reply {
        Some(r) => {
            let headers: Vec<(String, String)> = r.headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let mut headers = headers;
            if !headers.iter().any(|(k, _)| k == "content-length") {
                headers.push(("content-length".into(), r.body.len().to_string()));
            }
            outcome(r.status, &headers, &r.body, None, record)
        }
        None => {
            let forwarded = run.forwarded.clone().unwrap_or_default();
            let get = |name: &str| forwarded.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v));
            let method = get(":method").unwrap_or_default().to_string();
            let path = get(":path").unwrap_or_default().to_string();
            let regular = forwarded
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            let body = run.response_body.clone().unwrap_or_else(|| answer.body.clone());
            // The driver does not model framing: whether the answer carries a content-length is Envoy's and the
            // upstream's (chunked or not); its value must be the body's.
            let mut headers = run.response_headers.clone().unwrap_or_else(|| answer.headers.clone());
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
            if seen.response.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
                headers.push(("content-length".into(), body.len().to_string()));
            }
            outcome(answer.status, &headers, &body, Some((method, path, regular, req.body.clone(), true)), record)
        }
    })
}
