//! Tests of the `warden-gateway` binary: `replay` output lines for recorded requests, `serve` as a real process
//! proxying over loopback HTTP to a test upstream, the loopback-only rule, and the scripted demo (against
//! `warden serve` started here as scripts/demo.sh starts it; needs `cargo build -p warden-cli`).
//!
//! They run `warden.wasm` with the example finance bundle signed here with the TEST authority key and agent tokens
//! minted here with the example TEST issuer key (`policies/examples/keys/`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};
use warden_host::http_call::{self, CallResult};
use warden_host::HttpResponse;

use crate::support::GATEWAY;
const RECONCILER: &str = "spiffe://acme.example/agents/finance/reconciler";

// ---- fixtures ----

fn wasm() -> PathBuf {
    crate::support::warden_wasm()
}

fn examples() -> PathBuf {
    crate::support::repo().join("policies/examples")
}

fn read_json(rel: &str) -> Value {
    let path = examples().join(rel);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The plugin configuration: environment `prod`, the TEST authority pinned, the finance bundle signed inline.
fn configuration() -> Value {
    let bundle = std::fs::read(examples().join("finance-agent.json")).unwrap();
    let key = SigningKey::from_jwk(&read_json("keys/TEST-ONLY-authority.jwk.json")).unwrap();
    json!({
        "environment": "prod",
        "authority": "policy.acme.example",
        "bundle_keys": read_json("keys/TEST-ONLY-authority.jwks.json"),
        "inline_bundle": envelope::sign(&bundle, &key),
    })
}

/// A file in the temp directory with this content (unique per call).
fn temp_file(content: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "warden-gateway-test-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, content).unwrap();
    path
}

/// An agent token of the example `acme-workload` issuer (Ed25519 TEST key), issued at `iat`, living 300 s.
fn token(agent: &str, iat: i64) -> String {
    let jwk = read_json("keys/TEST-ONLY-issuer-acme-workload.jwk.json");
    let d = URL_SAFE_NO_PAD.decode(jwk["d"].as_str().unwrap()).unwrap();
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&d);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(jwk["kid"].as_str().unwrap().to_string());
    let claims = json!({"iss": "https://spire.acme.example", "aud": "warden", "sub": agent,
                        "iat": iat, "exp": iat + 300, "jti": format!("t-{iat}")});
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(&der)).unwrap()
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers.as_array()?.iter().find(|p| p[0] == name).and_then(|p| p[1].as_str())
}

// ---- replay ----

fn replay(config: &Path, input: &str, extra: &[&str]) -> (Vec<Value>, String, bool) {
    let mut child = Command::new(GATEWAY)
        .arg("replay")
        .arg("--wasm")
        .arg(wasm())
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("result line is not JSON ({e}): {l}")))
        .collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned(), out.status.success())
}

