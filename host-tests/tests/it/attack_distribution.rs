//! Issue 19, distribution and availability (items 12–14): what a control endpoint, a signed revision or the clock
//! can do to the fleet. A huge bundle body is refused from its size without being read into the VM (in the host,
//! where the VM's memory is visible, and in real Envoy, where 2 GiB used to trap the worker); a revision far
//! beyond the active one is refused (it would pin the fleet: every later revision a rollback); the highest
//! activated revision and the revoked signing keys outlive a bundle that forgets them and a VM reload (shared
//! data); and a wall-clock step forward or back does not freeze polling (the fetch lease holds absolute times).
//!
//! Run: `cargo test -p warden-host --test it attack_distribution` (after `scripts/test.sh` built the artifacts).

use std::sync::OnceLock;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};
use warden_host::envoy::{Envoy, EnvoyOptions};
use warden_host::upstream::{RecordingServer, Reply as ToolReply};
use warden_host::{Clock, HttpRequest, PluginConfig};

use crate::support::envoy::now as wall_now;
use crate::support::live::*;
use crate::support::warden_wasm;

const MIB: u64 = 1 << 20;
/// The filter's limit on a bundle body (`poll::MAX_BUNDLE_BYTES`).
const LIMIT: u64 = 8 * MIB;

fn allowed(x: (u16, String)) -> bool {
    (x.0, x.1.as_str()) == (200, "allowed")
}

fn denied_by_rule(x: (u16, String)) -> bool {
    (x.0, x.1.as_str()) == (403, "denied_by_rule")
}

const FAST: fn() -> Value =
    || json!({"poll_seconds": 2, "jitter_percent": 0, "timeout_ms": 2000, "backoff_max_seconds": 2});

/// Steps until `metric` grew past `before` (at most `seconds` host seconds); returns its value.
fn step_until_metric(p: &mut warden_host::Plugin, name: &str, before: i64, seconds: u64) -> i64 {
    for _ in 0..seconds {
        step_waiting(p, 1, Duration::from_secs(20));
        let v = p.metric(name).unwrap_or(0);
        if v > before {
            return v;
        }
    }
    p.metric(name).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------------------
// Item 12: the control endpoint's body is checked from its size, never read whole first.

fn huge_body_in_the_host(content_length: Option<u64>) {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(FAST(), None), 1, server.addr);
    step1(&mut p, 2);
    assert_eq!(revisions(&mut p), vec![Some(5)]);
    let before = p.worker(0).unwrap().memory_bytes();
    let body_len = 40 * MIB;
    server.set(Reply::Huge { body_len, content_length });
    let failures = step_until_metric(&mut p, "warden.bundle.fetch.failure.malformed", 0, 10);
    assert!(failures >= 1, "the huge body is a counted failure: {:#?}", p.logs());
    let grown = p.worker(0).unwrap().memory_bytes().saturating_sub(before) as u64;
    eprintln!("VM memory grew by {grown} bytes for a {body_len}-byte body ({content_length:?})");
    assert!(grown < LIMIT / 2, "the body was read into the VM: its memory grew by {grown} bytes");
    let line = p.logs().iter().find(|l| l.message.contains("failed (malformed)")).map(|l| l.message.clone());
    let line = line.unwrap_or_else(|| panic!("no failure line: {:#?}", p.logs()));
    assert!(line.contains(&body_len.to_string()) && line.contains(&LIMIT.to_string()), "{line}");
    assert!(line.contains("not read"), "the line says nothing was read: {line}");
    assert!(line.contains("keeping revision 5"), "{line}");
    assert!(allowed(read(&mut p, 0)));
    assert!(denied_by_rule(write(&mut p, 0)));
    // The endpoint recovers: the next good revision activates.
    server.set(Reply::bundle(&sign(&bundle(6))));
    step1(&mut p, 4);
    assert_eq!(revisions(&mut p), vec![Some(6)]);
}

