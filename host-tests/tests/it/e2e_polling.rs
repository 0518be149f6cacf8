//! `warden.wasm` polling a real loopback control endpoint in the host: first activation, propagation of a new
//! revision to every worker VM within one poll period (host clock), 304s, revocation, one fetch per period for the
//! whole fleet, every fault class (the last good bundle keeps deciding: never an allow it would deny), and
//! staleness (503 `bundle_expired`, then recovery).
//!
//! Run: `cargo build -p warden-filter --target wasm32-wasip1 --profile wasm` then
//! `cargo test -p warden-host --test it e2e_polling::`.

use std::time::Duration;

use crate::support::live::*;
use serde_json::json;

const ALLOWED: (u16, &str) = (200, "allowed");

fn allowed(x: (u16, String)) -> bool {
    (x.0, x.1.as_str()) == ALLOWED
}

fn denied_by_rule(x: (u16, String)) -> bool {
    (x.0, x.1.as_str()) == (403, "denied_by_rule")
}

#[test]
fn first_bundle_activates_then_304s() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(json!({"poll_seconds": 5, "jitter_percent": 0}), None), 2, server.addr);
    // Before the first fetch (the first tick, 1 s after start): fail closed.
    for w in 0..2 {
        assert_eq!(state(&mut p, w), (503, "no_active_bundle".into(), None));
        assert_eq!(read(&mut p, w), (503, "no_active_bundle".into()));
    }
    step1(&mut p, 1);
    assert_eq!(server.requests(), 1, "one VM fetched");
    step1(&mut p, 1); // the other VM picks it up from shared data on its tick
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);
    for w in 0..2 {
        assert!(allowed(read(&mut p, w)));
        assert!(denied_by_rule(write(&mut p, w)));
    }
    let seen = server.seen();
    assert_eq!(seen[0].path, CONTROL_PATH);
    assert_eq!(seen[0].authority.as_deref(), Some(CONTROL_AUTHORITY));
    assert_eq!(seen[0].if_none_match, None);
    assert_eq!(metric(&p, "warden.bundle.revision"), 5);
    assert_eq!(metric(&p, "warden.bundle.fetch.success"), 1);
    assert_eq!(metric(&p, "warden.bundle.activations"), 2, "one activation per worker VM");
    assert_eq!(metric(&p, "warden.bundle.age_seconds"), 3600 + 2);
    assert!(p.logged("warden: activated bundle revision 5"));

    // No change: 304s, with the ETag of the active bundle.
    step1(&mut p, 20);
    let seen = server.seen();
    assert!((4..=6).contains(&seen.len()), "{} fetches in 22 s at a 5 s period", seen.len());
    let Reply::Bundle { etag, .. } = Reply::bundle(&sign(&bundle(5))) else { unreachable!() };
    assert!(seen[1..].iter().all(|s| s.if_none_match.as_deref() == Some(etag.as_str())), "{seen:?}");
    assert_eq!(metric(&p, "warden.bundle.fetch.not_modified"), seen.len() as i64 - 1);
    assert_eq!(metric(&p, "warden.bundle.fetch.success"), 1);
    assert_eq!(metric(&p, "warden.bundle.activations"), 2);
    assert_eq!(metric(&p, "warden.bundle.age_seconds"), 3600 + 22);
    for cause in ["http_status", "connect", "timeout", "reset", "signature", "rollback", "expired", "invalid"] {
        assert_eq!(metric(&p, &format!("warden.bundle.fetch.failure.{cause}")), 0);
    }
    assert_eq!(metric(&p, "warden.bundle.fetch.failure.unknown_key"), 0);
    assert_eq!(metric(&p, "warden.bundle.fetch.failure.malformed"), 0);
    // Decision counters: the reads and writes above.
    assert_eq!(metric(&p, "warden.decisions.allow"), 2);
    assert!(metric(&p, "warden.decisions.deny") >= 2 + 2 + 2);
    assert_eq!(metric(&p, "warden.decisions.step_up"), 0);
}

