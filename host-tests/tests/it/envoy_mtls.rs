//! Sender binding with real mTLS through Envoy: a TLS listener that validates client certificates against a CA
//! made in the test (`host-tests/tests/tls/tls.py`, the `cryptography` package; SPIFFE URI SANs), an issuer with
//! `require_sender_binding`. The bot's own certificate passes; another workload's, none, and one without a URI SAN
//! are refused with the bundle's reasons; with `require_client_certificate` Envoy itself refuses a client without
//! a certificate at the handshake.

use std::process::Command;

use serde_json::{json, Value};
use warden_host::envoy::{DownstreamTls, Envoy, EnvoyOptions};
use warden_host::upstream::{RecordingServer, Reply};

use crate::support::envoy::now;
use crate::support::filter::{bundle_at, claims, config, sign, token, SUPPORT_BOT};
use crate::support::{python, repo, warden_wasm, TempDir};

fn tls_py() -> std::path::PathBuf {
    repo().join("host-tests/tests/tls/tls.py")
}

/// One HTTPS request with Python's `ssl`: `{"status", "body"}` or `{"error"}`.
fn get(envoy: &Envoy, certs: &TempDir, client: Option<&str>, token: &str) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(tls_py()).arg("get").arg(envoy.listener().to_string()).arg("/api/v2/contacts/42").arg(certs.join("ca.pem"));
    if let Some(c) = client {
        cmd.arg(certs.join(&format!("{c}.pem"))).arg(certs.join(&format!("{c}.key")));
    }
    cmd.arg(format!("authorization: Bearer {token}"));
    let out = cmd.output().expect("run tls.py");
    assert!(out.status.success(), "tls.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn start(certs: &TempDir, tools: &RecordingServer, require: bool) -> Envoy {
    let mut b = bundle_at(now());
    b["issuers"][0]["require_sender_binding"] = json!(true);
    let tls = DownstreamTls {
        certificate_chain: certs.join("server.pem"),
        private_key: certs.join("server.key"),
        client_ca: certs.join("ca.pem"),
        require_client_certificate: require,
    };
    let opts = EnvoyOptions::new(warden_wasm(), config(Some(&sign(&b))).to_string(), tools.addr).tls(tls);
    Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn only_the_bound_workload_passes() {
    let certs = TempDir::new("mtls");
    let out = Command::new(python()).arg(tls_py()).arg("certs").arg(certs.path()).output().expect("tls.py certs");
    assert!(out.status.success(), "tls.py certs: {}", String::from_utf8_lossy(&out.stderr));
    let tools = RecordingServer::canned(Reply::ok("from the tool")).unwrap();
    let envoy = start(&certs, &tools, false);
    let t = token(&claims(SUPPORT_BOT, now()));

    let ok = get(&envoy, &certs, Some("bot"), &t);
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["body"], "from the tool");
    let up = tools.received();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].header("x-warden-agent"), Some(SUPPORT_BOT));

    for (client, reason) in [
        (Some("other"), "token_sender_mismatch"),
        (None, "token_sender_not_mtls"),
        // The filter binds on the URI SAN alone: a certificate without one counts as no mTLS identity.
        (Some("nosan"), "token_sender_not_mtls"),
    ] {
        let r = get(&envoy, &certs, client, &t);
        assert_eq!(r["status"], 401, "{client:?}: {r}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("")).unwrap_or(Value::Null);
        assert_eq!(body["reason"], reason, "{client:?}: {r}");
    }
    assert_eq!(tools.received().len(), 1, "no refused request reached the upstream");

    // With require_client_certificate Envoy refuses a client without a certificate before any request.
    let strict = start(&certs, &tools, true);
    let r = get(&strict, &certs, None, &t);
    assert!(r.get("error").is_some(), "{r}");
    assert_eq!(get(&strict, &certs, Some("bot"), &t)["status"], 200);
}
