//! `warden.wasm` in the host (2 worker VMs, manual clock) polling `warden serve` running as a real process on
//! loopback, with bundles signed by `warden sign` and published through serve's authenticated upload (HTTP `PUT`
//! with the upload token, as a policy owner does): the first bundle activates; an uploaded revision reaches every VM
//! within one poll period measured on the host clock; `304 Not Modified` while nothing changes; a revocation added
//! in a new revision takes effect; an upload of an older revision is refused (409) and the gateway keeps deciding
//! with the current one.
//!
//! Needs `warden.wasm` (`cargo build -p warden-filter --target wasm32-wasip1 --profile wasm`) and the `warden` CLI
//! (`cargo build -p warden-cli`; `cargo test --workspace --all-targets` builds it). Run:
//! `cargo test -p warden-host --test it e2e_control::`.

use crate::support::live::*;
use serde_json::json;

const NAME: &str = "bundle.jws";

/// serve with revision 5 uploaded, and the plugin (2 workers) polling it every `period` seconds without jitter.
fn setup(period: u64) -> (Owner, Serve, warden_host::Plugin) {
    let owner = Owner::new();
    let serve = owner.serve();
    let (status, body, _) = serve.upload(NAME, &owner.sign_with_cli(&bundle(5)), UPLOAD_TOKEN);
    assert_eq!(status, 201, "first upload: {body}\n{}", serve.stderr());
    let p = start(&config(json!({"poll_seconds": period, "jitter_percent": 0}), None), 2, serve.addr);
    (owner, serve, p)
}

#[test]
fn first_bundle_activates_then_304s_while_nothing_changes() {
    let (_owner, serve, mut p) = setup(5);
    // Before the first fetch (the first tick, 1 s after start): fail closed.
    for w in 0..2 {
        assert_eq!(state(&mut p, w), (503, "no_active_bundle".into(), None));
    }
    step(&mut p, 2); // one VM fetches on its first tick, the other adopts the bundle from shared data
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)], "{:#?}", p.logs());
    for w in 0..2 {
        assert!(allowed(&read(&mut p, w)), "worker {w}");
        assert!(denied_by_rule(&write(&mut p, w)), "worker {w}");
    }
    assert_eq!(metric(&p, "warden.bundle.fetch.success"), 1, "one fetch for the fleet");
    assert_eq!(metric(&p, "warden.bundle.activations"), 2, "one activation per worker VM");
    assert_eq!(metric(&p, "warden.bundle.revision"), 5);
    assert!(p.logged("warden: activated bundle revision 5"));

    // Nothing changes: every further poll is a 304 (serve's strong ETag, sent back as If-None-Match).
    step(&mut p, 20);
    let not_modified = metric(&p, "warden.bundle.fetch.not_modified");
    assert!((3..=5).contains(&not_modified), "{not_modified} 304s in 20 s at a 5 s period");
    assert_eq!(fetches(&p), 1 + not_modified, "only 200 and 304, no failure");
    assert_eq!(metric(&p, "warden.bundle.fetch.success"), 1);
    assert_eq!(metric(&p, "warden.bundle.activations"), 2);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);

    // What the filter relies on, checked on the wire: serve's ETag and its 304.
    let r = serve.get(CONTROL_PATH, None);
    assert_eq!(r.status(), Some(200));
    let etag = header(&r, "etag").expect("etag");
    assert!(etag.starts_with("\"sha256-"), "{etag}");
    assert_eq!(serve.get(CONTROL_PATH, Some(&etag)).status(), Some(304));
}

#[test]
fn an_uploaded_revision_reaches_every_vm_within_one_poll_period() {
    const PERIOD: i64 = 10;
    let (owner, serve, mut p) = setup(PERIOD as u64);
    step(&mut p, 2);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);

    for revision in 6..=8u64 {
        let signed = owner.sign_with_cli(&bundle(revision));
        // The worst case: the upload lands just after a fetch, so the next one is a whole period away.
        let before = fetches(&p);
        while fetches(&p) == before {
            step(&mut p, 1);
        }
        let (status, body, etag) = serve.upload(NAME, &signed, UPLOAD_TOKEN);
        assert_eq!(status, 200, "upload of revision {revision}: {body}");
        assert!(etag.is_some_and(|e| e.starts_with("\"sha256-")));
        let published = now(&p);
        loop {
            step(&mut p, 1);
            let elapsed = now(&p) - published;
            if revisions(&mut p) == vec![Some(revision); 2] {
                eprintln!("revision {revision} enforced by both workers {elapsed} s (host clock) after the upload");
                assert!(elapsed <= PERIOD, "revision {revision} took {elapsed} s");
                break;
            }
            assert!(elapsed <= PERIOD, "revision {revision} not everywhere after {elapsed} s: {:?}", revisions(&mut p));
        }
        for w in 0..2 {
            assert!(allowed(&read(&mut p, w)), "worker {w}");
            assert!(denied_by_rule(&write(&mut p, w)), "worker {w}");
        }
    }
    assert_eq!(metric(&p, "warden.bundle.revision"), 8);
    assert_eq!(metric(&p, "warden.bundle.activations"), 4 * 2);
    assert_eq!(failures(&p), 0);
    assert!(metric(&p, "warden.bundle.fetch.not_modified") >= 3, "304s between the uploads");
    // serve kept the history of what it replaced.
    for old in 5..=7 {
        assert!(owner.bundles().join(format!("history/bundle.{old}.jws")).is_file(), "history of revision {old}");
    }
    assert_eq!(serve.health()["bundles"]["bundle"]["revision"], json!(8), "{}", serve.health());
}