#[test]
fn a_huge_bundle_body_with_a_content_length_is_refused_without_reading_it() {
    huge_body_in_the_host(Some(40 * MIB));
}

#[test]
fn a_huge_chunked_bundle_body_is_refused_without_reading_it() {
    huge_body_in_the_host(None);
}

#[test]
fn a_content_length_that_lies_keeps_the_last_good_bundle() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(FAST(), None), 1, server.addr);
    step1(&mut p, 2);
    // Says 100 bytes and sends 20 MiB: the 100 are read, and are no bundle.
    server.set(Reply::Huge { body_len: 20 * MIB, content_length: Some(100) });
    assert!(step_until_metric(&mut p, "warden.bundle.fetch.failure.malformed", 0, 10) >= 1, "{:#?}", p.logs());
    // Says 3 GiB and sends a few bytes: cut short (a reset), nothing allocated for the announced size.
    server.set(Reply::Huge { body_len: 4096, content_length: Some(3 << 30) });
    assert!(step_until_metric(&mut p, "warden.bundle.fetch.failure.reset", 0, 10) >= 1, "{:#?}", p.logs());
    assert_eq!(revisions(&mut p), vec![Some(5)]);
    assert!(allowed(read(&mut p, 0)));
    assert!(p.worker(0).unwrap().failure().is_none());
}

struct LiveEnvoy {
    envoy: Envoy,
    _tools: RecordingServer,
}

fn envoy_polling(control: std::net::SocketAddr, concurrency: usize, extra: Value) -> LiveEnvoy {
    let mut c = json!({"poll_seconds": 1, "jitter_percent": 0, "timeout_ms": 10_000, "backoff_max_seconds": 1});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let cfg = config(c, None);
    let tools = RecordingServer::canned(ToolReply::ok("from the tool")).unwrap();
    let opts = EnvoyOptions::new(warden_wasm(), cfg.to_string(), tools.addr)
        .cluster(CLUSTER, control)
        .concurrency(concurrency);
    LiveEnvoy { envoy: Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}")), _tools: tools }
}

/// `(status, reason, revision)` of a request without a token through Envoy.
fn envoy_state(l: &LiveEnvoy) -> (u16, String, Option<u64>) {
    let r = l.envoy.send(&HttpRequest::new("GET", "/contacts/1").authority(CRM)).unwrap();
    let v = r.json();
    (r.status, v["reason"].as_str().unwrap_or("").to_string(), v["revision"].as_u64())
}

fn envoy_read(l: &LiveEnvoy) -> (u16, String) {
    let t = token(BOT, wall_now());
    let r = l
        .envoy
        .send(&HttpRequest::new("GET", "/contacts/1").authority(CRM).header("authorization", &format!("Bearer {t}")))
        .unwrap();
    if r.status == 200 && r.body_str() == "from the tool" {
        return (200, "allowed".into());
    }
    (r.status, r.json()["reason"].as_str().unwrap_or("").into())
}

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

/// A body over the filter's limit but within Envoy's own async-client buffer limit (12 MiB) is refused from its size,
/// unread, with a line that says so; 2 GiB and a bit (past 2^31 bytes, where reading it whole trapped the VM in the
/// attack run) Envoy 1.40 drains itself ("the buffer size limit for async client response body has been exceeded")
/// and delivers as a reset. Either way the worker keeps deciding on the last good bundle.
#[test]
fn a_huge_bundle_body_does_not_trap_the_worker_in_real_envoy() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let l = envoy_polling(server.addr, 1, json!({}));
    assert!(eventually(Duration::from_secs(10), || envoy_state(&l).2 == Some(5)), "{:?}", envoy_state(&l));
    let cases = [
        (12 * MIB, None),
        (12 * MIB, Some(12 * MIB)),
        ((2 << 30) + MIB, None),
        ((2 << 30) + MIB, Some((2 << 30) + MIB)),
    ];
    for (body_len, content_length) in cases {
        let before = failures_in_envoy(&l);
        server.set(Reply::Huge { body_len, content_length });
        let counted = eventually(Duration::from_secs(60), || failures_in_envoy(&l) > before);
        server.set(Reply::bundle(&sign(&bundle(5))));
        assert!(counted, "{body_len} {content_length:?}: no failure counted; log:\n{}", l.envoy.full_log());
        assert_eq!(envoy_read(&l), (200, "allowed".into()), "{body_len} {content_length:?}: the worker still decides");
        assert_eq!(envoy_state(&l), (401, "identity_missing".into(), Some(5)));
    }
    assert!(l.envoy.warden_stat("warden.bundle.fetch.failure.malformed") >= 2, "the 12 MiB bodies are malformed");
    let lines = l.envoy.log_lines("failed (malformed)");
    let want = (12 * MIB).to_string();
    assert!(
        lines.iter().any(|x| x.contains("not read") && x.contains(&want) && x.contains(&LIMIT.to_string())),
        "{lines:#?}"
    );
    assert!(!l.envoy.full_log().contains("Function: proxy_on_http_call_response failed"), "{}", l.envoy.full_log());
}