/// A revision published at host time t is enforced by every worker by t + poll_seconds, measured in the worst
/// case (published right after a fetch); and the fleet fetches about once per period, not once per worker.
fn reaches_every_vm_within_one_period(workers: usize) {
    const PERIOD: i64 = 10;
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(json!({"poll_seconds": PERIOD}), None), workers, server.addr);
    step1(&mut p, 2);
    assert_eq!(revisions(&mut p), vec![Some(5); workers]);

    for revision in 6..=8u64 {
        // Wait for a fetch, then publish just after it.
        let before = server.requests();
        while server.requests() == before {
            step1(&mut p, 1);
        }
        let published = now(&p);
        server.set(Reply::bundle(&sign(&bundle(revision))));
        loop {
            step1(&mut p, 1);
            let elapsed = now(&p) - published;
            if revisions(&mut p) == vec![Some(revision); workers] {
                assert!(elapsed <= PERIOD, "revision {revision} took {elapsed} s on {workers} workers");
                eprintln!("{workers} workers: revision {revision} everywhere after {elapsed} s");
                break;
            }
            assert!(elapsed <= PERIOD, "revision {revision} not everywhere after {elapsed} s: {:?}", revisions(&mut p));
        }
        for w in 0..workers {
            assert!(allowed(read(&mut p, w)));
            assert!(denied_by_rule(write(&mut p, w)));
        }
    }

    // One fetch per period for the whole fleet: 200 s at 10 s minus up to 10 % jitter (and a tick).
    let (before, t0) = (server.requests(), now(&p));
    step1(&mut p, 200);
    let fetches = server.requests() - before;
    assert!((20..=26).contains(&fetches), "{fetches} fetches in {} s with {workers} workers", now(&p) - t0);
    assert_eq!(metric(&p, "warden.bundle.activations"), (4 * workers) as i64);
    assert_eq!(metric(&p, "warden.bundle.revision"), 8);
}

#[test]
fn new_revision_reaches_both_workers_within_one_period() {
    reaches_every_vm_within_one_period(2);
}

#[test]
fn new_revision_reaches_four_workers_within_one_period() {
    reaches_every_vm_within_one_period(4);
}

#[test]
fn revocation_in_a_new_revision_takes_effect() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(json!({"poll_seconds": 3, "jitter_percent": 0}), None), 2, server.addr);
    step1(&mut p, 2);
    assert!(allowed(read(&mut p, 0)) && allowed(read(&mut p, 1)));
    let mut revoking = bundle(6);
    revoking["revocations"] = json!({"agents": [BOT]});
    server.set(Reply::bundle(&sign(&revoking)));
    step1(&mut p, 3);
    for w in 0..2 {
        assert_eq!(read(&mut p, w), (401, "revoked_agent".into()));
        assert_eq!(write(&mut p, w).0, 401);
    }
}

