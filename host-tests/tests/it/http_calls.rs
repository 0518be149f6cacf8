//! `proxy_http_call` against real loopback servers: tokens, responses and Envoy's failure shapes.

use std::time::Duration;

use crate::support::conformance::*;
use serde_json::json;
use warden_host::{Clock, Outcome, PluginConfig, StopPoint};

const OK_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-Reply: r\r\n\r\nhello";

fn call(cluster: &str, timeout: u64) -> serde_json::Value {
    json!({"op":"http_call","cluster":cluster,"headers":[[":method","GET"],[":path","/check"],[":authority","authz.local"],["X-Q","1"]],"timeout":timeout})
}

fn report() -> serde_json::Value {
    json!([
        {"op":"get_header","map":6,"key":":status"},
        {"op":"get_buffer","type":4,"start":0},
        {"op":"get_status"},
        {"op":"get_pairs","map":6},
        {"op":"resume_request"}
    ])
}

#[test]
fn tokens_are_4_8_12_per_vm() {
    let srv = server(OK_REPLY, Duration::ZERO);
    let mut p = start(PluginConfig::new("{}").workers(2).cluster("authz", srv.addr));
    let three = json!({"request_headers":[call("authz", 1000), call("authz", 1000), call("authz", 1000)]});
    let a = p.send(0, ops("GET", three.clone()), &mut ok_upstream());
    assert_eq!(results(&a, "request_headers"), ["token:4", "token:8", "token:12"]);
    let b = p.send(0, ops("GET", json!({"request_headers":[call("authz", 1000)]})), &mut ok_upstream());
    assert_eq!(results(&b, "request_headers"), ["token:16"]);
    let c = p.send(1, ops("GET", three), &mut ok_upstream());
    assert_eq!(results(&c, "request_headers"), ["token:4", "token:8", "token:12"]);
    assert!(p.settle(Duration::from_secs(5)));
}

