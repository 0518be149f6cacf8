//! Hostcall return values and status codes as HOST-FIDELITY.md lists them.

use crate::support::conformance::*;
use serde_json::json;
use warden_host::{HttpRequest, LogLevel, PluginConfig, TlsInfo};

fn run(ops_json: serde_json::Value) -> Vec<String> {
    let mut p = plugin();
    let x = p.send(0, ops("GET", ops_json), &mut ok_upstream());
    results(&x, "request_headers")
}

fn one_phase(list: serde_json::Value) -> Vec<String> {
    run(json!({ "request_headers": list }))
}

#[test]
fn header_map_layout_is_count_sizes_then_nul_terminated_pairs() {
    let mut p = plugin();
    let req = HttpRequest::get("/a?b=1").authority("api.example").header("X-Mixed-Case", "V");
    let req = req.header("x-ops", &json!({"request_headers":[{"op":"get_pairs_hex","map":0}]}).to_string());
    let x = p.send(0, req, &mut ok_upstream());
    let r = &results(&x, "request_headers")[0];
    let hex = r.strip_prefix("status:0:").unwrap();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let count = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let mut pos = 4 + 8 * count;
    let mut keys = Vec::new();
    for i in 0..count {
        let kl = u32::from_le_bytes(bytes[4 + 8 * i..8 + 8 * i].try_into().unwrap()) as usize;
        let vl = u32::from_le_bytes(bytes[8 + 8 * i..12 + 8 * i].try_into().unwrap()) as usize;
        let k = String::from_utf8(bytes[pos..pos + kl].to_vec()).unwrap();
        assert_eq!(bytes[pos + kl], 0);
        pos += kl + 1;
        assert_eq!(bytes[pos + vl], 0);
        pos += vl + 1;
        keys.push(k);
    }
    assert_eq!(pos, bytes.len());
    assert_eq!(&keys[..4], [":authority", ":path", ":method", ":scheme"]);
    assert!(keys.contains(&"x-mixed-case".to_string()));
    assert!(keys.contains(&"x-forwarded-proto".to_string()));
    assert!(keys.contains(&"x-request-id".to_string()));
}

#[test]
fn header_values_first_of_repeated_lowercase_lookup_and_empty_value() {
    let mut p = plugin();
    let req = HttpRequest::get("/").header("x-dup", "one").header("X-Dup", "two").header("x-empty", "").header(
        "x-ops",
        &json!({"request_headers":[
            {"op":"get_header","map":0,"key":"X-DUP"},
            {"op":"get_header","map":0,"key":"x-empty"},
            {"op":"get_header","map":0,"key":"x-missing"},
            {"op":"get_header","map":0,"key":":method"},
            {"op":"add_header","map":0,"key":"X-Added","value":"a"},
            {"op":"replace_header","map":0,"key":"x-dup","value":"only"},
            {"op":"remove_header","map":0,"key":"x-not-there"},
            {"op":"remove_header","map":0,"key":"x-empty"},
            {"op":"get_header","map":0,"key":"x-added"}
        ]})
        .to_string(),
    );
    let mut up = warden_host::RecordingUpstream::new(warden_host::UpstreamResponse::ok("x"));
    let x = p.send(0, req, &mut up);
    // Empty value: (0, 0) which is Some("") for the SDK; the fixture prints a null buffer.
    assert_eq!(
        results(&x, "request_headers"),
        ["ok:one", "ok:null", "status:1", "ok:GET", "status:0", "status:0", "status:0", "status:0", "ok:a"]
    );
    let fwd = &up.requests[0];
    assert_eq!(fwd.header("x-added"), Some("a"));
    assert_eq!(fwd.headers.iter().filter(|(k, _)| k == "x-dup").count(), 1);
    assert_eq!(fwd.header("x-dup"), Some("only"));
    assert_eq!(fwd.header("x-empty"), None);
}

