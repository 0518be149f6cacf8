//! Shared helpers for the conformance tests: the test filter module, plugin start-up, ops
//! requests, and tiny loopback HTTP servers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use warden_host::{CannedUpstream, CompiledModule, Exchange, HttpRequest, Plugin, PluginConfig, UpstreamResponse};

pub use super::test_filter_wasm as wasm_path;

/// The test filter, compiled once per process.
pub fn module() -> CompiledModule {
    let path = wasm_path();
    CompiledModule::load_cached(&path).expect("test filter compiles")
}

pub fn start(config: PluginConfig) -> Plugin {
    match Plugin::start(&module(), config) {
        Ok(p) => p,
        Err(e) => panic!("plugin did not start: {e}; logs: {:?}", e.logs()),
    }
}

/// A plugin with `{}` configuration and one worker.
pub fn plugin() -> Plugin {
    start(PluginConfig::new("{}"))
}

/// A request whose `x-ops` header tells the filter what to do in each phase.
pub fn ops(method: &str, ops: Value) -> HttpRequest {
    HttpRequest::new(method, "/test").header("x-ops", &ops.to_string())
}

pub fn ok_upstream() -> CannedUpstream {
    CannedUpstream(UpstreamResponse::ok("upstream says hi").header("content-type", "text/plain"))
}

/// The op results the filter wrote for `phase`.
pub fn results(x: &Exchange, phase: &str) -> Vec<String> {
    let key = format!("wasm.results_{phase}");
    let raw = x.filter_state.get(&key).unwrap_or_else(|| {
        panic!("no {key} in filter state {:?}; logs {:?}", x.filter_state.keys().collect::<Vec<_>>(), x.logs)
    });
    serde_json::from_slice(raw).expect("results are JSON")
}

/// Results logged by the root context for `phase` (the last such line).
pub fn root_results(p: &Plugin, phase: &str) -> Vec<String> {
    let prefix = format!("results {phase} ");
    let line = p
        .logs()
        .into_iter()
        .rev()
        .find(|l| l.message.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}line in {:?}", p.logs()));
    serde_json::from_str(&line.message[prefix.len()..]).expect("results are JSON")
}

/// Decodes a hex property result `ok:<hex>`.
pub fn hex_result(r: &str) -> Vec<u8> {
    let h = r.strip_prefix("ok:").unwrap_or_else(|| panic!("not ok: {r}"));
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
}

/// A loopback HTTP server that answers every connection with `reply` after `delay`.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

pub fn server(reply: &'static [u8], delay: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                conn.set_read_timeout(Some(Duration::from_millis(500))).ok();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(delay);
                let _ = conn.write_all(reply);
            });
        }
    });
    Server { addr, stop }
}

/// A port on which nothing listens.
pub fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}