#[test]
fn a_response_arrives_on_the_root_context_and_reaches_the_stream() {
    let srv = server(OK_REPLY, Duration::ZERO);
    let mut p = start(PluginConfig::new("{}").cluster("authz", srv.addr));
    let x = p.send(
        0,
        ops(
            "GET",
            json!({
                "request_headers":[call("authz", 1000), {"op":"action","value":"pause"}],
                "http_call_response": report()
            }),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(x.outcome, Outcome::Completed);
    assert!(x.logged("call response ctx=2 token=4 headers=3 body=5 trailers=0"), "{:?}", x.logs);
    assert_eq!(
        results(&x, "http_call_response"),
        ["ok:200", "ok:hello", "status:0:0:null", "status:0::status=200;content-length=5;x-reply=r", "Ok(())"]
    );
    assert_eq!(x.status, Some(200));
}

#[test]
fn call_response_headers_are_bad_argument_outside_the_callback() {
    let srv = server(OK_REPLY, Duration::ZERO);
    let mut p = start(PluginConfig::new("{}").cluster("authz", srv.addr));
    let x = p.send(0, ops("GET", json!({
        "request_headers":[call("authz", 1000), {"op":"action","value":"pause"}],
        "http_call_response":[{"op":"resume_request"}],
        "response_headers":[{"op":"get_header","map":6,"key":":status"},{"op":"get_buffer","type":4,"start":0,"max":5}]
    })), &mut ok_upstream());
    assert_eq!(results(&x, "response_headers"), ["status:2", "status:1"]);
}

#[test]
fn refused_connection_is_an_ordinary_503_response() {
    let mut p = start(PluginConfig::new("{}").cluster("authz", refusing_addr()));
    let x = p.send(
        0,
        ops(
            "GET",
            json!({
                "request_headers":[call("authz", 1000), {"op":"action","value":"pause"}],
                "http_call_response": report()
            }),
        ),
        &mut ok_upstream(),
    );
    let r = results(&x, "http_call_response");
    assert_eq!(r[0], "ok:503");
    assert_eq!(r[1], format!("ok:{}", warden_host::http_call::CONNECT_FAILURE_BODY));
    assert_eq!(r[2], "status:0:0:null");
}

#[test]
fn a_reset_arrives_as_zero_counts_with_status_11_reset() {
    let srv = server(b"garbage, not http\r\n\r\n", Duration::ZERO);
    let mut p = start(PluginConfig::new("{}").cluster("authz", srv.addr));
    let x = p.send(
        0,
        ops(
            "GET",
            json!({
                "request_headers":[call("authz", 1000), {"op":"action","value":"pause"}],
                "http_call_response": report()
            }),
        ),
        &mut ok_upstream(),
    );
    assert!(x.logged("token=4 headers=0 body=0 trailers=0"), "{:?}", x.logs);
    assert_eq!(
        results(&x, "http_call_response"),
        ["status:2", "status:1", "status:0:11:reset", "status:0:null", "Ok(())"]
    );
}

#[test]
fn a_timeout_on_the_host_clock_is_a_504_response() {
    let srv = server(OK_REPLY, Duration::from_millis(800));
    let clock = Clock::manual_default();
    let mut p = start(PluginConfig::new("{}").cluster("authz", srv.addr).clock(clock));
    let req = ops(
        "GET",
        json!({
            "request_headers":[call("authz", 100), {"op":"action","value":"pause"}],
            "http_call_response": report()
        }),
    );
    let id = p.open_stream(0, &req).unwrap();
    p.request_headers(id, true).unwrap();
    p.advance(Duration::from_millis(99));
    assert_eq!(p.worker(0).unwrap().pending_http_calls(), 1);
    assert!(!p.stream_state(id).unwrap().request_complete);
    p.advance(Duration::from_millis(1));
    assert_eq!(p.worker(0).unwrap().pending_http_calls(), 0);
    let s = p.stream_state(id).unwrap();
    assert!(s.request_complete);
    let x = p.finish_stream(id).unwrap();
    let r = results(&x, "http_call_response");
    assert_eq!(r[..3], ["ok:504", "ok:upstream request timeout", "status:0:0:null"]);
}

#[test]
fn timeout_zero_means_no_timeout() {
    let srv = server(OK_REPLY, Duration::from_millis(600));
    let mut p = start(PluginConfig::new("{}").cluster("authz", srv.addr));
    let id = p.open_stream(0, &ops("GET", json!({"request_headers":[call("authz", 0), {"op":"action","value":"pause"}],"http_call_response":report()}))).unwrap();
    p.request_headers(id, true).unwrap();
    p.advance(Duration::from_secs(3600));
    assert_eq!(p.worker(0).unwrap().pending_http_calls(), 1);
    assert!(p.settle(Duration::from_secs(5)));
    let x = p.finish_stream(id).unwrap();
    assert_eq!(results(&x, "http_call_response")[0], "ok:200");
}

#[test]
fn unknown_cluster_and_missing_pseudo_headers_are_bad_argument() {
    let srv = server(OK_REPLY, Duration::ZERO);
    let mut p = start(PluginConfig::new("{}").cluster("authz", srv.addr));
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                call("nope", 100),
                {"op":"http_call","cluster":"authz","headers":[[":method","GET"],[":authority","a"]],"timeout":100},
                {"op":"http_call","cluster":"authz","headers":[[":path","/"],[":authority","a"]],"timeout":100},
                {"op":"http_call","cluster":"authz","headers":[[":method","GET"],[":path","/"]],"timeout":100}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(
        results(&x, "request_headers"),
        ["err:BadArgument", "err:BadArgument", "err:BadArgument", "err:BadArgument"]
    );
    assert_eq!(p.worker(0).unwrap().pending_http_calls(), 0);
}

#[test]
fn a_paused_stream_waiting_on_a_call_that_never_answers_hangs() {
    let srv = server(OK_REPLY, Duration::from_millis(900));
    let mut p = start(PluginConfig {
        send_wait: Duration::from_millis(100),
        ..PluginConfig::new("{}").cluster("authz", srv.addr)
    });
    let x = p.send(
        0,
        ops("GET", json!({"request_headers":[call("authz", 5000), {"op":"action","value":"pause"}]})),
        &mut ok_upstream(),
    );
    assert_eq!(x.outcome, Outcome::Hung { at: StopPoint::RequestHeaders });
}

/// The call's own timeout governs, not a fixed wait of the host (HOST-FIDELITY: the gateway gave up on every call
/// after 5 s): on a real clock a stream waits for a slow answer that comes within the call's timeout, however short
/// `send_wait` is, and gets a 504 when the call's timeout passes first.
#[test]
fn on_a_real_clock_a_stream_waits_for_its_calls_own_timeout() {
    let srv = server(OK_REPLY, Duration::from_millis(600));
    let mut p = start(PluginConfig {
        send_wait: Duration::from_millis(50),
        ..PluginConfig::new("{}").cluster("authz", srv.addr).clock(Clock::real())
    });
    let slow_within = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[call("authz", 3000), {"op":"action","value":"pause"}],
                   "http_call_response": report()}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(slow_within.outcome, Outcome::Completed);
    assert_eq!(results(&slow_within, "http_call_response")[..2], ["ok:200", "ok:hello"]);
    assert_eq!(slow_within.status, Some(200));

    let slow_past = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[call("authz", 200), {"op":"action","value":"pause"}],
                   "http_call_response": report()}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(slow_past.outcome, Outcome::Completed);
    assert_eq!(results(&slow_past, "http_call_response")[..2], ["ok:504", "ok:upstream request timeout"]);
}

#[test]
fn the_socket_never_gives_up_before_the_calls_timeout() {
    use warden_host::http_call::call_io_timeout;
    assert_eq!(call_io_timeout(0), None, "no timeout: as long as the upstream keeps the connection");
    assert_eq!(call_io_timeout(1000), Some(Duration::from_secs(30)));
    assert_eq!(call_io_timeout(120_000), Some(Duration::from_secs(121)));
}

#[test]
fn calls_from_the_root_context_get_their_response_on_the_root() {
    let srv = server(OK_REPLY, Duration::ZERO);
    let cfg = json!({"tick_ms": 1000, "tick": [call("authz", 500)], "root_http_call_response": [
        {"op":"get_header","map":6,"key":"x-reply"}
    ]});
    let mut p = start(PluginConfig::new(cfg.to_string()).cluster("authz", srv.addr));
    p.advance(Duration::from_secs(1));
    assert_eq!(root_results(&p, "tick"), ["token:4"]);
    assert!(p.settle(Duration::from_secs(5)));
    assert!(p.logged("root call response token=4 headers=3 body=5 trailers=0"));
    assert_eq!(root_results(&p, "root_http_call_response"), ["ok:r"]);
}

#[test]
fn http_upstream_forwards_to_a_real_server() {
    let srv = server(b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nnew", Duration::ZERO);
    let mut p = plugin();
    let mut up = warden_host::HttpUpstream { address: srv.addr };
    let x = p.send(0, ops("POST", json!({})).body("data"), &mut up);
    assert_eq!(x.status, Some(201));
    assert_eq!(x.body_str(), "new");
}