#[test]
fn set_pairs_replaces_the_map_and_a_malformed_map_counts_as_empty() {
    let mut p = plugin();
    let req = ops(
        "GET",
        json!({"request_headers":[
            {"op":"set_pairs","map":0,"pairs":[[":method","GET"],[":path","/new"],[":authority","h"],["X-Set","1"]]},
            {"op":"get_pairs","map":0}
        ]}),
    );
    let mut up = warden_host::RecordingUpstream::new(warden_host::UpstreamResponse::ok("x"));
    let x = p.send(0, req, &mut up);
    assert_eq!(results(&x, "request_headers")[1], "status:0::method=GET;:path=/new;:authority=h;x-set=1");
    assert_eq!(up.requests[0].path(), "/new");
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"set_pairs_raw","map":0,"bytes":[1,0,0,0,1,0,0,0,1,0,0,0,97,0,98]},
                {"op":"get_pairs","map":0}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(results(&x, "request_headers"), ["status:0", "status:0:null"]);
}

#[test]
fn request_headers_after_continue_are_bad_argument_and_pairs_empty() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "POST",
            json!({
                "request_body":[
                    {"op":"get_header","map":0,"key":":path"},
                    {"op":"add_header","map":0,"key":"a","value":"b"},
                    {"op":"replace_header","map":0,"key":"a","value":"b"},
                    {"op":"remove_header","map":0,"key":"a"},
                    {"op":"get_pairs","map":0},
                    {"op":"set_pairs","map":0,"pairs":[]}
                ],
                "response_headers":[
                    {"op":"get_header","map":0,"key":":path"},
                    {"op":"get_header","map":2,"key":":status"},
                    {"op":"get_header","map":3,"key":"x"}
                ],
                "response_body":[{"op":"get_header","map":2,"key":":status"}],
                "log":[
                    {"op":"get_header","map":0,"key":":path"},
                    {"op":"get_header","map":2,"key":":status"},
                    {"op":"get_header","map":1,"key":"x"}
                ]
            }),
        )
        .body("payload"),
        &mut ok_upstream(),
    );
    assert_eq!(
        results(&x, "request_body"),
        ["status:2", "status:2", "status:2", "status:2", "status:0:null", "status:2"]
    );
    assert_eq!(results(&x, "response_headers"), ["status:2", "ok:200", "status:2"]);
    assert_eq!(results(&x, "response_body"), ["status:2"]);
    // Access-log phase: request and response headers readable, missing maps NotFound.
    assert_eq!(results(&x, "log"), ["ok:/test", "ok:200", "status:1"]);
}

#[test]
fn sdk_reading_request_headers_in_the_response_phase_traps() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops("GET", json!({"response_headers":[{"op":"sdk_get_request_header","key":":path"}]})),
        &mut ok_upstream(),
    );
    assert!(x.trapped);
    assert_eq!(x.status, Some(503));
    assert!(p.logs().iter().any(|l| l.level == LogLevel::Critical && l.message.contains("unexpected status: 2")));
}

#[test]
fn bad_pointers_are_invalid_memory_access_and_bad_levels_bad_argument() {
    assert_eq!(
        one_phase(json!([
            {"op":"log_bad_ptr"},
            {"op":"log","level":6,"msg":"x"},
            {"op":"log","level":3,"msg":"warned"},
            {"op":"log_level"}
        ])),
        ["status:6", "status:2", "status:0", "status:0:2"]
    );
}

#[test]
fn log_level_filters_and_is_reported() {
    let mut p = start(PluginConfig::new("{}").log_level(LogLevel::Warn));
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"log","level":2,"msg":"info-dropped"},
                {"op":"log","level":4,"msg":"error-kept"},
                {"op":"log_level"}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(results(&x, "request_headers")[2], "status:0:3");
    assert!(p.logged("error-kept"));
    assert!(!p.logged("info-dropped"));
}