#[test]
fn replay_writes_one_result_per_request_with_the_decision_record() {
    let config = temp_file(&configuration().to_string());
    let t0 = now() - 60;
    let tok = token(RECONCILER, t0);
    let at = |secs: i64| warden_core::time::format_rfc3339(secs);
    let lines = [
        json!({"id": "allow", "method": "GET", "path": "/v1/charges/ch_1", "host": "payments.acme.example",
               "headers": [["authorization", format!("Bearer {tok}")], ["x-warden-agent", "spiffe://evil"]],
               "source_address": "10.0.0.7:51000", "time": at(t0 + 10)}),
        json!({"id": "deny", "method": "POST", "path": "/v1/payouts", "host": "payments.acme.example",
               "headers": {"authorization": format!("Bearer {tok}"), "content-type": "application/json"},
               "body": "{\"amount\":1}", "time": at(t0 + 20)}),
        json!({"id": "anonymous", "method": "GET", "path": "/v1/charges/ch_1",
               "headers": [["host", "payments.acme.example"]]}),
        // The same token, replayed an hour later: the host clock follows `time`.
        json!({"id": "late", "method": "GET", "path": "/v1/charges/ch_1", "host": "payments.acme.example",
               "headers": [["authorization", format!("Bearer {tok}")]], "time": at(t0 + 3600)}),
    ];
    let mut input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    input.push_str("not json\n");
    input.push_str("{\"method\":\"GET\",\"path\":\"/\"}\n");
    let (out, stderr, ok) = replay(&config, &input, &["--workers", "2"]);
    assert!(!ok, "bad input lines make the exit status non-zero");
    assert_eq!(out.len(), 6, "one line per input line: {out:#?}\nstderr: {stderr}");

    let allow = &out[0];
    assert_eq!(allow["id"], "allow");
    assert_eq!(allow["line"], 1);
    assert_eq!(allow["status"], 200, "{allow:#}");
    assert_eq!(allow["body"], "{\"ok\":true}");
    assert_eq!(allow["forwarded"], true);
    let fwd = &allow["forwarded_headers"];
    assert_eq!(header(fwd, ":path"), Some("/v1/charges/ch_1"));
    assert_eq!(header(fwd, "x-warden-agent"), Some(RECONCILER), "verified identity, not the client's copy");
    assert_eq!(fwd.as_array().unwrap().iter().filter(|p| p[0] == "x-warden-agent").count(), 1);
    let d = &allow["decision"];
    assert_eq!(d["type"], "warden.decision");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["rule"], "finance-read");
    assert_eq!(d["agent"], RECONCILER);
    assert_eq!(d["tool"], "payments.charges.read");
    assert_eq!(d["environment"], "prod");
    assert_eq!(header(fwd, "x-warden-decision-id"), d["decision_id"].as_str());

    let deny = &out[1];
    assert_eq!(deny["status"], 403, "{deny:#}");
    assert_eq!(deny["forwarded"], false);
    assert_eq!(deny["forwarded_headers"], Value::Null);
    assert_eq!(deny["decision"]["rule"], "finance-never-payouts");
    let body: Value = serde_json::from_str(deny["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["reason"], "denied_by_rule");
    assert_eq!(body["decision_id"], deny["decision"]["decision_id"]);
    assert_eq!(header(&deny["headers"], "content-type"), Some("application/json"));

    assert_eq!(out[2]["status"], 401);
    assert_eq!(out[2]["decision"]["reason"], "identity_missing");
    assert_eq!(out[3]["status"], 401);
    assert_eq!(out[3]["decision"]["reason"], "token_expired");

    assert_eq!(out[4]["line"], 5);
    assert!(out[4]["error"].as_str().unwrap().starts_with("line 5: expected ident"), "{}", out[4]);
    assert_eq!(out[5]["error"], "line 6: no host: set `host` or a `host` header");
    assert!(stderr.contains("2 input line(s) were not valid"), "{stderr}");
}

#[test]
fn replay_reports_a_refused_configuration_with_the_filters_reason() {
    let mut c = configuration();
    c.as_object_mut().unwrap().remove("bundle_keys");
    let (out, stderr, ok) = replay(&temp_file(&c.to_string()), "", &[]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(stderr.contains("the plugin did not start"), "{stderr}");
    assert!(stderr.contains("field `bundle_keys`: missing"), "{stderr}");
}

// ---- serve ----

type SeenLog = Arc<Mutex<Vec<Seen>>>;

/// What the test upstream received.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// A loopback HTTP/1.1 server that records each request and answers `200 {"upstream":true}`.
fn test_upstream() -> (SocketAddr, SeenLog) {
    upstream_with_rendezvous(0)
}

/// The same, one thread per connection; with `rendezvous > 0` each request waits (up to 10 s) until that many
/// requests have arrived, and the answer says whether they met: `{"upstream":true,"met":true}`.
fn upstream_with_rendezvous(rendezvous: usize) -> (SocketAddr, SeenLog) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: SeenLog = Arc::default();
    let arrived: Arc<(Mutex<usize>, Condvar)> = Arc::default();
    let (log, meet) = (seen.clone(), arrived.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (log, meet) = (log.clone(), meet.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                let len = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(Seen { request_line: line.trim_end().to_string(), headers, body });
                let reply = if rendezvous == 0 {
                    "{\"upstream\":true}".to_string()
                } else {
                    let (count, cv) = &*meet;
                    let mut n = count.lock().unwrap();
                    *n += 1;
                    cv.notify_all();
                    let (n, _) = cv.wait_timeout_while(n, Duration::from_secs(10), |n| *n < rendezvous).unwrap();
                    format!("{{\"upstream\":true,\"met\":{}}}", *n >= rendezvous)
                };
                let mut w = conn;
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                )
                .unwrap();
            });
        }
    });
    (addr, seen)
}