#[test]
fn a_revocation_uploaded_in_a_new_revision_takes_effect() {
    let (owner, serve, mut p) = setup(3);
    step(&mut p, 2);
    for w in 0..2 {
        assert!(allowed(&read(&mut p, w)), "worker {w}");
    }
    let (status, body, _) = serve.upload(NAME, &owner.sign_with_cli(&revoking_bundle(6)), UPLOAD_TOKEN);
    assert_eq!(status, 200, "{body}");
    step(&mut p, 3);
    assert_eq!(revisions(&mut p), vec![Some(6), Some(6)]);
    for w in 0..2 {
        assert_eq!(read(&mut p, w), (401, "revoked_agent".into()), "worker {w}");
        assert_eq!(write(&mut p, w).0, 401, "worker {w}");
    }
    // The revocation stays in force while serve answers 304.
    let before = metric(&p, "warden.bundle.fetch.not_modified");
    step(&mut p, 7);
    assert!(metric(&p, "warden.bundle.fetch.not_modified") > before);
    assert_eq!(read(&mut p, 0), (401, "revoked_agent".into()));
}

#[test]
fn an_older_revision_is_refused_by_serve_and_the_gateway_keeps_the_current_one() {
    let (owner, serve, mut p) = setup(3);
    step(&mut p, 2);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);

    // An older revision that would allow the write: refused, nothing replaced.
    let (status, body, _) = serve.upload(NAME, &owner.sign_with_cli(&permissive_at(4)), UPLOAD_TOKEN);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "rollback", "{body}");
    // The current revision with other contents: refused as well.
    let (status, body, _) = serve.upload(NAME, &sign(&permissive_at(5)), UPLOAD_TOKEN);
    assert_eq!((status, body["error"].as_str()), (409, Some("rollback")), "{body}");
    // Not the policy owner: refused before anything is looked at.
    let (status, _, _) = serve.upload(NAME, &sign(&permissive_at(9)), "not-the-upload-token-at-all");
    assert_eq!(status, 403);
    // Unsigned JSON: refused.
    let (status, body, _) = serve.upload(NAME, &permissive_at(9).to_string(), UPLOAD_TOKEN);
    assert_eq!((status, body["error"].as_str()), (422, Some("not_verified")), "{body}");
    assert!(!owner.bundles().join("history").exists(), "nothing was replaced");

    // The gateway keeps deciding with revision 5 (304s: nothing changed on the endpoint).
    let before = metric(&p, "warden.bundle.fetch.not_modified");
    step(&mut p, 9);
    assert!(metric(&p, "warden.bundle.fetch.not_modified") >= before + 2);
    assert_eq!(failures(&p), 0);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)]);
    for w in 0..2 {
        assert!(allowed(&read(&mut p, w)), "worker {w}");
        assert!(denied_by_rule(&write(&mut p, w)), "worker {w}: never allow what the current bundle denies");
    }
    assert_eq!(serve.health()["bundles"]["bundle"]["revision"], json!(5), "{}", serve.health());

    // The owner publishes a proper revision 6: accepted and enforced.
    let (status, body, _) = serve.upload(NAME, &owner.sign_with_cli(&bundle(6)), UPLOAD_TOKEN);
    assert_eq!(status, 200, "{body}");
    step(&mut p, 3);
    assert_eq!(revisions(&mut p), vec![Some(6), Some(6)]);
    assert!(denied_by_rule(&write(&mut p, 1)));
}

/// A bundle at `revision` that allows support agents to update contacts too.
fn permissive_at(revision: u64) -> serde_json::Value {
    let mut b = bundle(revision);
    b["rules"] = json!([{"id": "support-all", "effect": "allow",
        "agents": ["spiffe://acme.example/agents/support/*"], "tools": ["crm.contacts.read", "crm.contacts.update"]}]);
    b
}