#[test]
fn metrics_follow_envoy_type_rules() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"define_metric","type":0,"name":"c"},
                {"op":"define_metric","type":1,"name":"g"},
                {"op":"define_metric","type":2,"name":"h"},
                {"op":"define_metric","type":0,"name":"c2"},
                {"op":"define_metric","type":3,"name":"bad"},
                {"op":"increment_metric","name":"c","offset":0},
                {"op":"increment_metric","name":"c","offset":-1},
                {"op":"increment_metric","name":"c","offset":5},
                {"op":"record_metric","name":"c","value":10},
                {"op":"get_metric","name":"c"},
                {"op":"increment_metric","name":"g","offset":7},
                {"op":"increment_metric","name":"g","offset":-2},
                {"op":"record_metric","name":"g","value":42},
                {"op":"get_metric","name":"g"},
                {"op":"increment_metric","name":"h","offset":1},
                {"op":"record_metric","name":"h","value":3},
                {"op":"get_metric","name":"h"},
                {"op":"get_metric","id":1000},
                {"op":"record_metric","id":1000,"value":1},
                {"op":"increment_metric","id":1000,"offset":1}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(
        results(&x, "request_headers"),
        [
            "status:0:4",
            "status:0:5",
            "status:0:6",
            "status:0:8",
            "status:2:0",
            "status:2",
            "status:2",
            "status:0",
            "status:0",
            "status:0:15",
            "status:0",
            "status:0",
            "status:0",
            "status:0:42",
            "status:2",
            "status:0",
            "status:2:0",
            "status:1:0",
            "status:1",
            "status:1"
        ]
    );
    assert_eq!(p.metric("c"), Some(15));
    assert_eq!(p.metric("g"), Some(42));
    assert_eq!(p.histogram("h"), Some(vec![3]));
}

#[test]
fn metrics_are_process_wide_across_vms() {
    let mut p = start(PluginConfig::new("{}").workers(2));
    let inc = json!({"request_headers":[
        {"op":"define_metric","type":0,"name":"hits"},
        {"op":"increment_metric","name":"hits","offset":1},
        {"op":"get_metric","name":"hits"}
    ]});
    let a = p.send(0, ops("GET", inc.clone()), &mut ok_upstream());
    let b = p.send(1, ops("GET", inc), &mut ok_upstream());
    assert_eq!(results(&a, "request_headers")[2], "status:0:1");
    assert_eq!(results(&b, "request_headers")[0], "status:0:4");
    assert_eq!(results(&b, "request_headers")[2], "status:0:2");
    assert_eq!(p.metric("hits"), Some(2));
}

#[test]
fn shared_data_cas_rules() {
    let mut p = start(PluginConfig::new("{}").workers(2));
    let a = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"get_shared","key":"k"},
                {"op":"set_shared","key":"k","value":"v1","cas":0},
                {"op":"get_shared","key":"k"},
                {"op":"set_shared","key":"k","value":"v2","cas":"last"},
                {"op":"set_shared","key":"k","value":"v3","cas":"last"},
                {"op":"get_shared","key":"k"},
                {"op":"set_shared","key":"k","value":"","cas":0},
                {"op":"get_shared","key":"k"}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(
        results(&a, "request_headers"),
        ["status:1", "status:0", "ok:v1:1", "status:0", "status:8", "ok:v2:2", "status:0", "ok:null:3"]
    );
    // Visible from the other VM, and to the test.
    let b = p.send(
        1,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"set_shared","key":"k2","value":"x","cas":77},
                {"op":"get_shared","key":"k2"}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(results(&b, "request_headers"), ["status:0", "ok:x:4"]);
    assert_eq!(p.shared_data("k2"), Some((b"x".to_vec(), 4)));
}

#[test]
fn shared_queues_register_resolve_enqueue_dequeue() {
    let mut p = start(PluginConfig { vm_id: "vm1".into(), ..PluginConfig::new("{}").workers(2) });
    let a = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"register_queue","name":"q"},
                {"op":"dequeue"},
                {"op":"resolve_queue","vm_id":"","name":"q"},
                {"op":"resolve_queue","vm_id":"vm1","name":"q"},
                {"op":"resolve_queue","vm_id":"other","name":"q"},
                {"op":"enqueue","queue":99,"value":"x"},
                {"op":"dequeue","queue":99}
            ]}),
        ),
        &mut ok_upstream(),
    );
    assert_eq!(
        results(&a, "request_headers"),
        ["status:0:1", "status:7:null", "status:0:1", "status:0:1", "status:1:0", "status:1", "status:1:null"]
    );
    // Worker 1 enqueues; worker 0 (the registrant) gets on_queue_ready on the event loop.
    let b = p.send(
        1,
        ops("GET", json!({"request_headers":[{"op":"enqueue","queue":1,"value":"hello"}]})),
        &mut ok_upstream(),
    );
    assert_eq!(results(&b, "request_headers"), ["status:0"]);
    assert_eq!(p.run_pending(), 1);
    assert!(p.logs().iter().any(|l| l.vm == 0 && l.message == "queue_ready 1 hello"));
}

