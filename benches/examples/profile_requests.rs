//! Sends one kind of request through `warden.wasm` in the host many times, for profilers (criterion's own loop
//! is hard to isolate under valgrind) and for a quick mean without criterion.
//!
//! ```sh
//! cargo build -p warden-benches --release --example profile_requests
//! # mean wall time per request (after a warm-up):
//! target/release/examples/profile_requests headers_allow 20000
//! # instructions per request, only inside `Worker::send` (start-up is not counted):
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*Worker*send*' \
//!     target/release/examples/profile_requests headers_allow 2000
//! ```
//!
//! Kinds: `headers_allow`, `deny`, `unauthenticated` (the requests of `benches/wasm.rs`), `fresh_token`
//! (`headers_allow` with an EdDSA token never seen before, all minted before the timing), `mcp` (the 2 KB
//! `tools/call` of `benches/mcp.rs`), `floor` (`headers_allow` through the host's do-nothing test filter). One VM.
//! `warden.wasm` is found as the benches find it (`WARDEN_WASM`, else the target directory).

use std::time::{Duration, Instant, UNIX_EPOCH};

use warden_benches::host::{config, floor_module, request, send, start, status_reason, upstream};
use warden_benches::tokens::{claims, Alg, Keys};
use warden_benches::{generate_json, mcp, scenarios, NOW};
use warden_host::{Clock, HttpRequest, Plugin, PluginConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map(String::as_str).unwrap_or("headers_allow");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let keys = Keys::get();
    let ed = keys.issuer(Alg::EdDSA);
    let pick = |name: &str| match scenarios().into_iter().find(|s| s.name == name) {
        Some(s) => s,
        None => panic!("no scenario {name}"),
    };
    let allow = pick("allow_late_rule");
    let deny = pick("deny_no_match");
    let allow_token = ed.mint(&claims(Alg::EdDSA, &allow.agent_id));
    let deny_token = ed.mint(&claims(Alg::EdDSA, &deny.agent_id));
    let mcp_token = ed.mint(&claims(Alg::EdDSA, mcp::AGENT));
    let mcp_body = mcp::refund_call(1, 40);

    let (mut plugin, make, want): (Plugin, Box<dyn Fn() -> HttpRequest>, u16) = match kind {
        "fresh_token" => {
            let plugin = start(&config(&keys.sign_bundle(&generate_json(mcp::RULES))), 1);
            let tokens: Vec<String> =
                (0..n + n.min(200) + 1).map(|_| ed.mint(&claims(Alg::EdDSA, &allow.agent_id))).collect();
            let next = std::cell::Cell::new(0);
            let make = move || {
                let i = next.replace(next.get() + 1);
                request(allow.method, &allow.host, &allow.path, Some(&tokens[i % tokens.len()]))
            };
            (plugin, Box::new(make), 200)
        }
        "headers_allow" | "deny" | "unauthenticated" => {
            let plugin = start(&config(&keys.sign_bundle(&generate_json(mcp::RULES))), 1);
            match kind {
                "headers_allow" => {
                    (plugin, Box::new(move || request(allow.method, &allow.host, &allow.path, Some(&allow_token))), 200)
                }
                "deny" => {
                    (plugin, Box::new(move || request(deny.method, &deny.host, &deny.path, Some(&deny_token))), 403)
                }
                _ => (plugin, Box::new(move || request(allow.method, &allow.host, &allow.path, None)), 401),
            }
        }
        "mcp" => {
            let plugin = start(&config(&keys.sign_bundle(&mcp::bundle())), 1);
            (plugin, Box::new(move || mcp::post(&mcp_token, &mcp_body)), 200)
        }
        "floor" => {
            let Some(floor) = floor_module() else { panic!("test_filter.wasm is not built") };
            let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(NOW as u64));
            let plugin = match Plugin::start(&floor, PluginConfig::new("{}").clock(clock)) {
                Ok(p) => p,
                Err(e) => panic!("test_filter.wasm did not start: {e}"),
            };
            (plugin, Box::new(move || request(allow.method, &allow.host, &allow.path, Some(&allow_token))), 200)
        }
        other => panic!("unknown kind {other}: headers_allow, deny, unauthenticated, fresh_token, mcp, floor"),
    };
    let mut up = upstream();
    let x = send(&mut plugin, make(), &mut up);
    assert_eq!(status_reason(&x).0, Some(want), "{kind}: {}", x.body_str());
    for _ in 0..n.min(200) {
        send(&mut plugin, make(), &mut up);
    }
    let t = Instant::now();
    for _ in 0..n {
        send(&mut plugin, make(), &mut up);
    }
    let per = t.elapsed() / n as u32;
    println!("{kind}: {n} requests, mean {:.2} µs per request", per.as_nanos() as f64 / 1000.0);
}
