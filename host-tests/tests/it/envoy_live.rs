//! Live updates through real Envoy (two workers, polling every second): a new revision from `warden serve`
//! activates on every worker VM and a revocation is enforced within one poll period plus one second; a rollback,
//! a bad signature, 500s and a slow endpoint keep the last good bundle (counted in Envoy's stats); an expired
//! bundle past its grace is 503; a control endpoint down at start is 503 `no_active_bundle`, then recovers; nginx
//! as the static control endpoint.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_host::envoy::{Envoy, EnvoyOptions};
use warden_host::upstream::{RecordingServer, Reply as ToolReply};
use warden_host::HttpRequest;

use crate::e2e_nginx::Nginx;
use crate::support::envoy::now;
use crate::support::live::{self, bundle, revoking_bundle, sign, ControlServer, Owner, Reply, BOT, CLUSTER, CRM};
use crate::support::warden_wasm;

const POLL: u64 = 1;

struct Live {
    envoy: Envoy,
    _tools: RecordingServer,
}

fn start(control: std::net::SocketAddr, extra: Value) -> Live {
    let mut c = json!({"poll_seconds": POLL, "jitter_percent": 0, "timeout_ms": 500, "backoff_max_seconds": 2});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let mut config = live::config(c, None);
    config["log_decisions"] = json!(false);
    let tools = RecordingServer::canned(ToolReply::ok("from the tool")).unwrap();
    let opts =
        EnvoyOptions::new(warden_wasm(), config.to_string(), tools.addr).cluster(CLUSTER, control).concurrency(2);
    Live { envoy: Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}")), _tools: tools }
}