#[test]
fn properties_use_envoy_encodings() {
    let mut p = start(PluginConfig {
        plugin_name: "warden".into(),
        root_id: "warden_root".into(),
        vm_id: "vm".into(),
        ..PluginConfig::new("{}")
    });
    let req = HttpRequest::get("/p/q?x=1")
        .authority("api.example")
        .header("user-agent", "ua/1")
        .header("x-a", "1")
        .header("x-a", "2")
        .request_id("rid-1")
        .source("192.0.2.7:5555".parse().unwrap())
        .tls(TlsInfo::mtls_with_uri_san("spiffe://corp/agent"));
    let list = json!([
        {"op":"get_property","path":["request","path"]},
        {"op":"get_property","path":["request","url_path"]},
        {"op":"get_property","path":["request","query"]},
        {"op":"get_property","path":["request","host"]},
        {"op":"get_property","path":["request","method"]},
        {"op":"get_property","path":["request","scheme"]},
        {"op":"get_property","path":["request","id"]},
        {"op":"get_property","path":["request","useragent"]},
        {"op":"get_property","path":["request","protocol"]},
        {"op":"get_property","path":["request","time"]},
        {"op":"get_property","path":["source","address"]},
        {"op":"get_property","path":["source","port"]},
        {"op":"get_property","path":["connection","mtls"]},
        {"op":"get_property","path":["connection","uri_san_peer_certificate"]},
        {"op":"get_property","path":["connection","dns_san_peer_certificate"]},
        {"op":"get_property","path":["plugin_name"]},
        {"op":"get_property","path":["plugin_root_id"]},
        {"op":"get_property","path":["plugin_vm_id"]},
        {"op":"get_property","path":["request","headers","x-a"]},
        {"op":"get_property","path":["nope"]},
        {"op":"get_property","path":["connection","tls_version"]}
    ]);
    let req = req.header("x-ops", &json!({"request_headers": list}).to_string());
    let x = p.send(0, req, &mut ok_upstream());
    let r = results(&x, "request_headers");
    let s = |i: usize| String::from_utf8(hex_result(&r[i])).unwrap();
    let int = |i: usize| i64::from_le_bytes(hex_result(&r[i]).try_into().unwrap());
    assert_eq!(s(0), "/p/q?x=1");
    assert_eq!(s(1), "/p/q");
    assert_eq!(s(2), "x=1");
    assert_eq!(s(3), "api.example");
    assert_eq!(s(4), "GET");
    assert_eq!(s(5), "http");
    assert_eq!(s(6), "rid-1");
    assert_eq!(s(7), "ua/1");
    assert_eq!(s(8), "HTTP/1.1");
    assert_eq!(int(9) as u64, p.clock().now_nanos());
    assert_eq!(s(10), "192.0.2.7:5555");
    assert_eq!(int(11), 5555);
    assert_eq!(hex_result(&r[12]), [1]);
    assert_eq!(s(13), "spiffe://corp/agent");
    assert_eq!(r[14], "status:1");
    assert_eq!((s(15), s(16), s(17)), ("warden".into(), "warden_root".into(), "vm".into()));
    assert_eq!(s(18), "1,2");
    assert_eq!(r[19], "status:1");
    assert_eq!(s(20), "TLSv1.3");
}

#[test]
fn tls_properties_without_tls_are_not_found_and_mtls_false() {
    let r = one_phase(json!([
        {"op":"get_property","path":["connection","uri_san_peer_certificate"]},
        {"op":"get_property","path":["connection","mtls"]},
        {"op":"get_property","path":["connection","requested_server_name"]}
    ]));
    assert_eq!(r[0], "status:1");
    assert_eq!(hex_result(&r[1]), [0]);
    assert_eq!(r[2], "ok:null");
}

#[test]
fn set_property_writes_filter_state_readable_back_and_in_the_exchange() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers":[
                {"op":"set_property","path":["decision"],"value":"allow"},
                {"op":"get_property","path":["decision"]},
                {"op":"get_property","path":["filter_state","wasm.decision"]}
            ]}),
        ),
        &mut ok_upstream(),
    );
    let r = results(&x, "request_headers");
    assert_eq!(r[0], "status:0");
    assert_eq!(hex_result(&r[1]), b"allow");
    assert_eq!(hex_result(&r[2]), b"allow");
    assert_eq!(x.filter_state_str("wasm.decision").as_deref(), Some("allow"));
}

