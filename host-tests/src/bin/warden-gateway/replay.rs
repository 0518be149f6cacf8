//! `warden-gateway replay`: recorded requests (JSON lines, `warden_core::request::RecordedRequest`) through
//! `warden.wasm`, one result line each, for trying a bundle against real traffic before publishing it.
//!
//! Each request runs on the next worker VM with the host clock set to the request's `time` (else the current time);
//! an in-process upstream answers `200 {"ok":true}` to whatever the filter lets through. A result line:
//!
//! ```json
//! {"line":1,"id":"r1","status":403,"headers":[["content-type","application/json"],…],"body":"{…}",
//!  "forwarded":false,"forwarded_headers":null,"decision":{"type":"warden.decision",…},
//!  "logs":[{"level":"info","message":"…"}]}
//! ```
//!
//! `forwarded_headers` is what the upstream would receive (pseudo-headers first), `decision` the decision record the
//! filter wrote (null when it wrote none), `logs` the stream's other log lines. A line that is not a valid recorded
//! request yields `{"line":N,"error":"…"}`, the run goes on, and the exit status is 1 at the end.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use warden_core::request::{RecordedRequest, RequestError};
use warden_host::{CannedUpstream, Clock, Exchange, HttpRequest, LogEntry, Outcome, TlsInfo, UpstreamResponse};

use crate::args::ReplayOptions;
use crate::proxy::decision_record;
use crate::vms::{level_name, load_module, plugin_config, start_plugin};

/// Filter state key of the decision record (`proxy_set_property` path `warden_decision`).
const DECISION_STATE: &str = "wasm.warden_decision";

pub fn run(opts: ReplayOptions) -> Result<ExitCode> {
    let module = load_module(&opts.plugin.wasm)?;
    let configuration = opts.plugin.config_bytes()?;
    let clock = Clock::manual(SystemTime::now());
    let mut plugin = start_plugin(&module, plugin_config(&opts.plugin, configuration, clock.clone()))?;
    for l in plugin.take_logs() {
        eprintln!("[{} vm{}] {}", level_name(&l), l.vm, l.message);
    }
    let mut upstream = CannedUpstream(
        UpstreamResponse::ok(r#"{"ok":true}"#.as_bytes().to_vec()).header("content-type", "application/json"),
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut bad_lines = 0usize;
    for (index, line) in stdin.lock().lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read line {number} of the input"))?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match RecordedRequest::parse_line(&line).and_then(|r| Ok((to_http_request(&r)?, r))) {
            Err(e) => {
                bad_lines += 1;
                json!({"line": number, "error": format!("line {number}: {e}")})
            }
            Ok((request, recorded)) => {
                let at = match recorded.time_seconds() {
                    Ok(Some(secs)) if secs >= 0 => UNIX_EPOCH + Duration::from_secs(secs as u64),
                    _ => SystemTime::now(),
                };
                clock.set(at);
                // Fire whatever fell due (ticks, call timeouts) before the request, as a running gateway would have.
                plugin.advance(Duration::ZERO);
                for l in plugin.take_logs() {
                    eprintln!("[{} vm{}] {}", level_name(&l), l.vm, l.message);
                }
                let exchange = plugin.send_round_robin(request, &mut upstream);
                plugin.take_logs();
                result_line(number, recorded.id.as_deref(), &exchange)
            }
        };
        writeln!(out, "{result}").context("cannot write the results")?;
    }
    out.flush().context("cannot write the results")?;
    if bad_lines > 0 {
        eprintln!("warden-gateway replay: {bad_lines} input line(s) were not valid recorded requests");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The stream the host runs for a recorded request.
pub fn to_http_request(r: &RecordedRequest) -> Result<HttpRequest, RequestError> {
    let mut request = HttpRequest::new(&r.method, &r.path).authority(r.authority()?);
    request.headers = r.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")).cloned().collect();
    request.body = r.body_bytes()?;
    if let Some(addr) = r.source_socket_address()? {
        request.source_address = addr;
    }
    if let Some(san) = &r.peer_uri_san {
        request.tls = Some(TlsInfo::mtls_with_uri_san(san.clone()));
    }
    Ok(request)
}

fn result_line(number: usize, id: Option<&str>, x: &Exchange) -> Value {
    let decision = x
        .filter_state
        .get(DECISION_STATE)
        .and_then(|v| serde_json::from_slice::<Value>(v).ok())
        .or_else(|| x.logs.iter().find_map(|l| decision_record(&l.message)));
    let logs: Vec<Value> = x.logs.iter().filter(|l| decision_record(&l.message).is_none()).map(log_json).collect();
    let forwarded = x.forwarded.as_ref().filter(|f| f.complete && x.upstream_called);
    let mut v = json!({
        "line": number,
        "status": x.status,
        "headers": x.headers,
        "forwarded": forwarded.is_some(),
        "forwarded_headers": forwarded.map(|f| &f.headers),
        "decision": decision,
        "logs": logs,
    });
    match std::str::from_utf8(&x.body) {
        Ok(text) => v["body"] = json!(text),
        Err(_) => v["body_base64"] = json!(STANDARD.encode(&x.body)),
    }
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    match &x.outcome {
        Outcome::Completed => {}
        Outcome::Reset { details } => v["outcome"] = json!(format!("reset: {details}")),
        Outcome::Hung { at } => v["outcome"] = json!(format!("hung at {at:?}")),
    }
    v
}

fn log_json(l: &LogEntry) -> Value {
    json!({"level": level_name(l), "message": l.message})
}
