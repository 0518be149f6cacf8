//! Host-call accounting (issue 17 item 3): the imports the guest calls for one request of each wasm mode, counted
//! in `warden-host` ([`CompiledModule::counting`]) with the same module, plugin configuration and request as the
//! Envoy run (on the host's manual clock). The SDK and the filter make the same calls in Envoy: the counts are the
//! guest's, whichever host answers them; Envoy's V8 makes each one cost more than wasmtime does.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_benches::tokens::{claims_at, Keys};
use warden_benches::{host, mcp, NOW};
use warden_host::{CannedUpstream, Clock, CompiledModule, Plugin, PluginConfig, UpstreamResponse};

use crate::modes::{Chain, Mode, Route, Tokens};
use crate::run::warden_config;

/// The calls of one request: import name → count, and the guest callbacks the host made for it.
pub struct Count {
    pub mode: &'static str,
    pub calls: BTreeMap<String, u64>,
    pub callbacks: usize,
}

impl Count {
    pub fn json(&self) -> Value {
        json!({"calls": self.calls, "callbacks": self.callbacks, "total": self.calls.values().sum::<u64>()})
    }
}

/// Requests sent before the counted one (the first requests of a VM define metrics, fill caches).
const WARM: usize = 3;

/// Counts the calls of one request for every mode that runs a wasm module (the native and bare modes have none).
pub fn count(modes: &[Mode]) -> Vec<Count> {
    let keys = Keys::get();
    let signed = keys.sign_bundle(&mcp::bundle());
    let noop = warden_benches::target_dir().join("wasm32-wasip1/wasm/noop.wasm");
    modes
        .iter()
        .filter(|m| matches!(m.chain, Chain::Floor | Chain::Warden { .. }))
        .map(|mode| {
            let (module, config, hold) = match mode.chain {
                Chain::Warden { hold, log_decisions } => (host::module(), warden_config(&signed, log_decisions), hold),
                _ => (
                    CompiledModule::load_cached(&noop).unwrap_or_else(|e| panic!("{}: {e}", noop.display())),
                    String::new(),
                    false,
                ),
            };
            let module = module.counting().unwrap_or_else(|e| panic!("{}: counting layer: {e}", mode.id));
            let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(NOW as u64));
            let mut plugin = Plugin::start(
                &module,
                PluginConfig::new(config).workers(1).clock(clock).allow_on_headers_stop_iteration(hold),
            )
            .unwrap_or_else(|e| panic!("{}: {e}\nlogs: {:#?}", mode.id, e.logs()));
            let request = mode.kind.request(mode.alg);
            let issuer = keys.issuer(request.alg);
            let same = issuer.mint(&claims_at(request.alg, &request.agent, NOW));
            let reply = match mode.route {
                Route::Direct => UpstreamResponse::ok("ok"),
                Route::Proxied => {
                    let (status, content_type, body) = mode.kind.upstream_reply();
                    UpstreamResponse::new(status).header("content-type", content_type).body(body)
                }
            };
            let mut upstream = CannedUpstream(reply);
            let mut send = |plugin: &mut Plugin| {
                let token = match mode.tokens {
                    Tokens::Same => same.clone(),
                    Tokens::Rotating => issuer.mint(&claims_at(request.alg, &request.agent, NOW)),
                };
                let x = plugin.send(0, request.http(&token), &mut upstream);
                plugin.take_logs();
                assert_eq!(x.status, Some(mode.expect.status), "{} in the host: {}", mode.id, x.body_str());
                x
            };
            for _ in 0..WARM {
                send(&mut plugin);
            }
            if let Some(w) = plugin.worker_mut(0) {
                w.reset_host_calls();
            }
            let x = send(&mut plugin);
            let calls = plugin.worker(0).map(|w| w.host_calls()).unwrap_or_default();
            assert!(!calls.is_empty(), "{}: no host call counted", mode.id);
            Count { mode: mode.id, calls, callbacks: x.callbacks.len() }
        })
        .collect()
}