#[test]
fn a_content_length_that_lies_keeps_the_last_good_bundle_in_real_envoy() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let l = envoy_polling(server.addr, 1, json!({"timeout_ms": 2000}));
    assert!(eventually(Duration::from_secs(10), || envoy_state(&l).2 == Some(5)));
    let cases = [
        ("says 100 bytes, sends 20 MiB", Reply::Huge { body_len: 20 * MIB, content_length: Some(100) }),
        ("says 3 GiB, sends 4 KiB and closes", Reply::Huge { body_len: 4096, content_length: Some(3 << 30) }),
    ];
    for (what, reply) in cases {
        let before = failures_in_envoy(&l);
        server.set(reply);
        assert!(eventually(Duration::from_secs(10), || failures_in_envoy(&l) > before), "{what}: no failure counted");
        assert_eq!(envoy_read(&l), (200, "allowed".into()), "{what}");
        assert_eq!(envoy_state(&l).2, Some(5), "{what}");
    }
    server.set(Reply::bundle(&sign(&bundle(6))));
    assert!(eventually(Duration::from_secs(10), || envoy_state(&l).2 == Some(6)), "recovers: {:?}", envoy_state(&l));
}

fn failures_in_envoy(l: &LiveEnvoy) -> i64 {
    let stats = l.envoy.warden_stats().unwrap_or_default();
    stats.iter().filter(|(k, _)| k.contains("warden.bundle.fetch.failure.")).map(|(_, v)| *v).sum()
}

// ---------------------------------------------------------------------------------------------------------------
// Item 13: a revision far ahead pins nothing; the highest revision and revoked keys outlive bundles and VMs.

/// A second pinned authority key (the first is `world().authority`).
fn second_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(envelope::Algorithm::EdDSA, "authority-ctl-2").expect("key"))
}

fn sign_with(bundle: &Value, key: &SigningKey) -> String {
    envelope::sign(serde_json::to_string_pretty(bundle).expect("json").as_bytes(), key)
}

/// `config` pinning both authority keys.
fn two_key_config(control: Value) -> Value {
    let mut c = config(control, None);
    c["bundle_keys"] = json!({"keys": [world().authority.public_jwk(), second_key().public_jwk()]});
    c
}