/// A request without a token: `(status, reason, revision, vm)`.
fn state(l: &Live) -> (u16, String, Option<u64>, String) {
    let id = crate::support::envoy::request_id();
    let r = l.envoy.send(&HttpRequest::new("GET", "/contacts/1").authority(CRM).header("x-request-id", &id)).unwrap();
    let v = r.json();
    let vm = l
        .envoy
        .access_log_entry(&id, Duration::from_secs(1))
        .and_then(|e| e.record)
        .map(|r| r["vm"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    (r.status, v["reason"].as_str().unwrap_or("").into(), v["revision"].as_u64(), vm)
}

/// The support bot reads a contact: `(status, reason)`, `(200, "allowed")` when forwarded.
fn read(l: &Live) -> (u16, String) {
    let t = live::token(BOT, now());
    let r = l
        .envoy
        .send(&HttpRequest::new("GET", "/contacts/1").authority(CRM).header("authorization", &format!("Bearer {t}")))
        .unwrap();
    if r.status == 200 && r.body_str() == "from the tool" {
        return (200, "allowed".into());
    }
    (r.status, r.json()["reason"].as_str().unwrap_or("").into())
}

/// Polls `f` until it is true or `within` passed; returns whether it became true.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every one of `n` requests (new connections, spread over the workers) answers `revision`.
fn all_at(l: &Live, revision: u64, n: usize) -> bool {
    (0..n).all(|_| state(l).2 == Some(revision))
}

#[test]
fn a_new_revision_reaches_every_worker_and_a_revocation_is_enforced_within_a_poll_period() {
    let owner = Owner::new();
    std::fs::write(owner.bundles().join("bundle.jws"), owner.sign_with_cli(&bundle(1))).unwrap();
    let serve = owner.serve();
    let l = start(serve.addr, json!({}));
    assert!(eventually(Duration::from_secs(10), || all_at(&l, 1, 10)), "revision 1 active: {:?}", state(&l));
    assert_eq!(read(&l), (200, "allowed".into()));
    let vms: BTreeSet<String> = (0..20).map(|_| state(&l).3).collect();
    eprintln!("decision records came from VMs {vms:?}");

    // Revision 2 revokes the bot: uploaded through serve's authenticated PUT.
    let (status, body, _) = serve.upload("bundle.jws", &owner.sign_with_cli(&revoking_bundle(2)), live::UPLOAD_TOKEN);
    assert_eq!(status, 200, "{body}");
    let uploaded = Instant::now();
    let enforced = eventually(Duration::from_secs(POLL + 1), || (0..10).all(|_| read(&l).1 == "revoked_agent"));
    assert!(enforced, "revocation not enforced on every worker within {POLL} s + 1 s: {:?}", read(&l));
    eprintln!("revocation enforced {:?} after the upload", uploaded.elapsed());
    assert!(all_at(&l, 2, 10));
    assert_eq!(l.envoy.warden_stat("warden.bundle.revision"), 2);
}

#[test]
fn faults_keep_the_last_good_bundle() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let l = start(server.addr, json!({}));
    assert!(eventually(Duration::from_secs(10), || all_at(&l, 5, 6)), "{:?}", state(&l));
    let stranger = warden_core::envelope::SigningKey::generate(warden_core::envelope::Algorithm::EdDSA, "x").unwrap();
    let faults: Vec<(&str, Reply)> = vec![
        ("rollback", Reply::bundle(&sign(&bundle(4)))),
        ("unknown_key", Reply::bundle(&warden_core::envelope::sign(bundle(6).to_string().as_bytes(), &stranger))),
        ("signature", Reply::body(&bundle(6).to_string())),
        ("http_status", Reply::Status(500, "internal error".into())),
        ("timeout", Reply::Slow(Duration::from_millis(1500), Box::new(Reply::bundle(&sign(&bundle(6)))))),
    ];
    for (cause, reply) in faults {
        let before = l.envoy.warden_stat(&format!("warden.bundle.fetch.failure.{cause}"));
        server.set(reply);
        let counted =
            l.envoy.wait_stat(&format!("warden.bundle.fetch.failure.{cause}"), Duration::from_secs(6), |v| v > before);
        assert!(counted > before, "{cause}: not counted ({counted})");
        assert!(all_at(&l, 5, 4), "{cause}: the last good revision stays: {:?}", state(&l));
        assert_eq!(read(&l), (200, "allowed".into()), "{cause}");
    }
    // The fault ends: a good revision arrives.
    server.set(Reply::bundle(&sign(&bundle(6))));
    assert!(eventually(Duration::from_secs(6), || all_at(&l, 6, 6)), "{:?}", state(&l));
}

#[test]
fn an_expired_bundle_past_its_grace_is_a_503() {
    let mut short = bundle(3);
    short["expires_at"] = json!(warden_core::time::format_rfc3339(now() + 4));
    let server = ControlServer::start(Reply::bundle(&sign(&short)));
    let mut c = live::config(json!({"poll_seconds": POLL, "jitter_percent": 0}), None);
    c["bundle_grace_seconds"] = json!(0);
    let tools = RecordingServer::canned(ToolReply::ok("x")).unwrap();
    let opts = EnvoyOptions::new(warden_wasm(), c.to_string(), tools.addr).cluster(CLUSTER, server.addr);
    let l = Live { envoy: Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}")), _tools: tools };
    assert!(eventually(Duration::from_secs(3), || state(&l).2 == Some(3)), "{:?}", state(&l));
    let expired = eventually(Duration::from_secs(8), || {
        let s = state(&l);
        s.0 == 503 && s.1 == "bundle_expired"
    });
    assert!(expired, "{:?}", state(&l));
}

#[test]
fn a_control_endpoint_down_at_start_is_503_then_recovers() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(8))));
    server.set_down(true);
    let l = start(server.addr, json!({}));
    let s = state(&l);
    assert_eq!((s.0, s.1.as_str()), (503, "no_active_bundle"), "{s:?}");
    assert!(
        eventually(Duration::from_secs(5), || l.envoy.warden_stat("warden.bundle.fetch.failure.connect") > 0),
        "connect failures counted"
    );
    server.set_down(false);
    assert!(eventually(Duration::from_secs(8), || all_at(&l, 8, 6)), "{:?}", state(&l));
}

#[test]
fn nginx_as_the_static_control_endpoint() {
    let nginx = Nginx::start();
    nginx.publish(&sign(&bundle(11)));
    let l = start(nginx.addr, json!({}));
    assert!(eventually(Duration::from_secs(10), || all_at(&l, 11, 6)), "{:?}", state(&l));
    assert!(
        eventually(Duration::from_secs(4), || l.envoy.warden_stat("warden.bundle.fetch.not_modified") > 0),
        "nginx answers 304 to If-None-Match"
    );
    // nginx's ETag is mtime-size: wait a second so the new file's differs even at equal size.
    std::thread::sleep(Duration::from_millis(1100));
    nginx.publish(&sign(&bundle(12)));
    assert!(eventually(Duration::from_secs(5), || all_at(&l, 12, 6)), "{:?}", state(&l));
}
