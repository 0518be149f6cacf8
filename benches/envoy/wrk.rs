//! The load generator: wrk (Debian package `wrk`, 4.1) with a generated Lua script per run.
//!
//! Why wrk and not a load generator of our own: it is a small C event loop (epoll, one thread per `-t`, keep-alive
//! connections) that needs far less CPU per request than a thread-per-connection Rust client would, which matters
//! on a 2-core machine where the generator and Envoy share the cores; its latency histogram and its Lua hooks
//! (`request()` for a new token per request, `done()` for a JSON summary) cover everything the bench needs; and it
//! is what issue 17's hand measurement used, so the figures compare. The script writes its summary (requests,
//! errors, latency percentiles, how many requests it generated) as JSON to a file the bench reads.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::modes::Request;

/// The Debian package and the command that installs it (`scripts/test.sh` runs it when root on Debian).
pub const INSTALL: &str = "apt-get install -y wrk";

/// `wrk`, from `WARDEN_WRK` or the `PATH`; panics with the install command when it is missing.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WARDEN_WRK") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("wrk"))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "wrk (the Envoy bench's load generator) is not installed.\nInstall it with: {INSTALL}\n\
             (scripts/test.sh installs it when run as root on Debian; WARDEN_WRK names another binary)"
        ),
    }
}

/// One load run.
pub struct Load<'a> {
    pub target: SocketAddr,
    pub request: &'a Request,
    /// The same token for every request, or a file of tokens (one a line), each used once per lap.
    pub token: &'a str,
    pub token_file: Option<&'a Path>,
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
}

/// What wrk measured.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Responses wrk read completely.
    pub requests: u64,
    pub seconds: f64,
    pub errors_connect: u64,
    pub errors_read: u64,
    pub errors_write: u64,
    pub errors_timeout: u64,
    /// Responses whose status was not 2xx or 3xx.
    pub non_2xx: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    /// Requests the script generated (`request()` calls; with rotation, the tokens it drew).
    pub generated: u64,
}

impl Summary {
    pub fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn socket_errors(&self) -> u64 {
        self.errors_connect + self.errors_read + self.errors_write + self.errors_timeout
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
    out
}

/// The Lua script of a run: the request (method, path, headers, body), the token or the token file, and a `done`
/// that writes the summary to `out` as JSON.
fn script(load: &Load<'_>, out: &Path) -> String {
    let r = load.request;
    let mut headers = format!("  [\"Host\"] = {},\n", lua_string(&r.host));
    for (k, v) in &r.headers {
        let _ = writeln!(headers, "  [{}] = {},", lua_string(k), lua_string(v));
    }
    let body = if r.body.is_empty() { "nil".to_string() } else { lua_string(&String::from_utf8_lossy(&r.body)) };
    let rotation = match load.token_file {
        None => format!(
            "wrk.method = method\nwrk.path = path\nwrk.body = body\nfor k, v in pairs(base) do wrk.headers[k] = v end\n\
             wrk.headers[\"authorization\"] = {}\n\
             generated = 0\n",
            lua_string(&format!("Bearer {}", load.token))
        ),
        Some(file) => format!(
            r#"local token_file = {file}
local tokens, count
generated = 0
function init(args)
  tokens = {{}}
  for line in io.lines(token_file) do tokens[#tokens + 1] = "Bearer " .. line end
  count = #tokens
end
-- Thread `id` of `stride` takes tokens id, id + stride, ...: no token is sent twice before the list is used up.
function request()
  local k = (generated * stride + id - 1) % count + 1
  generated = generated + 1
  local h = {{}}
  for name, value in pairs(base) do h[name] = value end
  h["authorization"] = tokens[k]
  return wrk.format(method, path, h, body)
end
"#,
            file = lua_string(&file.display().to_string())
        ),
    };
    format!(
        r#"-- Generated by the Envoy bench (benches/envoy/wrk.rs) for one run.
local method = {method}
local path = {path}
local body = {body}
local base = {{
{headers}}}
local threads = {{}}
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  thread:set("stride", {threads})
  next_id = next_id + 1
  table.insert(threads, thread)
end
{rotation}
function done(summary, latency, requests)
  local generated_total = 0
  for _, t in ipairs(threads) do generated_total = generated_total + (t:get("generated") or 0) end
  local e = summary.errors
  local f = assert(io.open({out}, "w"))
  f:write(string.format('{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%.1f,"p99":%.1f,"mean":%.1f,"max":%.1f,"generated":%d}}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max, generated_total))
  f:close()
end
"#,
        method = lua_string(r.method),
        path = lua_string(&r.path),
        threads = load.threads,
        out = lua_string(&out.display().to_string()),
    )
}

/// Runs wrk once; panics with its output when it fails or writes no summary.
pub fn run(load: &Load<'_>, dir: &Path) -> Summary {
    let script_path = dir.join("load.lua");
    let out = dir.join("summary.json");
    let _ = std::fs::remove_file(&out);
    if let Err(e) = std::fs::write(&script_path, script(load, &out)) {
        panic!("cannot write {}: {e}", script_path.display());
    }
    let secs = load.duration.as_secs().max(1);
    let output = Command::new(binary())
        .args(["-t", &load.threads.to_string(), "-c", &load.connections.to_string()])
        .args(["-d", &format!("{secs}s"), "--timeout", "5s", "-s"])
        .arg(&script_path)
        .arg(format!("http://{}{}", load.target, load.request.path))
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk: {e}\nInstall it with: {INSTALL}"));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) if output.status.success() => v,
        _ => panic!(
            "wrk failed ({}) or wrote no summary:\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    };
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Summary {
        requests: u("requests"),
        seconds: f("duration_us") / 1e6,
        errors_connect: u("connect"),
        errors_read: u("read"),
        errors_write: u("write"),
        errors_timeout: u("timeout"),
        non_2xx: u("status"),
        p50_us: f("p50"),
        p99_us: f("p99"),
        mean_us: f("mean"),
        max_us: f("max"),
        generated: u("generated"),
    }
}
