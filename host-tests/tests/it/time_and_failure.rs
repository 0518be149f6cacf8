//! Ticks per VM on the host clock, and VM failure (traps) with fail-closed and fail-open.

use std::time::Duration;

use crate::support::conformance::*;
use serde_json::json;
use warden_host::{Clock, LogLevel, Outcome, PluginConfig};

fn tick_lines(p: &warden_host::Plugin) -> Vec<(usize, String)> {
    p.logs()
        .into_iter()
        .filter(|l| l.message.starts_with("tick n="))
        .map(|l| (l.vm, l.message.split(" now=").next().unwrap().to_string()))
        .collect()
}

#[test]
fn ticks_fire_once_per_period_in_every_vm_first_one_period_later() {
    let clock = Clock::manual_default();
    let t0 = clock.now_nanos();
    let mut p = start(PluginConfig::new(r#"{"tick_ms":1000}"#).workers(2).clock(clock.clone()));
    p.advance(Duration::from_millis(999));
    assert!(tick_lines(&p).is_empty());
    p.advance(Duration::from_millis(1));
    assert_eq!(tick_lines(&p), [(0, "tick n=1".into()), (1, "tick n=1".into())]);
    p.advance(Duration::from_millis(2500));
    let ticks = tick_lines(&p);
    assert_eq!(ticks.len(), 6);
    assert_eq!(ticks[4..], [(0, "tick n=3".into()), (1, "tick n=3".into())]);
    // The filter sees the due time of each tick.
    let last = p.logs().into_iter().rev().find(|l| l.message.starts_with("tick n=3")).unwrap();
    assert!(last.message.ends_with(&format!("now={}", t0 + 3_000_000_000)), "{}", last.message);
    assert_eq!(clock.now_nanos(), t0 + 3_500_000_000);
    assert_eq!(p.worker(1).unwrap().tick_period(), Some(Duration::from_secs(1)));
}

#[test]
fn a_tick_period_of_zero_disables_the_timer() {
    let mut p = start(PluginConfig::new(r#"{"tick_ms":100,"tick":[{"op":"set_tick","ms":0}]}"#));
    p.advance(Duration::from_secs(1));
    assert_eq!(tick_lines(&p).len(), 1);
    assert_eq!(p.worker(0).unwrap().tick_period(), None);
}

#[test]
fn a_stream_can_set_the_root_timer() {
    let mut p = plugin();
    p.send(0, ops("GET", json!({"request_headers":[{"op":"set_tick","ms":200}]})), &mut ok_upstream());
    p.advance(Duration::from_millis(450));
    assert_eq!(tick_lines(&p).len(), 2);
}

#[test]
fn real_clock_poll_fires_ticks() {
    let mut p = start(PluginConfig::new(r#"{"tick_ms":20}"#).clock(Clock::real()));
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while tick_lines(&p).is_empty() && std::time::Instant::now() < end {
        p.poll(Duration::from_millis(50));
    }
    assert!(!tick_lines(&p).is_empty());
}

fn panic_req() -> warden_host::HttpRequest {
    ops("GET", json!({"request_headers":[{"op":"panic","msg":"boom in filter"}]}))
}

#[test]
fn a_trap_fails_the_vm_closed_503_on_that_worker_only() {
    let mut p = start(PluginConfig::new("{}").workers(2));
    let x = p.send(0, panic_req(), &mut ok_upstream());
    assert!(x.trapped);
    assert_eq!(x.status, Some(503));
    assert_eq!(x.local_reply.as_ref().unwrap().details, "wasm_fail_stream");
    assert!(!x.upstream_called);
    assert!(x.logs.iter().any(|l| l.level == LogLevel::Critical && l.message.contains("boom in filter")));
    assert!(p.vm_failure(0).unwrap().contains("proxy_on_request_headers"));
    // Later streams on the failed worker: 503 without running the filter.
    let y = p.send(0, ops("GET", json!({})), &mut ok_upstream());
    assert_eq!(y.status, Some(503));
    assert!(y.callbacks.is_empty());
    assert!(!y.upstream_called);
    // Other workers are unaffected.
    let z = p.send(1, ops("GET", json!({})), &mut ok_upstream());
    assert_eq!(z.status, Some(200));
    assert!(p.vm_failure(1).is_none());
}

#[test]
fn a_trap_with_fail_open_continues_and_later_streams_skip_the_filter() {
    let mut p = start(PluginConfig::new("{}").fail_open(true));
    let x = p.send(0, panic_req(), &mut ok_upstream());
    assert!(x.trapped);
    assert_eq!(x.status, Some(200));
    assert!(x.upstream_called);
    let y = p.send(0, ops("GET", json!({"request_headers":[{"op":"local_reply","status":403}]})), &mut ok_upstream());
    assert_eq!(y.status, Some(200));
    assert!(y.filter_skipped);
    assert!(y.callbacks.is_empty());
}

#[test]
fn a_trap_in_the_response_phase_replaces_the_response_with_503() {
    let mut p = plugin();
    let x = p.send(0, ops("GET", json!({"response_headers":[{"op":"panic","msg":"late"}]})), &mut ok_upstream());
    assert!(x.upstream_called);
    assert_eq!(x.status, Some(503));
    assert_eq!(x.outcome, Outcome::Completed);
}

#[test]
fn a_runaway_callback_is_stopped_by_the_epoch_deadline() {
    let mut p = start(PluginConfig { callback_deadline: Duration::from_millis(100), ..PluginConfig::new("{}") });
    let started = std::time::Instant::now();
    let x = p.send(0, ops("GET", json!({"request_headers":[{"op":"spin"}]})), &mut ok_upstream());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(x.trapped);
    assert_eq!(x.status, Some(503));
    assert!(p.vm_failure(0).unwrap().contains("interrupt"), "{:?}", p.vm_failure(0));
}

#[test]
fn the_memory_limit_stops_a_growing_vm() {
    let mut p = start(PluginConfig { memory_limit: 16 << 20, ..PluginConfig::new("{}") });
    let x = p.send(0, ops("GET", json!({"request_headers":[{"op":"alloc_mb","mb":32}]})), &mut ok_upstream());
    assert!(x.trapped);
    assert_eq!(x.status, Some(503));
}

#[test]
fn failed_vms_no_longer_tick() {
    let mut p = start(PluginConfig::new(r#"{"tick_ms":100}"#).workers(2));
    p.send(0, panic_req(), &mut ok_upstream());
    p.advance(Duration::from_millis(100));
    assert_eq!(tick_lines(&p), [(1, "tick n=1".into())]);
}
