//! Stream flow: pause/resume in both header modes, body buffering and its limit, local replies,
//! the end-of-stream callbacks.

use crate::support::conformance::*;
use serde_json::json;
use warden_host::{FlowState, HttpRequest, Outcome, PluginConfig, RecordingUpstream, StopPoint, UpstreamResponse};

fn names(x: &warden_host::Exchange) -> Vec<&'static str> {
    x.callbacks.iter().map(|c| c.callback).collect()
}

#[test]
fn get_with_end_of_stream_on_headers_never_gets_body_callbacks() {
    let mut p = plugin();
    let x = p.send(0, ops("GET", json!({"request_headers":[{"op":"args"}]})), &mut ok_upstream());
    assert_eq!(results(&x, "request_headers")[0].split(":eos:").nth(1), Some("true"));
    assert!(!names(&x).contains(&"proxy_on_request_body"));
    assert_eq!(x.outcome, Outcome::Completed);
    assert_eq!(x.status, Some(200));
    assert_eq!(x.body_str(), "upstream says hi");
}

#[test]
fn pause_at_headers_delivers_no_body_until_resumed_and_hangs_if_never_resumed() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops("POST", json!({"request_headers":[{"op":"action","value":"pause"}]})).body("data"),
        &mut ok_upstream(),
    );
    assert_eq!(x.outcome, Outcome::Hung { at: StopPoint::RequestHeaders });
    assert_eq!(x.status, None);
    assert!(x.forwarded.is_none());
    assert!(!x.upstream_called);
    assert!(!names(&x).contains(&"proxy_on_request_body"));
    // The stream still ends with on_log / on_done.
    assert!(x.logged("log ctx=2") && x.logged("done ctx=2"));
}

#[test]
fn pause_at_headers_holds_body_chunks_in_the_host() {
    let mut p = plugin();
    let req = ops("POST", json!({"request_headers":[{"op":"action","value":"pause"}]})).body("abcdef");
    let id = p.open_stream(0, &req).unwrap();
    p.request_headers(id, false).unwrap();
    p.request_body(id, b"ab", false).unwrap();
    p.request_body(id, b"cd", true).unwrap();
    let s = p.stream_state(id).unwrap();
    assert_eq!(s.request_state, FlowState::HeadersPaused);
    assert_eq!(s.held_request_bytes, 4);
    assert!(!s.request_headers_forwarded);
    assert_eq!(s.callbacks.len(), 1, "only on_request_headers ran: {:?}", s.callbacks);
    let x = p.finish_stream(id).unwrap();
    assert_eq!(x.outcome, Outcome::Hung { at: StopPoint::RequestHeaders });
}

#[test]
fn continue_stream_from_a_later_callback_resumes_the_request() {
    // The filter pauses at headers and resumes from the http-call response (root delivers it).
    let srv = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", std::time::Duration::ZERO);
    let mut p = start(PluginConfig::new("{}").cluster("authz", srv.addr));
    let mut up = RecordingUpstream::new(UpstreamResponse::ok("done"));
    let x = p.send(0, ops("POST", json!({
        "request_headers":[
            {"op":"http_call","cluster":"authz","headers":[[":method","GET"],[":path","/check"],[":authority","authz"]],"timeout":1000},
            {"op":"action","value":"pause"}
        ],
        "request_body":[{"op":"args"}],
        "http_call_response":[{"op":"add_header","map":0,"key":"x-authz","value":"ok"},{"op":"resume_request"}]
    })).body("abcdef").chunks(vec![3, 3]), &mut up);
    assert_eq!(x.outcome, Outcome::Completed, "{:?}", x.logs);
    // The held body arrives in one callback with its full size, after the resume.
    assert_eq!(results(&x, "request_body"), ["size:6:eos:true"]);
    assert_eq!(up.requests[0].header("x-authz"), Some("ok"));
    assert_eq!(up.requests[0].body, b"abcdef");
}