#[test]
fn inline_bundle_is_the_start_and_control_updates_it() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let inline = sign(&bundle(4));
    let mut p = start(&config(json!({"poll_seconds": 3}), Some(&inline)), 2, server.addr);
    assert_eq!(revisions(&mut p), vec![Some(4), Some(4)], "the inline bundle decides before any fetch");
    assert!(allowed(read(&mut p, 1)));
    step1(&mut p, 2);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);
    // The same revision served again (no ETag match on the first fetch after start) is not an activation.
    let same = start(&config(json!({"poll_seconds": 3}), Some(&sign(&bundle(5)))), 1, server.addr);
    let mut same = same;
    step1(&mut same, 2);
    assert_eq!(revisions(&mut same), vec![Some(5)]);
    assert_eq!(metric(&same, "warden.bundle.fetch.success"), 1);
    assert_eq!(metric(&same, "warden.bundle.activations"), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Faults: revision 5 is active; the fault lasts several attempts; decisions stay revision 5's; the failure is
// counted by cause and logged once; then a good revision 6 activates everywhere.

const FAULT_CONFIG: fn() -> serde_json::Value =
    || json!({"poll_seconds": 2, "jitter_percent": 0, "timeout_ms": 1000, "backoff_max_seconds": 4});

fn fault(cause: &str, apply: impl FnOnce(&ControlServer), wait: Duration) {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(FAULT_CONFIG(), None), 2, server.addr);
    step1(&mut p, 2);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);
    p.take_logs();

    apply(&server);
    let before = server.requests();
    step_waiting(&mut p, 16, wait);
    let metric_name = format!("warden.bundle.fetch.failure.{cause}");
    let failures = metric(&p, &metric_name);
    // Backoff: 1 s, then 3 s (the 4 s cap less a tick) between attempts: about 6 attempts in 16 s, not 16.
    assert!((4..=7).contains(&failures), "{metric_name} = {failures}");
    if cause != "connect" {
        assert_eq!(server.requests() - before, failures as usize);
    }
    eprintln!("{metric_name} = {failures}, requests = {}", server.requests() - before);
    let needle = format!("failed ({cause})");
    assert_eq!(count_logs(&p, &needle), 1, "logged once per change of cause: {:#?}", p.logs());
    for w in 0..2 {
        assert_eq!(state(&mut p, w), (401, "identity_missing".into(), Some(5)), "worker {w} keeps revision 5");
        assert!(allowed(read(&mut p, w)), "worker {w}");
        assert!(denied_by_rule(write(&mut p, w)), "worker {w}: never allow what the last good bundle denies");
    }
    assert_eq!(metric(&p, "warden.bundle.revision"), 5);

    // The fault ends: a good revision arrives within the backoff (4 s) plus a tick.
    server.set_down(false);
    server.set(Reply::bundle(&sign(&bundle(6))));
    step_waiting(&mut p, 6, Duration::from_secs(3));
    assert_eq!(revisions(&mut p), vec![Some(6), Some(6)]);
    assert!(p.logged("works again (after `"), "{:#?}", p.logs());
    assert!(denied_by_rule(write(&mut p, 0)));
    assert_eq!(metric(&p, &metric_name), failures, "no failure after recovery");
}

#[test]
fn fault_endpoint_down() {
    fault("connect", |s| s.set_down(true), Duration::from_secs(3));
}

#[test]
fn fault_http_500() {
    fault("http_status", |s| s.set(Reply::Status(500, "internal error".into())), Duration::from_secs(3));
}

#[test]
fn fault_slow_beyond_the_timeout() {
    // The server answers after 2.5 s of real time; the host clock passes the 1 s timeout first (504).
    let good = sign(&bundle(6));
    fault(
        "timeout",
        |s| s.set(Reply::Slow(Duration::from_millis(2500), Box::new(Reply::bundle(&good)))),
        Duration::from_millis(50),
    );
}

#[test]
fn fault_garbage_body() {
    fault("malformed", |s| s.set(Reply::body("<html><body>Welcome to nginx!</body></html>")), Duration::from_secs(3));
}

#[test]
fn fault_truncated_body() {
    let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/jose\r\ncontent-length: 5000\r\n\r\neyJhbGciOi".to_vec();
    fault("reset", |s| s.set(Reply::Raw(raw)), Duration::from_secs(3));
}

#[test]
fn fault_unsigned_json() {
    fault("signature", |s| s.set(Reply::body(&bundle(6).to_string())), Duration::from_secs(3));
}

#[test]
fn fault_signed_by_an_unknown_key() {
    let stranger =
        warden_core::envelope::SigningKey::generate(warden_core::envelope::Algorithm::EdDSA, "stranger").unwrap();
    let signed = warden_core::envelope::sign(bundle(6).to_string().as_bytes(), &stranger);
    fault("unknown_key", |s| s.set(Reply::bundle(&signed)), Duration::from_secs(3));
}