#[test]
fn a_revision_far_beyond_the_active_one_is_refused_and_pins_nothing() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut cfg = config(FAST(), None);
    cfg["max_revision_jump"] = json!(1000);
    let mut p = start(&cfg, 2, server.addr);
    step1(&mut p, 3);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);
    for far in [u64::MAX, 1006] {
        server.set(Reply::bundle(&sign(&bundle(far))));
        let before = metric(&p, "warden.bundle.fetch.failure.revision_jump");
        assert!(step_until_metric(&mut p, "warden.bundle.fetch.failure.revision_jump", before, 6) > before);
        assert_eq!(revisions(&mut p), vec![Some(5), Some(5)], "revision {far} is not activated");
        let line = p.logs().iter().rev().find(|l| l.message.contains("failed (revision_jump)")).cloned();
        let line = line.map(|l| l.message).unwrap_or_default();
        assert!(line.contains(&far.to_string()) && line.contains("max_revision_jump"), "{line}");
        p.take_logs();
        server.set(Reply::bundle(&sign(&bundle(5))));
        step1(&mut p, 3);
    }
    // Within the bound: activated; and the revision after it is not a rollback.
    server.set(Reply::bundle(&sign(&bundle(1005))));
    step1(&mut p, 4);
    assert_eq!(revisions(&mut p), vec![Some(1005), Some(1005)]);
    server.set(Reply::bundle(&sign(&bundle(1006))));
    step1(&mut p, 4);
    assert_eq!(revisions(&mut p), vec![Some(1006), Some(1006)]);
}

#[test]
fn the_default_bound_refuses_the_last_revision() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(FAST(), None), 1, server.addr);
    step1(&mut p, 3);
    server.set(Reply::bundle(&sign(&bundle(u64::MAX))));
    assert!(step_until_metric(&mut p, "warden.bundle.fetch.failure.revision_jump", 0, 6) >= 1, "{:#?}", p.logs());
    server.set(Reply::bundle(&sign(&bundle(6))));
    step1(&mut p, 4);
    assert_eq!(revisions(&mut p), vec![Some(6)], "the fleet is not pinned: the next revision activates");
}

#[test]
fn a_revoked_signing_key_stays_revoked_after_a_bundle_that_forgets_it() {
    let k1 = &world().authority;
    let k2 = second_key();
    let server = ControlServer::start(Reply::bundle(&sign_with(&bundle(5), k1)));
    let mut p = start(&two_key_config(FAST()), 2, server.addr);
    step1(&mut p, 3);
    let mut revoking = bundle(6);
    revoking["revocations"] = json!({"signing_keys": [k1.kid()]});
    server.set(Reply::bundle(&sign_with(&revoking, k2)));
    step1(&mut p, 4);
    assert_eq!(revisions(&mut p), vec![Some(6), Some(6)]);
    server.set(Reply::bundle(&sign_with(&bundle(7), k2)));
    step1(&mut p, 4);
    assert_eq!(revisions(&mut p), vec![Some(7), Some(7)]);
    // Revision 7 no longer lists the key; a bundle signed with it is still refused.
    server.set(Reply::bundle(&sign_with(&bundle(8), k1)));
    assert!(step_until_metric(&mut p, "warden.bundle.fetch.failure.unknown_key", 0, 6) >= 1, "{:#?}", p.logs());
    assert_eq!(revisions(&mut p), vec![Some(7), Some(7)]);
}

/// A VM reload (Envoy keeps shared data per vm_id across it): the new VMs here poll a mirror path, so the bundle
/// record of the old path does not help them; what the process activated and revoked before still binds.
#[test]
fn the_highest_revision_and_revoked_keys_survive_a_vm_reload() {
    let k1 = &world().authority;
    let k2 = second_key();
    let mut revoking = bundle(7);
    revoking["revocations"] = json!({"signing_keys": [k1.kid()]});
    let server = ControlServer::start(Reply::bundle(&sign_with(&revoking, k2)));
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(t0() as u64));
    let pc =
        |cfg: &Value, addr| PluginConfig::new(cfg.to_string()).workers(2).clock(clock.clone()).cluster(CLUSTER, addr);
    let mut first = start_with(pc(&two_key_config(FAST()), server.addr));
    step1(&mut first, 3);
    assert_eq!(revisions(&mut first), vec![Some(7), Some(7)]);
    let shared = first.shared().clone();
    drop(first);

    // The reloaded plugin polls a mirror that serves revision 6 (older, validly signed by the other key).
    let mirror = ControlServer::start(Reply::bundle(&sign_with(&bundle(6), k2)));
    let mut mirrored = FAST();
    mirrored["path"] = json!("/mirror/bundle.jws");
    let mut p = start_with(pc(&two_key_config(mirrored), mirror.addr).shared_state(shared));
    let before = metric(&p, "warden.bundle.fetch.failure.rollback");
    assert!(step_until_metric(&mut p, "warden.bundle.fetch.failure.rollback", before, 6) > before, "{:#?}", p.logs());
    assert_eq!(revisions(&mut p), vec![None, None], "revision 6 is a rollback after revision 7 was active");
    assert_eq!(state(&mut p, 0).1, "no_active_bundle");
    // A newer revision signed with the key revision 7 revoked: refused.
    mirror.set(Reply::bundle(&sign_with(&bundle(8), k1)));
    let before = metric(&p, "warden.bundle.fetch.failure.unknown_key");
    assert!(step_until_metric(&mut p, "warden.bundle.fetch.failure.unknown_key", before, 6) > before);
    assert_eq!(revisions(&mut p), vec![None, None]);
    // A newer revision signed with a good key: activated.
    mirror.set(Reply::bundle(&sign_with(&bundle(8), k2)));
    step1(&mut p, 4);
    assert_eq!(revisions(&mut p), vec![Some(8), Some(8)]);
}