#[test]
fn allow_on_headers_stop_iteration_delivers_body_while_headers_are_held() {
    let mut p = start(PluginConfig::new("{}").allow_on_headers_stop_iteration(true));
    let mut up = RecordingUpstream::new(UpstreamResponse::ok("x"));
    let x = p.send(
        0,
        ops(
            "POST",
            json!({
                "request_headers":[{"op":"action","value":"pause"}],
                "request_body":[
                    {"op":"args"},
                    {"op":"get_header","map":0,"key":":path"},
                    {"op":"add_header","map":0,"key":"x-from-body","value":"1"},
                    {"op":"pause_unless_eos"}
                ]
            }),
        )
        .body("abcdef")
        .chunks(vec![2, 4]),
        &mut up,
    );
    assert_eq!(x.outcome, Outcome::Completed);
    // Headers are still writable while held; the second call sees the cumulative size.
    assert_eq!(results(&x, "request_body"), ["size:6:eos:true", "ok:/test", "status:0", "ok"]);
    assert!(x.logs.iter().any(|l| l.message.contains("size:2:eos:false")));
    assert_eq!(up.requests[0].header("x-from-body"), Some("1"));
    assert_eq!(up.requests[0].body, b"abcdef");
}

#[test]
fn default_mode_filter_waiting_for_the_body_at_headers_hangs() {
    // The classic bug: pause at headers expecting body callbacks. Default Envoy never sends them.
    let mut p = plugin();
    let req = ops(
        "POST",
        json!({"request_headers":[{"op":"action","value":"pause"}],"request_body":[{"op":"resume_request"}]}),
    )
    .body("x");
    let x = p.send(0, req.clone(), &mut ok_upstream());
    assert_eq!(x.outcome, Outcome::Hung { at: StopPoint::RequestHeaders });
    let mut p = start(PluginConfig::new("{}").allow_on_headers_stop_iteration(true));
    let x = p.send(0, req, &mut ok_upstream());
    assert_eq!(x.outcome, Outcome::Completed);
}

#[test]
fn continue_from_headers_forwards_headers_even_if_the_body_then_pauses() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops("POST", json!({"request_body":[{"op":"action","value":"pause"}]})).body("abc"),
        &mut ok_upstream(),
    );
    assert_eq!(x.outcome, Outcome::Hung { at: StopPoint::RequestBody });
    let fwd = x.forwarded.expect("headers went upstream");
    assert_eq!(fwd.path(), "/test");
    assert!(fwd.body.is_empty());
    assert!(!fwd.complete);
    assert!(!x.upstream_called);
}

