//! One MCP `tools/call` with a 2 KB JSON-RPC body through `warden.wasm` in the host (`warden-host`, wasmtime), on a
//! plugin of 1 and of 4 worker VMs (requests sent round robin from one thread).
//!
//! The bundle is the 10 000-rule bundle of the `decide` and `wasm` benches plus one MCP server
//! (`mcp.bench.example/mcp`), a tool `mcp.refund` bound to its `refund` tool, and two rules with argument
//! conditions: `refund-small` allows `0 < amount <= 100` in `EUR` / `USD`, `refund-large` asks for a step-up above 100.
//!
//! - `wasm/mcp_tools_call_2kb/<vms>`: `POST /mcp`, `content-type: application/json`, a `tools/call` of `refund` with
//!   `amount` 40 and a `note` padding the body to exactly 2 048 bytes, the same EdDSA token every time (the token
//!   cache hit path), the default header mode (`allow_on_headers_stop_iteration` false: the headers continue, the
//!   body is buffered and the call decided at its end), through to the canned upstream and back.
//!
//! Before anything is timed, on every worker: the call is allowed by `refund-small` and the upstream receives the
//! body byte for byte; the same call with `amount` 250 is refused (403, JSON-RPC error `-31002`,
//! `step_up_required` by `refund-large`) and no byte of its body reaches the upstream. `cargo test -p warden-benches
//! --bench mcp` runs these checks (and each bench once).
//!
//! As in `benches/wasm.rs`, the figure includes the host's own work per request (stream set-up, header maps, the
//! body copied into the VM, the upstream, the response path, `on_log`/`on_done`/`on_delete`, dropping captured
//! logs). Compare with `wasm/headers_allow/<vms>` for the cost of the body.
//!
//! Run: `cargo bench -p warden-benches --bench mcp`. Needs `warden.wasm` (see `warden_benches::host::BUILD`).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};
use warden_benches::host::{config, send, start, upstream};
use warden_benches::mcp::{bundle, post, refund_call, AGENT, BODY_BYTES};
use warden_benches::tokens::{claims, Alg, Keys};
use warden_host::{Exchange, Plugin, RecordingUpstream, UpstreamResponse};

fn recording() -> RecordingUpstream {
    RecordingUpstream::new(
        UpstreamResponse::ok(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#)
            .header("content-type", "application/json"),
    )
}

/// The filter's decision record of this exchange (the filter-state copy).
fn record(x: &Exchange) -> Value {
    match x.filter_state_str("wasm.warden_decision").map(|s| serde_json::from_str::<Value>(&s)) {
        Some(Ok(v)) => v,
        other => panic!("no decision record in the filter state ({other:?}); logs {:#?}", x.logs),
    }
}

/// The allowed call goes through whole: 200 from the upstream, which got exactly this body.
fn check_allowed(plugin: &mut Plugin, token: &str, body: &[u8]) {
    let mut up = recording();
    let x = plugin.send_round_robin(post(token, body), &mut up);
    plugin.take_logs();
    assert_eq!(x.status, Some(200), "allowed call on worker {}: {}; logs {:#?}", x.worker, x.body_str(), x.logs);
    assert!(!x.is_local_reply() && !x.trapped && x.upstream_called, "allowed call on worker {}", x.worker);
    assert_eq!(up.requests.len(), 1, "the upstream got one request");
    assert!(up.requests[0].complete, "the upstream got the whole request");
    assert_eq!(up.requests[0].body, body, "the upstream got the body as sent");
    assert_eq!(up.requests[0].header("x-warden-agent"), Some(AGENT));
    let r = record(&x);
    assert_eq!(
        (&r["decision"], &r["rule"], &r["tool"]),
        (&json!("allow"), &json!("refund-small"), &json!("mcp.refund"))
    );
    assert_eq!((&r["mcp"]["method"], &r["mcp"]["name"]), (&json!("tools/call"), &json!("refund")), "record {r}");
}

/// The call over the limit is refused with a JSON-RPC error, and no byte of its body reaches the upstream.
fn check_refused(plugin: &mut Plugin, token: &str, body: &[u8]) {
    let mut up = recording();
    let x = plugin.send_round_robin(post(token, body), &mut up);
    plugin.take_logs();
    assert_eq!(x.status, Some(403), "refused call on worker {}: {}; logs {:#?}", x.worker, x.body_str(), x.logs);
    assert!(x.is_local_reply() && !x.trapped && !x.upstream_called, "refused call on worker {}", x.worker);
    assert!(up.requests.is_empty(), "the upstream must not answer a refused call");
    if let Some(f) = &x.forwarded {
        assert!(f.body.is_empty() && !f.complete, "no body byte may reach the upstream: {} bytes did", f.body.len());
    }
    let v: Value =
        serde_json::from_slice(&x.body).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", x.body_str()));
    assert_eq!((&v["id"], &v["error"]["code"]), (&json!(2), &json!(-31002)), "reply {v}");
    assert_eq!(
        (&v["error"]["data"]["reason"], &v["error"]["data"]["rule"]),
        (&json!("step_up_required"), &json!("refund-large"))
    );
    assert_eq!(record(&x)["reason"], "step_up_required");
}

fn bench_mcp(c: &mut Criterion) {
    let keys = Keys::get();
    let cfg = config(&keys.sign_bundle(&bundle()));
    let token = keys.issuer(Alg::EdDSA).mint(&claims(Alg::EdDSA, AGENT));
    let allowed = refund_call(1, 40);
    let refused = refund_call(2, 250);
    assert_eq!(refused.len(), BODY_BYTES);

    let mut group = c.benchmark_group("wasm");
    for vms in [1, 4] {
        let mut plugin = start(&cfg, vms);
        for _ in 0..vms {
            check_allowed(&mut plugin, &token, &allowed);
            check_refused(&mut plugin, &token, &refused);
        }
        let mut up = upstream();
        group.bench_function(BenchmarkId::new("mcp_tools_call_2kb", vms), |b| {
            b.iter(|| send(&mut plugin, post(&token, &allowed), &mut up))
        });
        check_allowed(&mut plugin, &token, &allowed);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_mcp
}
criterion_main!(benches);
