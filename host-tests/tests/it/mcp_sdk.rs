//! A real MCP client and server — the official MCP Python SDK (`mcp` on PyPI; `host-tests/mcp_sdk/`) — with
//! `warden-gateway` (the real `warden.wasm` in the host) between them. The client initializes, lists tools (and sees
//! only those it may call), makes allowed calls, and gets the denied, step-up and invalid-argument calls as JSON-RPC
//! errors carrying Warden's decision data.
//!
//! Needs the Python environment of `host-tests/tests/requirements.txt` (`scripts/python-env.sh` makes `.venv`;
//! `WARDEN_TEST_PYTHON` or `WARDEN_PYTHON` names another interpreter) and `warden.wasm` (see `support::wasm_path`).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_core::envelope::{self, SigningKey};

use crate::support::{python, repo as root, GATEWAY};

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn wait_for(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Children this test started; killed (by handle) when it ends, pass or fail.
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Which proxy runs warden.wasm between the SDK's client and server.
enum Proxy {
    DevGateway,
    Envoy,
}

fn the_official_python_sdk_through(proxy: Proxy) {
    let py = python();
    let keys = root().join("policies/examples/keys");
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp_sdk");
    let work = crate::support::TempDir::new("mcp-sdk");

    // The bundle (bundle.py), signed with the TEST-ONLY authority key, inline in the plugin configuration.
    let out = Command::new(&py).arg(sdk.join("bundle.py")).arg(&keys).output().unwrap_or_else(|e| {
        panic!("cannot run {} ({e}): run scripts/python-env.sh or set WARDEN_TEST_PYTHON", py.display())
    });
    assert!(out.status.success(), "bundle.py: {}", String::from_utf8_lossy(&out.stderr));
    let read_json = |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let authority = SigningKey::from_jwk(&read_json(keys.join("TEST-ONLY-authority.jwk.json"))).unwrap();
    let config = json!({
        "environment": "prod",
        "authority": "policy.acme.example",
        "bundle_keys": read_json(keys.join("TEST-ONLY-authority.jwks.json")),
        "inline_bundle": envelope::sign(&out.stdout, &authority),
    });
    let config_path = work.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let server_port = free_port();
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new(&py)
            .arg(sdk.join("server.py"))
            .arg(server_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(server_port);
    let server_addr = std::net::SocketAddr::from(([127, 0, 0, 1], server_port));
    let mut _envoy = None;
    let proxy_url = match proxy {
        Proxy::DevGateway => {
            let gateway_port = free_port();
            children.0.push(
                Command::new(GATEWAY)
                    .args(["serve", "--config"])
                    .arg(&config_path)
                    .args(["--upstream", &format!("127.0.0.1:{server_port}")])
                    .args(["--listen", &format!("127.0.0.1:{gateway_port}")])
                    .args(["--workers", "1", "--wasm"])
                    .arg(crate::support::warden_wasm())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_for(gateway_port);
            format!("http://127.0.0.1:{gateway_port}/mcp")
        }
        Proxy::Envoy => {
            // The SDK's Streamable HTTP answers in SSE; the route timeout stays Envoy's default of 15 s here.
            let opts =
                warden_host::envoy::EnvoyOptions::new(crate::support::warden_wasm(), config.to_string(), server_addr)
                    .concurrency(2);
            let envoy = warden_host::envoy::Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}"));
            let url = format!("http://{}/mcp", envoy.listener());
            _envoy = Some(envoy);
            url
        }
    };

    let out = Command::new(&py)
        .arg(sdk.join("client.py"))
        .arg(proxy_url)
        .arg(keys.join("TEST-ONLY-issuer-acme-workload.jwk.json"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    drop(children);
    assert!(out.status.success(), "client.py:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "ok   tools/list is filtered",
        "ok   allowed call",
        "ok   refund under the limit",
        "ok   wipe {} refused as a JSON-RPC error",
        "ok   refund {'order': 'o-1', 'amount': 250} refused as a JSON-RPC error",
        "ok   refund {'order': 'o-1'} refused as a JSON-RPC error",
        "ok   missing token refused as a JSON-RPC error",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
}

#[test]
fn the_official_python_sdk_through_warden_gateway() {
    the_official_python_sdk_through(Proxy::DevGateway);
}

#[test]
fn the_official_python_sdk_through_envoy() {
    the_official_python_sdk_through(Proxy::Envoy);
}
