//! Loading and start-up: imports, WASI subset, start order and refusal, N VMs.

use crate::support::conformance::*;
use serde_json::json;
use warden_host::{LogLevel, Outcome, Plugin, PluginConfig, StartError, PROXY_IMPORTS};

#[test]
fn module_exports_and_all_37_proxy_imports_are_defined() {
    let m = module();
    let exports = m.exports();
    for e in ["_initialize", "memory", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate"] {
        assert!(exports.iter().any(|x| x == e), "missing export {e}");
    }
    assert!(!exports.iter().any(|x| x == "malloc"));
    assert_eq!(PROXY_IMPORTS.len(), 37);
    // Every env import the filter uses is one of the 37, and it links (start succeeds).
    for i in m.imports() {
        if let Some(name) = i.strip_prefix("env.") {
            assert!(PROXY_IMPORTS.contains(&name), "unexpected import {name}");
        }
    }
    plugin();
}

/// Number of i32 parameters of each import (all return i32); `None` marks `(i32, i64)`.
fn params(name: &str) -> Option<usize> {
    Some(match name {
        "proxy_done" => 0,
        "proxy_get_log_level"
        | "proxy_get_current_time_nanoseconds"
        | "proxy_set_tick_period_milliseconds"
        | "proxy_continue_stream"
        | "proxy_close_stream"
        | "proxy_grpc_cancel"
        | "proxy_grpc_close"
        | "proxy_set_effective_context" => 1,
        "proxy_get_metric" => 2,
        "proxy_log"
        | "proxy_get_header_map_pairs"
        | "proxy_set_header_map_pairs"
        | "proxy_remove_header_map_value"
        | "proxy_register_shared_queue"
        | "proxy_enqueue_shared_queue"
        | "proxy_dequeue_shared_queue"
        | "proxy_get_status" => 3,
        "proxy_get_property" | "proxy_set_property" | "proxy_grpc_send" | "proxy_define_metric" => 4,
        "proxy_get_buffer_bytes"
        | "proxy_set_buffer_bytes"
        | "proxy_get_header_map_value"
        | "proxy_add_header_map_value"
        | "proxy_replace_header_map_value"
        | "proxy_get_shared_data"
        | "proxy_set_shared_data"
        | "proxy_resolve_shared_queue" => 5,
        "proxy_call_foreign_function" => 6,
        "proxy_send_local_response" => 8,
        "proxy_grpc_stream" => 9,
        "proxy_http_call" => 10,
        "proxy_grpc_call" => 12,
        "proxy_record_metric" | "proxy_increment_metric" => return None,
        other => panic!("unknown import {other}"),
    })
}

fn section(id: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![id];
    let mut n = body.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend(body);
    out
}

#[test]
fn a_module_importing_all_37_proxy_functions_with_sdk_signatures_links() {
    let mut types = vec![PROXY_IMPORTS.len() as u8];
    let mut imports = vec![PROXY_IMPORTS.len() as u8];
    for (i, name) in PROXY_IMPORTS.iter().enumerate() {
        types.push(0x60);
        match params(name) {
            Some(n) => {
                types.push(n as u8);
                types.extend(std::iter::repeat_n(0x7f, n));
            }
            None => types.extend([2, 0x7f, 0x7e]),
        }
        types.extend([1, 0x7f]);
        imports.push(3);
        imports.extend(b"env");
        imports.push(name.len() as u8);
        imports.extend(name.as_bytes());
        imports.extend([0x00, i as u8]);
    }
    let mut m = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    m.extend(section(1, types));
    m.extend(section(2, imports));
    warden_host::CompiledModule::from_bytes(&m).expect("every proxy import links");
}

#[test]
fn start_up_runs_vm_start_then_configure_on_every_vm() {
    let p = start(PluginConfig { vm_configuration: b"vm-cfg".to_vec(), ..PluginConfig::new("{}").workers(3) });
    let logs = p.logs();
    for vm in 0..3 {
        let mine: Vec<&str> = logs.iter().filter(|l| l.vm == vm).map(|l| l.message.as_str()).collect();
        let start = mine.iter().position(|m| *m == "vm_start size=6 config=vm-cfg").unwrap();
        let conf = mine.iter().position(|m| *m == "configured").unwrap();
        assert!(start < conf, "{mine:?}");
        assert!(logs.iter().filter(|l| l.vm == vm).all(|l| l.context_id == 1));
    }
}