#[test]
fn body_pause_buffers_and_later_calls_see_the_cumulative_buffer() {
    let mut p = plugin();
    let mut up = RecordingUpstream::new(UpstreamResponse::ok("x"));
    let x = p.send(
        0,
        ops(
            "POST",
            json!({"request_body":[
                {"op":"args"},
                {"op":"get_buffer","type":0,"start":0},
                {"op":"pause_unless_eos"}
            ]}),
        )
        .body("0123456789")
        .chunks(vec![3, 3, 4]),
        &mut up,
    );
    assert_eq!(results(&x, "request_body"), ["size:10:eos:true", "ok:0123456789", "ok"]);
    assert!(x.logs.iter().any(|l| l.message.contains(r#""size:6:eos:false","ok:012345""#)));
    assert_eq!(up.requests[0].body, b"0123456789");
}

#[test]
fn streaming_body_chunks_are_seen_one_at_a_time() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops("POST", json!({"request_body":[{"op":"args"}]})).body("0123456789").chunks(vec![3, 3, 4]),
        &mut ok_upstream(),
    );
    assert_eq!(results(&x, "request_body"), ["size:4:eos:true"]);
    assert!(x.logs.iter().any(|l| l.message.contains("size:3:eos:false")));
}

#[test]
fn buffering_past_the_limit_gets_413_from_the_host() {
    let mut p = start(PluginConfig { request_body_buffer_limit: 8, ..PluginConfig::new("{}") });
    let x = p.send(
        0,
        ops(
            "POST",
            json!({
                "request_body":[{"op":"pause_unless_eos"}],
                "response_headers":[{"op":"get_header","map":2,"key":":status"}]
            }),
        )
        .body("0123456789")
        .chunks(vec![5, 5]),
        &mut ok_upstream(),
    );
    assert_eq!(x.status, Some(413));
    assert_eq!(x.body_str(), "Payload Too Large");
    assert_eq!(x.local_reply.as_ref().unwrap().details, "request_payload_too_large");
    assert!(!x.upstream_called);
    // The host's reply passes through the filter's response callbacks too.
    assert_eq!(results(&x, "response_headers"), ["ok:413"]);
}

#[test]
fn default_buffer_limit_is_one_mebibyte() {
    let mut p = plugin();
    let ops_j = json!({"request_body":[{"op":"pause_unless_eos"}]});
    let x = p.send(
        0,
        ops("POST", ops_j.clone()).body(vec![b'a'; 1 << 20]).chunks(vec![1 << 19, 1 << 19]),
        &mut ok_upstream(),
    );
    assert_eq!(x.status, Some(200));
    let x = p.send(
        0,
        ops("POST", ops_j).body(vec![b'a'; (1 << 20) + 1]).chunks(vec![1 << 19, 1 << 19, 1]),
        &mut ok_upstream(),
    );
    assert_eq!(x.status, Some(413));
}

#[test]
fn local_reply_is_deferred_passes_through_response_callbacks_and_gets_envoy_headers() {
    let mut p = plugin();
    let mut up = RecordingUpstream::new(UpstreamResponse::ok("never"));
    let x = p.send(0, ops("GET", json!({
        "request_headers":[
            {"op":"local_reply","status":403,"body":"denied","headers":[["X-Reason","policy"]],"details":"policy denied"},
            {"op":"get_header","map":0,"key":":path"},
            {"op":"action","value":"continue"}
        ],
        "response_headers":[
            {"op":"get_pairs","map":2},
            {"op":"add_header","map":2,"key":"x-seen-by-filter","value":"yes"}
        ],
        "response_body":[{"op":"args"},{"op":"get_buffer","type":1,"start":0}]
    })), &mut up);
    // Deferred: the same callback still ran its next op with the request headers available.
    assert_eq!(results(&x, "request_headers"), ["status:0", "ok:/test", "ok"]);
    assert!(up.requests.is_empty());
    assert!(!x.upstream_called);
    assert_eq!(x.status, Some(403));
    assert_eq!(x.body_str(), "denied");
    assert_eq!(
        results(&x, "response_headers")[0],
        "status:0::status=403;x-reason=policy;content-length=6;content-type=text/plain"
    );
    assert_eq!(results(&x, "response_body"), ["size:6:eos:true", "ok:denied"]);
    assert_eq!(x.header("x-seen-by-filter"), Some("yes"));
    let lr = x.local_reply.unwrap();
    assert_eq!(lr.details, "policy_denied");
    assert_eq!(x.outcome, Outcome::Completed);
}

#[test]
fn local_reply_keeps_a_given_content_type() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"local_reply","status":401,"body":"{}","headers":[["content-type","application/json"]]}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(x.status, Some(401));
    assert_eq!(x.header("content-type"), Some("application/json"));
    assert_eq!(x.header("content-length"), Some("2"));
    assert_eq!(x.headers.iter().filter(|(k, _)| k == "content-type").count(), 1);
}

#[test]
fn local_reply_from_the_body_stops_the_request() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops("POST", json!({"request_body":[{"op":"local_reply","status":400,"body":"bad"}]}))
            .body("abc")
            .chunks(vec![1, 2]),
        &mut ok_upstream(),
    );
    assert_eq!(x.status, Some(400));
    assert_eq!(x.callbacks.iter().filter(|c| c.callback == "proxy_on_request_body").count(), 1);
    assert!(!x.upstream_called);
    // Headers had gone upstream already (continue from headers); the body never did.
    assert!(!x.forwarded.unwrap().complete);
}

