//! Deployment through real Envoy: the shipped `envoy/envoy.yaml` itself (only its addresses and file paths
//! substituted) fetches the example bundle and serves a request; a plugin configuration error makes Envoy refuse
//! to start with the field named in its log; a VM that traps under `failure_policy: FAIL_CLOSED` answers 503 and
//! nothing reaches the upstream, for that request and the ones after it.

use std::time::{Duration, Instant};

use serde_json::json;
use warden_core::envelope::{self, SigningKey};
use warden_host::envoy::{Envoy, EnvoyError, EnvoyOptions, FailurePolicy};
use warden_host::upstream::{RecordingServer, Reply};
use warden_host::HttpRequest;

use crate::support::live::{self, ControlServer};
use crate::support::{repo, test_filter_wasm, warden_wasm};

/// policies/examples/support-agent.json signed with the TEST authority key.
fn example_bundle_jws() -> String {
    let examples = repo().join("policies/examples");
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(examples.join("keys/TEST-ONLY-authority.jwk.json")).unwrap()).unwrap();
    let key = SigningKey::from_jwk(&jwk).expect("TEST authority key");
    envelope::sign(&std::fs::read(examples.join("support-agent.json")).unwrap(), &key)
}

/// Replaces `from` (which must occur exactly once) by `to`.
fn substitute(text: &mut String, from: &str, to: &str) {
    assert_eq!(text.matches(from).count(), 1, "envoy/envoy.yaml should contain `{from}` once");
    *text = text.replace(from, to);
}

#[test]
fn the_shipped_envoy_yaml_runs_and_enforces_the_example_bundle() {
    let control = ControlServer::start(live::Reply::bundle(&example_bundle_jws()));
    let tools = RecordingServer::canned(Reply::ok("from the tool")).unwrap();
    let mut yaml = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    // Only addresses and paths: where warden.wasm is, loopback ports, the two clusters' endpoints.
    substitute(&mut yaml, "/etc/envoy/warden.wasm", &warden_wasm().display().to_string());
    substitute(&mut yaml, "{ address: 127.0.0.1, port_value: 9901 }", "{ address: 127.0.0.1, port_value: 0 }");
    substitute(&mut yaml, "{ address: 0.0.0.0, port_value: 10000 }", "{ address: 127.0.0.1, port_value: 0 }");
    substitute(
        &mut yaml,
        "{ address: warden-control, port_value: 8181 }",
        &format!("{{ address: 127.0.0.1, port_value: {} }}", control.addr.port()),
    );
    substitute(
        &mut yaml,
        "{ address: tools, port_value: 8080 }",
        &format!("{{ address: 127.0.0.1, port_value: {} }}", tools.addr.port()),
    );
    let envoy = Envoy::start_bootstrap(&yaml, "yaml", 2, None).unwrap_or_else(|e| panic!("{e}"));

    // Within a poll period the bundle is active on every worker: requests without a token get 401 from revision 41.
    let req = HttpRequest::new("GET", "/api/v2/contacts/42").authority("crm.acme.example");
    let end = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = envoy.send(&req).unwrap();
        if r.status != 503 || Instant::now() > end {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(r.json()["reason"], "identity_missing");
    assert_eq!(r.json()["revision"], 41);
    assert!(tools.received().is_empty());
    let seen = control.seen();
    assert_eq!(seen[0].path, "/bundles/bundle.jws");
    assert_eq!(seen[0].authority.as_deref(), Some("warden-control:8181"));
    assert_eq!(envoy.warden_stat("warden.bundle.revision"), 41);
    // The access log (stdout in the shipped file) is the decision record.
    let end = Instant::now() + Duration::from_secs(10);
    while !envoy.stdout().contains("\"identity_missing\"") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = envoy.stdout().lines().rev().find(|l| l.contains("identity_missing")).map(str::to_string);
    let record: serde_json::Value = serde_json::from_str(&line.expect("a decision record on stdout")).unwrap();
    assert_eq!(record["type"], "warden.decision");
    assert_eq!(record["path"], "/api/v2/contacts/42");
}

#[test]
fn a_plugin_configuration_error_refuses_the_listener_with_the_field_named() {
    let tools = RecordingServer::canned(Reply::ok("x")).unwrap();
    let mut config = live::config(json!({"poll_secs": 10}), None);
    config["environment"] = json!("prod");
    let opts = EnvoyOptions::new(warden_wasm(), config.to_string(), tools.addr).cluster(live::CLUSTER, tools.addr);
    match Envoy::start(&opts) {
        Err(e @ EnvoyError::Exited { .. }) => {
            let log = e.log();
            let line = log
                .lines()
                .find(|l| l.contains("warden: plugin configuration:"))
                .unwrap_or_else(|| panic!("no refusal line in Envoy's log:\n{log}"));
            assert!(line.contains("unknown field `poll_secs`"), "{line}");
            assert!(line.contains("control"), "the line names where: {line}");
            assert!(log.contains("Unable to create Wasm plugin warden"), "{log}");
        }
        Err(e) => panic!("Envoy should exit refusing the configuration, got {e}"),
        Ok(_) => panic!("Envoy started with an invalid plugin configuration"),
    }
}

#[test]
fn a_vm_that_traps_fails_closed() {
    let tools = RecordingServer::canned(Reply::ok("from the tool")).unwrap();
    let opts = EnvoyOptions::new(test_filter_wasm(), "{}", tools.addr).failure_policy(FailurePolicy::FailClosed);
    let envoy = Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    let ok = HttpRequest::new("GET", "/fine").authority("tools.example");
    assert_eq!(envoy.send(&ok).unwrap().status, 200, "before the trap");
    let trap = ok.clone().header("x-ops", &json!({"request_headers": [{"op": "panic", "msg": "boom"}]}).to_string());
    let r = envoy.send(&trap).unwrap();
    assert_eq!(r.status, 503, "{}", r.body_str());
    // The VM (one worker) is failed: every later request is refused, none reaches the upstream.
    for _ in 0..3 {
        assert_eq!(envoy.send(&ok).unwrap().status, 503);
    }
    let received = tools.received();
    assert_eq!(received.len(), 1, "only the request before the trap reached the upstream: {received:#?}");
    assert!(envoy.wait_logged("boom", Duration::from_secs(2)), "the panic message is logged");
}