#[test]
fn a_revision_far_beyond_the_active_one_is_refused_in_real_envoy() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let l = envoy_polling(server.addr, 2, json!({}));
    assert!(eventually(Duration::from_secs(10), || envoy_state(&l).2 == Some(5)));
    server.set(Reply::bundle(&sign(&bundle(u64::MAX))));
    let counted = l.envoy.wait_stat("warden.bundle.fetch.failure.revision_jump", Duration::from_secs(8), |v| v > 0);
    assert!(counted > 0, "not refused: {:?}", envoy_state(&l));
    assert!((0..6).all(|_| envoy_state(&l).2 == Some(5)), "{:?}", envoy_state(&l));
    server.set(Reply::bundle(&sign(&bundle(6))));
    assert!(
        eventually(Duration::from_secs(8), || (0..6).all(|_| envoy_state(&l).2 == Some(6))),
        "the next revision activates: {:?}",
        envoy_state(&l)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Item 14: the fetch lease survives wall-clock steps.

/// Fetches of a 2-worker fleet (period 10 s) in 300 s after the wall clock stepped by `excursion` and back.
fn fetches_after_steps(steps: &[i64]) -> usize {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(json!({"poll_seconds": 10, "jitter_percent": 0}), None), 2, server.addr);
    step1(&mut p, 3);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);
    for &offset in steps {
        let wall = now(&p) + offset;
        p.clock().step_wall(UNIX_EPOCH + Duration::from_secs(wall as u64));
        step1(&mut p, 12); // at least one fetch falls due at the new time
    }
    let before = server.requests();
    step1(&mut p, 300);
    let fetches = server.requests() - before;
    eprintln!("steps {steps:?}: {fetches} fetches in 300 s at a 10 s period");
    assert!(allowed(read(&mut p, 0)));
    fetches
}

#[test]
fn a_clock_step_forward_and_back_does_not_freeze_polling() {
    let fetches = fetches_after_steps(&[86_400, -86_400]);
    assert!(
        (30..=35).contains(&fetches),
        "{fetches} fetches in 300 s at a 10 s period (one per 9 s: the period less a tick)"
    );
}

#[test]
fn a_clock_step_back_does_not_freeze_polling() {
    let fetches = fetches_after_steps(&[-3600]);
    assert!(
        (30..=35).contains(&fetches),
        "{fetches} fetches in 300 s at a 10 s period (one per 9 s: the period less a tick)"
    );
}

#[test]
fn a_clock_step_forward_does_not_make_the_fleet_fetch_more_than_once_a_period() {
    let fetches = fetches_after_steps(&[86_400]);
    assert!(
        (30..=35).contains(&fetches),
        "{fetches} fetches in 300 s at a 10 s period (one per 9 s: the period less a tick)"
    );
}