#[test]
fn fault_forged_signature_with_the_pinned_kid() {
    let impostor =
        warden_core::envelope::SigningKey::generate(warden_core::envelope::Algorithm::EdDSA, AUTHORITY_KID).unwrap();
    let signed = warden_core::envelope::sign(bundle(6).to_string().as_bytes(), &impostor);
    fault("signature", |s| s.set(Reply::bundle(&signed)), Duration::from_secs(3));
}

#[test]
fn fault_older_revision() {
    fault("rollback", |s| s.set(Reply::bundle(&sign(&bundle(4)))), Duration::from_secs(3));
}

#[test]
fn fault_same_revision_different_contents() {
    let mut other = bundle(5);
    other["rules"] = json!([]);
    fault("rollback", |s| s.set(Reply::bundle(&sign(&other))), Duration::from_secs(3));
}

#[test]
fn fault_expired_bundle() {
    let mut expired = bundle(6);
    expired["issued_at"] = json!(warden_core::time::format_rfc3339(t0() - 7200));
    expired["expires_at"] = json!(warden_core::time::format_rfc3339(t0() - 60));
    fault("expired", |s| s.set(Reply::bundle(&sign(&expired))), Duration::from_secs(3));
}

#[test]
fn fault_bundle_that_verifies_but_fails_validation() {
    let mut invalid = bundle(6);
    invalid["rules"][1]["tools"] = json!(["crm.contacts.delete"]);
    fault("invalid", |s| s.set(Reply::bundle(&sign(&invalid))), Duration::from_secs(3));
}

#[test]
fn a_changing_cause_is_logged_again() {
    let server = ControlServer::start(Reply::bundle(&sign(&bundle(5))));
    let mut p = start(&config(FAULT_CONFIG(), None), 2, server.addr);
    step1(&mut p, 2);
    server.set(Reply::Status(500, "oops".into()));
    step1(&mut p, 10);
    server.set(Reply::bundle(&sign(&bundle(3))));
    step1(&mut p, 10);
    server.set(Reply::Status(502, "bad gateway".into()));
    step1(&mut p, 10);
    assert_eq!(count_logs(&p, "failed (http_status)"), 2);
    assert_eq!(count_logs(&p, "failed (rollback)"), 1);
    assert!(p
        .logs()
        .iter()
        .any(|l| l.message.contains("failed (rollback)") && l.level == warden_host::LogLevel::Error));
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);
}

// ---------------------------------------------------------------------------------------------------------------
// Staleness

#[test]
fn stale_bundle_fails_closed_until_a_fresh_one_arrives() {
    let mut short = bundle(5);
    short["expires_at"] = json!(warden_core::time::format_rfc3339(t0() + 20));
    let server = ControlServer::start(Reply::bundle(&sign(&short)));
    let mut cfg = config(json!({"poll_seconds": 3, "jitter_percent": 0}), None);
    cfg["bundle_grace_seconds"] = json!(5);
    let mut p = start(&cfg, 2, server.addr);
    step1(&mut p, 2);
    assert!(allowed(read(&mut p, 0)));
    // The endpoint keeps serving the same (now expired) revision: 304s, no newer bundle.
    step1(&mut p, 23); // t0 + 25 = expires_at + grace: still enforced
    assert!(allowed(read(&mut p, 1)));
    step1(&mut p, 1);
    for w in 0..2 {
        assert_eq!(state(&mut p, w), (503, "bundle_expired".into(), Some(5)));
        assert_eq!(read(&mut p, w), (503, "bundle_expired".into()));
        assert_eq!(write(&mut p, w), (503, "bundle_expired".into()));
    }
    server.set(Reply::bundle(&sign(&bundle(6))));
    step1(&mut p, 4);
    for w in 0..2 {
        assert!(allowed(read(&mut p, w)), "worker {w}");
        assert!(denied_by_rule(write(&mut p, w)));
    }
}