#[test]
fn root_context_calls_without_a_stream() {
    let p = start(PluginConfig::new(
        r#"{"configure":[
        {"op":"set_property","path":["x"],"value":"y"},
        {"op":"get_property","path":["request","path"]},
        {"op":"get_property","path":["plugin_name"]},
        {"op":"get_header","map":0,"key":":path"},
        {"op":"get_pairs","map":0},
        {"op":"get_buffer","type":7,"start":0,"max":2},
        {"op":"get_buffer","type":7,"start":1000,"max":2}
    ]}"#,
    ));
    let r = root_results(&p, "configure");
    assert_eq!(r[..5], ["status:1", "status:1", "ok:706c7567696e", "status:2", "status:0:null"]);
    assert_eq!(r[5], "ok:{\"");
    assert_eq!(r[6], "ok:null");
}

#[test]
fn effective_context_foreign_functions_done_and_grpc() {
    assert_eq!(
        one_phase(json!([
            {"op":"set_effective_context","id":1},
            {"op":"set_effective_context","id":2},
            {"op":"set_effective_context","id":77},
            {"op":"foreign","name":"compress"},
            {"op":"done"},
            {"op":"grpc_call"},
            {"op":"get_status"},
            {"op":"continue_stream","type":3},
            {"op":"continue_stream","type":9},
            {"op":"close_stream","type":9}
        ])),
        [
            "status:0",
            "status:0",
            "status:2",
            "status:1",
            "status:1",
            "status:10",
            "status:0:0:null",
            "status:12",
            "status:2",
            "status:2"
        ]
    );
}

#[test]
fn buffer_reads_clamp_and_overflow_is_bad_argument() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "POST",
            json!({"request_body":[
                {"op":"get_buffer","type":0,"start":0,"max":100},
                {"op":"get_buffer","type":0,"start":2,"max":3},
                {"op":"get_buffer","type":0,"start":50,"max":3},
                {"op":"get_buffer","type":0,"start":4294967295u64,"max":2},
                {"op":"get_buffer","type":9,"start":0,"max":2}
            ]}),
        )
        .body("abcdefg"),
        &mut ok_upstream(),
    );
    assert_eq!(results(&x, "request_body"), ["ok:abcdefg", "ok:cde", "ok:null", "status:2", "status:1"]);
}

#[test]
fn set_buffer_only_replaces_from_the_start_or_appends() {
    let mut p = plugin();
    let mut up = warden_host::RecordingUpstream::new(warden_host::UpstreamResponse::ok("x"));
    let x = p.send(
        0,
        ops(
            "POST",
            json!({"request_body":[
                {"op":"set_buffer","type":0,"start":0,"size":3,"value":"XY"},
                {"op":"set_buffer","type":0,"start":100,"size":0,"value":"!"},
                {"op":"set_buffer","type":0,"start":2,"size":1,"value":"z"},
                {"op":"get_buffer","type":0,"start":0,"max":100}
            ]}),
        )
        .body("abcdefg"),
        &mut up,
    );
    assert_eq!(results(&x, "request_body"), ["status:0", "status:0", "status:2", "ok:XYdefg!"]);
    assert_eq!(up.requests[0].body, b"XYdefg!");
}

#[test]
fn time_comes_from_the_host_clock_everywhere() {
    let clock = warden_host::Clock::manual_default();
    let mut p = start(PluginConfig::new("{}").clock(clock.clone()));
    p.advance(std::time::Duration::from_millis(1500));
    let r = one_phase_on(&mut p, json!([{"op":"time"}]));
    let now = clock.now_nanos();
    assert_eq!(r[0], format!("host:{now}:rt:0:{now}:mono:0:1500000000:cpu:58:std:{now}"));
}

fn one_phase_on(p: &mut warden_host::Plugin, list: serde_json::Value) -> Vec<String> {
    let x = p.send(0, ops("GET", json!({"request_headers": list})), &mut ok_upstream());
    results(&x, "request_headers")
}