#[test]
fn response_flow_edits_and_end_callbacks() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({
                "response_headers":[
                    {"op":"replace_header","map":2,"key":"content-type","value":"application/json"},
                    {"op":"remove_header","map":2,"key":"x-internal"}
                ],
                "response_body":[{"op":"set_buffer","type":1,"start":0,"size":100,"value":"{\"ok\":true}"}],
                "log":[{"op":"get_header","map":2,"key":"content-type"}]
            }),
        ),
        &mut warden_host::CannedUpstream(
            UpstreamResponse::ok("plain").header("X-Internal", "1").header("content-type", "text/plain"),
        ),
    );
    assert_eq!(x.header("content-type"), Some("application/json"));
    assert_eq!(x.header("x-internal"), None);
    assert_eq!(x.body_str(), "{\"ok\":true}");
    assert_eq!(results(&x, "log"), ["ok:application/json"]);
    let order: Vec<&str> = x
        .logs
        .iter()
        .filter(|l| l.message.starts_with("log ctx") || l.message.starts_with("done ctx"))
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(order, ["log ctx=2", "done ctx=2"]);
}

#[test]
fn response_pause_at_headers_without_resume_hangs() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({
                "response_headers":[{"op":"action","value":"pause"}],
                "response_body":[{"op":"args"}]
            }),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(x.outcome, Outcome::Hung { at: StopPoint::ResponseHeaders });
    assert!(x.upstream_called);
}

#[test]
fn close_stream_resets_after_the_callback() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[{"op":"close_stream","type":0},{"op":"get_header","map":0,"key":":path"}]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(results(&x, "request_headers"), ["status:0", "ok:/test"]);
    assert_eq!(x.outcome, Outcome::Reset { details: "wasm_close_stream".into() });
    assert!(!x.upstream_called);
}

#[test]
fn trailers_pass_through_and_are_writable_in_their_phase() {
    let mut p = plugin();
    let mut up = RecordingUpstream::new(UpstreamResponse::ok("x"));
    let req = ops(
        "POST",
        json!({"request_trailers":[
            {"op":"get_header","map":1,"key":"x-t"},
            {"op":"add_header","map":1,"key":"x-t2","value":"b"}
        ]}),
    )
    .body("abc")
    .trailer("X-T", "a");
    let x = p.send(0, req, &mut up);
    assert_eq!(results(&x, "request_trailers"), ["ok:a", "status:0"]);
    assert_eq!(
        up.requests[0].trailers,
        vec![("x-t".to_string(), "a".to_string()), ("x-t2".to_string(), "b".to_string())]
    );
}

#[test]
fn step_api_reports_state_precisely() {
    let mut p = plugin();
    let req =
        HttpRequest::post("/s", "").header("x-ops", &json!({"request_body":[{"op":"pause_unless_eos"}]}).to_string());
    let id = p.open_stream(0, &req).unwrap();
    p.request_headers(id, false).unwrap();
    let s = p.stream_state(id).unwrap();
    assert_eq!(s.request_state, FlowState::Streaming);
    assert!(s.request_headers_forwarded);
    p.request_body(id, b"abc", false).unwrap();
    assert_eq!(p.stream_state(id).unwrap().request_state, FlowState::BodyPaused);
    p.request_body(id, b"def", true).unwrap();
    let s = p.stream_state(id).unwrap();
    assert!(s.request_complete);
    assert_eq!(s.forwarded.unwrap().body, b"abcdef");
    p.response_headers(id, 204, &vec![], true).unwrap();
    let x = p.finish_stream(id).unwrap();
    assert_eq!(x.outcome, Outcome::Completed);
    assert_eq!(x.status, Some(204));
    assert!(p.stream_state(id).is_none());
}