/// A gateway process, killed when the test ends (also when it fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `warden-gateway serve` as a child process; returns it and its address once it listens.
fn start_gateway(upstream: SocketAddr, config: &Path) -> (Running, SocketAddr) {
    start_gateway_with(&wasm(), upstream, config, &[])
}

/// `warden-gateway serve` of this filter with `extra` arguments.
fn start_gateway_with(wasm: &Path, upstream: SocketAddr, config: &Path, extra: &[&str]) -> (Running, SocketAddr) {
    let child = Command::new(GATEWAY)
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2", "--upstream"])
        .arg(upstream.to_string())
        .arg("--wasm")
        .arg(wasm)
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the gateway exited before listening: {seen}");
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            // Keep draining stderr so the gateway never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, addr);
        }
    }
}

fn send(gateway: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut h: Vec<(String, String)> = vec![
        (":method".into(), method.into()),
        (":path".into(), path.into()),
        (":authority".into(), "payments.acme.example".into()),
    ];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    match http_call::request(gateway, &h, body) {
        CallResult::Response(r) => r,
        CallResult::Reset => panic!("{method} {path}: connection reset"),
    }
}

#[test]
fn serve_forwards_allowed_requests_and_answers_denied_ones_itself() {
    let (upstream, seen) = test_upstream();
    let config = temp_file(&configuration().to_string());
    let (mut child, gateway) = start_gateway(upstream, &config);
    let auth = format!("Bearer {}", token(RECONCILER, now() - 5));

    // Allowed: reaches the upstream with the verified identity, without the client's forged x-warden-* headers.
    let r = send(
        gateway,
        "GET",
        "/v1/charges/ch_1?expand=refunds",
        &[("authorization", &auth), ("x-warden-agent", "spiffe://evil"), ("x-warden-task", "forged")],
        b"",
    );
    assert_eq!(r.status(), Some(200), "{:?} {}", r.headers, String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, b"{\"upstream\":true}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.request_line, "GET /v1/charges/ch_1?expand=refunds HTTP/1.1");
        assert_eq!(s.header("host"), vec!["payments.acme.example"]);
        assert_eq!(s.header("x-warden-agent"), vec![RECONCILER]);
        assert!(s.header("x-warden-task").is_empty(), "the forged task header is gone: {:?}", s.headers);
        assert_eq!(s.header("x-warden-decision-id").len(), 1);
        assert_eq!(s.header("authorization"), vec![auth.as_str()]);
    }

    // Denied by rule: a 403 JSON reply from the filter; the upstream never sees it.
    let r = send(
        gateway,
        "POST",
        "/v1/payouts",
        &[("authorization", &auth), ("content-type", "application/json")],
        b"{\"amount\":100}",
    );
    assert_eq!(r.status(), Some(403));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["rule"], "finance-never-payouts");
    assert_eq!(body["reason"], "denied_by_rule");
    assert!(r.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json"));

    // Unauthenticated: 401 with a Bearer challenge; not forwarded either.
    let r = send(gateway, "GET", "/v1/charges/ch_1", &[], b"");
    assert_eq!(r.status(), Some(401));
    assert!(r.headers.iter().any(|(k, _)| k == "www-authenticate"), "{:?}", r.headers);
    assert_eq!(seen.lock().unwrap().len(), 1, "only the allowed request reached the upstream");

    // The decision records are on stdout, one JSON line each.
    child.0.kill().unwrap();
    let mut stdout = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let records: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let decisions: Vec<&str> = records.iter().map(|r| r["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["allow", "deny", "deny"], "{stdout}");
    assert!(records.iter().all(|r| r["type"] == "warden.decision"));
}

#[test]
fn serve_keeps_connections_alive_and_reads_chunked_bodies() {
    let (upstream, seen) = test_upstream();
    let config = temp_file(&configuration().to_string());
    let (child, gateway) = start_gateway(upstream, &config);
    let auth = format!("Bearer {}", token(RECONCILER, now() - 5));
    let mut conn = TcpStream::connect(gateway).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Two requests on one connection: a chunked POST the filter refuses, then an allowed GET.
    write!(
        conn,
        "POST /v1/payouts HTTP/1.1\r\nHost: payments.acme.example\r\nAuthorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         GET /v1/charges/ch_9 HTTP/1.1\r\nHost: payments.acme.example\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(conn);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        statuses.push(status.trim_end().to_string());
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h.trim_end().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
    }
    assert_eq!(statuses, ["HTTP/1.1 403 Forbidden", "HTTP/1.1 200 OK"]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line, "GET /v1/charges/ch_9 HTTP/1.1");
    assert!(seen[0].body.is_empty());
    drop(child);
}

/// Two worker VMs serve two requests at the same time: the upstream holds each request until both have arrived,
/// which only happens if neither VM waits for the other.
/// The gateway hands a body to the filter in pieces, as Envoy's codec does (HOST-FIDELITY: it used to be one
/// chunk), so a body the filter holds reaches Envoy's default buffer limit (1 MiB): 413 for a request, 500 for a
/// response held at its headers too, as tests/it/envoy_fidelity.rs shows Envoy answering.
#[test]
fn serve_hits_the_buffer_limit_of_a_held_body() {
    let big = vec![b'r'; (1 << 20) + 100_000];
    let upstream = warden_host::upstream::RecordingServer::canned(warden_host::upstream::Reply::ok(big)).unwrap();
    let config = temp_file("{}");
    let filter = crate::support::test_filter_wasm();
    let (_gw, addr) = start_gateway_with(&filter, upstream.addr, &config, &["--allow-on-headers-stop-iteration"]);
    let hold = json!([{"op": "pause_unless_eos"}]);
    let x_ops = |ops: Value| ("x-ops", ops.to_string());
    let (k, v) = x_ops(json!({"request_body": hold}));
    let r = send(addr, "POST", "/upload", &[(k, &v)], &vec![b'x'; (1 << 20) + 100_000]);
    assert_eq!(r.status(), Some(413), "{:?}", String::from_utf8_lossy(&r.body));
    assert!(upstream.received().is_empty(), "the refused request reached the upstream");
    // A body under the limit, held the same way, goes through whole.
    let r = send(addr, "POST", "/upload", &[(k, &v)], &vec![b'x'; 300_000]);
    assert_eq!(r.status(), Some(200));
    assert_eq!(upstream.wait_for(1, Duration::from_secs(5)).last().map(|u| u.body.len()), Some(300_000));
    let (k, v) = x_ops(json!({"response_headers": hold, "response_body": hold}));
    let r = send(addr, "GET", "/download", &[(k, &v)], b"");
    assert_eq!(r.status(), Some(500), "{:?}", String::from_utf8_lossy(&r.body));
}

#[test]
fn serve_runs_requests_on_several_vms_at_once() {
    let (upstream, seen) = upstream_with_rendezvous(2);
    let config = temp_file(&configuration().to_string());
    let (_child, gateway) = start_gateway(upstream, &config);
    let auth = format!("Bearer {}", token(RECONCILER, now() - 5));
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let auth = auth.clone();
            std::thread::spawn(move || {
                send(gateway, "GET", &format!("/v1/charges/ch_{i}"), &[("authorization", &auth)], b"")
            })
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.body, b"{\"upstream\":true,\"met\":true}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn serve_refuses_addresses_off_loopback() {
    for args in [
        ["--upstream", "10.0.0.1:80", "--listen", "127.0.0.1:0"],
        ["--upstream", "127.0.0.1:80", "--listen", "0.0.0.0:8080"],
        ["--upstream", "127.0.0.1:80", "--cluster", "control=192.168.1.2:80"],
    ] {
        let out = Command::new(GATEWAY).args(["serve", "--config", "unused.json"]).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not a loopback address"), "{args:?}: {stderr}");
    }
}

#[test]
fn serve_says_how_to_build_a_missing_filter() {
    let out = Command::new(GATEWAY)
        .args(["serve", "--config", "c.json", "--upstream", "127.0.0.1:9", "--wasm", "/nonexistent/warden.wasm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cargo build -p warden-filter --target wasm32-wasip1 --profile wasm"), "{stderr}");
}

// ---- demo ----

use crate::support::warden_bin;

/// `warden serve` with the example finance bundle signed by the TEST authority, as scripts/demo.sh starts it;
/// killed on drop.
struct ControlEndpoint {
    child: Child,
    addr: String,
    dir: crate::support::TempDir,
}

impl ControlEndpoint {
    fn start() -> ControlEndpoint {
        let dir = crate::support::TempDir::new("gateway-demo-test");
        std::fs::create_dir_all(dir.join("bundles")).unwrap();
        let key = SigningKey::from_jwk(&read_json("keys/TEST-ONLY-authority.jwk.json")).unwrap();
        let bundle = std::fs::read(examples().join("finance-agent.json")).unwrap();
        std::fs::write(dir.join("bundles/finance.jws"), envelope::sign(&bundle, &key)).unwrap();
        std::fs::write(dir.join("upload.token"), "demo-test-upload-token-0123456789").unwrap();
        let mut child = Command::new(warden_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--authority", "policy.acme.example", "--dir"])
            .arg(dir.join("bundles"))
            .arg("--keys")
            .arg(examples().join("keys/TEST-ONLY-authority.jwks.json"))
            .arg("--upload-token-file")
            .arg(dir.join("upload.token"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("serve said {line:?}"));
        ControlEndpoint { addr: addr.to_string(), child, dir }
    }
}

impl Drop for ControlEndpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `warden-gateway demo` (with `extra` arguments) against a fresh control endpoint; returns its stdout after
/// checking that it succeeded and printed every scripted decision.
fn run_demo(extra: &[&std::ffi::OsStr]) -> String {
    let control = ControlEndpoint::start();
    let out = Command::new(GATEWAY)
        .arg("demo")
        .arg("--wasm")
        .arg(wasm())
        .arg("--examples")
        .arg(examples())
        .args(["--control", &control.addr, "--control-path", "/bundles/finance.jws", "--upload-token-file"])
        .arg(control.dir.join("upload.token"))
        .arg("--warden")
        .arg(warden_bin())
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "finance-read",
        "finance-never-payouts",
        "finance-refunds-step-up",
        "step_up_required",
        "identity_missing",
        "token_bad_signature",
        "token_expired",
        "unknown_tool",
        "no_matching_rule",
        "agent finance/reconciler",
        "fetched, verified and activated by the gateway",
        "with the upload token: 200, revision 18 replaces 17",
        "reason revoked_agent, revision 18",
        "409 rollback",
        "retry with the approval: 200 allow (allowed_by_approval)",
        "the same approval again: 403 step_up (approval_replayed)",
        "approved refund 3 of the task: 200 allow (allowed_by_approval)",
        "approved refund 4 of the task: 429 deny (rate_limited): limit refunds-per-task",
        // the ten rows, the approved retry and the replay, three step-up replies and approved retries of the limit
        // step: one record each, none of the start-up probes
        "18 decision records were logged",
        // the rug pull: the changed tool leaves the listing, recorded, and its call is refused
        "calls get_charge: 200 allowed_by_rule",
        "lists tools: 200 [] (the record: get_charge removed, tool_definition_changed",
        "calls get_charge: 403 JSON-RPC -31001 tool_definition_changed",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    stdout
}

#[test]
fn demo_prints_every_scripted_decision_as_expected() {
    let stdout = run_demo(&[]);
    assert!(stdout.contains("the embedded dev gateway"), "{stdout}");
    assert!(!stdout.contains("Envoy stats"), "{stdout}");
}

/// scripts/demo.sh's default: the same demo with warden.wasm inside real Envoy 1.40; the decision records come from
/// Envoy's access log and the table is followed by the Envoy stats that changed.
#[test]
fn demo_runs_in_real_envoy() {
    let envoy = warden_host::artifacts::envoy().unwrap_or_else(|e| panic!("{e}"));
    let stdout = run_demo(&["--envoy".as_ref(), envoy.as_os_str()]);
    for needle in [
        "Envoy 1.40 (V8): 2 worker VMs",
        "Envoy's access log has them",
        "Envoy stats that changed (admin /stats, wasmcustom.warden.*):",
        "wasmcustom.warden.reasons.revoked_agent: 0 -> 1",
        // The retry, the two refunds within the limit, and the fourth: its approval is spent before the limit refuses.
        "wasmcustom.warden.approvals.accepted: 0 -> 4",
        "wasmcustom.warden.limits.refused.refunds-per-task: 0 -> 1",
        "wasmcustom.warden.bundle.revision: 17 -> 18",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
}

#[test]
fn demo_says_it_needs_a_control_endpoint() {
    let out = Command::new(GATEWAY).arg("demo").arg("--wasm").arg(wasm()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripts/demo.sh"));
}