#[test]
fn configure_false_refuses_the_plugin_with_the_logged_reason() {
    let err = Plugin::start(&module(), PluginConfig::new(r#"{"refuse":"missing issuer"}"#)).err().unwrap();
    assert!(matches!(err, StartError::Refused { callback: "proxy_on_configure", .. }), "{err}");
    assert!(err.logged("refusing configuration: missing issuer"));
    let err = Plugin::start(&module(), PluginConfig::new("not json")).err().unwrap();
    assert!(err.logged("invalid configuration"));
}

#[test]
fn vm_start_false_refuses_the_plugin() {
    let err =
        Plugin::start(&module(), PluginConfig { vm_configuration: b"refuse".to_vec(), ..PluginConfig::new("{}") })
            .err()
            .unwrap();
    assert!(matches!(err, StartError::Refused { callback: "proxy_on_vm_start", .. }));
}

#[test]
fn a_panic_in_configure_is_a_trap_with_the_critical_panic_log() {
    let err = Plugin::start(&module(), PluginConfig::new(r#"{"panic_in_configure":true}"#)).err().unwrap();
    assert!(matches!(err, StartError::Trapped { callback: "proxy_on_configure", .. }), "{err}");
    assert!(err.logs().iter().any(|l| l.level == LogLevel::Critical && l.message.contains("configure exploded")));
}

#[test]
fn configuration_buffer_exists_only_during_configure() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers": [
                {"op":"get_buffer","type":7,"start":0,"max":100},
                {"op":"get_buffer","type":6,"start":0,"max":100},
                {"op":"get_buffer","type":0,"start":0,"max":100},
                {"op":"get_buffer","type":4,"start":0,"max":100}
            ]}),
        ),
        &mut ok_upstream(),
    );
    // Plugin configuration: NotFound; VM configuration always there (empty → ok:null).
    assert_eq!(results(&x, "request_headers"), ["status:1", "ok:null", "status:1", "status:1"]);
}

#[test]
fn wasi_subset_behaves_as_envoy() {
    let mut p = plugin();
    let x = p.send(
        0,
        ops(
            "GET",
            json!({"request_headers": [
                {"op":"println","msg":"to stdout"},
                {"op":"eprintln","msg":"to stderr"},
                {"op":"fd_write","fd":3,"msg":"x"},
                {"op":"env"},
                {"op":"random","len":65536},
                {"op":"random","len":65537}
            ]}),
        ),
        &mut ok_upstream(),
    );
    let r = results(&x, "request_headers");
    assert_eq!(r, ["ok", "ok", "errno:8:0", "count:0", "errno:0", "errno:28"]);
    assert!(x.logs.iter().any(|l| l.level == LogLevel::Info && l.message == "to stdout"));
    assert!(x.logs.iter().any(|l| l.level == LogLevel::Error && l.message == "to stderr"));
}

#[test]
fn environment_variables_are_only_those_configured() {
    let mut p = start(PluginConfig {
        environment: vec![("A".into(), "1".into()), ("B".into(), "two".into())],
        ..PluginConfig::new("{}")
    });
    let x = p.send(0, ops("GET", json!({"request_headers": [{"op":"env"}]})), &mut ok_upstream());
    assert_eq!(results(&x, "request_headers"), ["count:2"]);
}

#[test]
fn each_vm_has_its_own_root_context_and_streams_count_from_2() {
    let mut p = start(PluginConfig::new("{}").workers(2));
    let a = p.send(0, ops("GET", json!({})), &mut ok_upstream());
    let b = p.send(0, ops("GET", json!({})), &mut ok_upstream());
    let c = p.send(1, ops("GET", json!({})), &mut ok_upstream());
    assert_eq!((a.context_id, b.context_id, c.context_id), (2, 3, 2));
    assert_eq!(a.outcome, Outcome::Completed);
    assert_eq!(c.worker, 1);
}

#[test]
fn workers_are_send_and_round_robin_spreads_requests() {
    fn assert_send<T: Send>() {}
    assert_send::<warden_host::Worker>();
    let mut p = start(PluginConfig::new("{}").workers(3));
    let ws: Vec<usize> = (0..4).map(|_| p.send_round_robin(ops("GET", json!({})), &mut ok_upstream()).worker).collect();
    assert_eq!(ws, [0, 1, 2, 0]);
    let mut workers = p.into_workers();
    let handle = {
        let mut w = workers.pop().unwrap();
        std::thread::spawn(move || w.send(ops("GET", json!({})), &mut ok_upstream()).status)
    };
    assert_eq!(handle.join().unwrap(), Some(200));
}

#[test]
fn the_same_path_compiles_once_per_process() {
    let a = module();
    let b = module();
    assert_eq!(a.exports(), b.exports());
    let t = std::time::Instant::now();
    for _ in 0..10 {
        module();
    }
    assert!(t.elapsed() < std::time::Duration::from_millis(500));
}
