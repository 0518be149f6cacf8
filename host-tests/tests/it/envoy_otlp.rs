//! Decision records exported through Envoy's OpenTelemetry access logger, as shipped: real Envoy 1.40 with
//! `envoy/observability/otel-access-log.yaml` loaded as is (only the collector's address changed) and a loopback
//! OTLP/gRPC receiver (`host-tests/tests/otlp_receiver.py`, grpcio and the OTLP protobufs). Each request's log
//! record must carry the whole decision record as its body and the decision's main fields as attributes, read from
//! the filter-state keys the filter writes with `decision_fields` on.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::envoy::{now, Gateway};
use crate::support::filter::{authed, bundle_at, claims, config, request, sign, token, CRM, SUPPORT_BOT, TASK_ID};
use crate::support::{python, repo};

/// The receiver process: killed when the test ends, pass or fail.
struct Receiver {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    records: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start() -> Receiver {
        let py = python();
        let script = repo().join("host-tests/tests/otlp_receiver.py");
        let mut child = Command::new(&py)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}): run scripts/python-env.sh", py.display()));
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_else(|| panic!("{} printed no port", script.display()));
        let port = serde_json::from_str::<Value>(&first).ok().and_then(|v| v["port"].as_u64()).expect("port line");
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Receiver { child, _stdin: stdin, port: u16::try_from(port).expect("port"), records }
    }

    /// The log record whose `decision_id` attribute is `id`, waiting for Envoy's next flush.
    fn record(&self, id: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(r) = self.records.lock().unwrap().iter().find(|r| r["attributes"]["decision_id"] == id) {
                return r.clone();
            }
            assert!(Instant::now() < until, "no OTLP log record for decision {id}: {:?}", self.records.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The shipped access logger and cluster, the cluster pointed at `port` on loopback.
fn shipped(port: u16) -> (Value, Value) {
    let path = repo().join("envoy/observability/otel-access-log.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let logger = doc["access_log"][0].clone();
    let mut cluster = doc["clusters"][0].clone();
    assert_eq!(logger["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"], cluster["name"]);
    let address = &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
    address["socket_address"] = json!({"address": "127.0.0.1", "port_value": port});
    (logger, cluster)
}

#[test]
fn decision_records_reach_an_otlp_collector_with_their_fields_as_attributes() {
    let receiver = Receiver::start();
    let (logger, cluster) = shipped(receiver.port);
    let mut config = config(Some(&sign(&bundle_at(now()))));
    config["decision_fields"] = json!(true);
    let gateway = Gateway::start_with(&config, false, |o| o.access_logger(logger).raw_cluster(cluster));

    // An allowed call: every field has a value.
    let allowed = gateway.send(authed("GET", CRM, "/api/v2/x/../contacts/42", &token(&claims(SUPPORT_BOT, now()))));
    allowed.assert_forwarded();
    let record = allowed.record();
    let id = record["decision_id"].as_str().expect("decision_id");
    let log = receiver.record(id);
    let attributes = &log["attributes"];
    assert_eq!(attributes["warden.decision"], "allow");
    assert_eq!(attributes["warden.reason"], "allowed_by_rule");
    assert_eq!(attributes["warden.rule"], record["rule"]);
    assert_eq!(attributes["warden.tool"], record["tool"]);
    assert_eq!(attributes["warden.agent"], SUPPORT_BOT);
    assert_eq!(attributes["warden.task"], TASK_ID);
    // OPA's consumers read a bundle revision as a string.
    assert_eq!(attributes["bundles.warden.revision"], record["bundles"]["warden"]["revision"].to_string());
    // The path the gateway decided (normalized) is what Envoy's formatter sees.
    assert_eq!(attributes["path"], "/api/v2/contacts/42");
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(attributes["http.response.status_code"], "200");
    // The body is the whole record, byte for byte what the file access log printed.
    let body: Value = serde_json::from_str(log["body"].as_str().expect("string body")).expect("JSON body");
    assert_eq!(body, record);
    assert_eq!(log["resource"]["log_name"], "warden_decisions");

    // A refusal before identity: the fields that have no value are not written, which Envoy's formatter sends as
    // `-`.
    let refused = gateway.send(request("GET", CRM, "/api/v2/contacts/42"));
    let record = refused.record();
    let log = receiver.record(record["decision_id"].as_str().expect("decision_id"));
    let attributes = &log["attributes"];
    assert_eq!(attributes["warden.decision"], "deny");
    assert_eq!(attributes["warden.reason"], "identity_missing");
    assert_eq!(attributes["http.response.status_code"], "401");
    for absent in ["warden.agent", "warden.task", "warden.mcp_method"] {
        assert_eq!(attributes[absent], "-", "{absent} has no value on a refusal before identity");
    }
    assert_eq!(attributes["warden.tool"], "crm.contacts.read", "the tool is known before identity");
}

#[test]
fn without_decision_fields_only_the_whole_record_is_written() {
    let receiver = Receiver::start();
    let (logger, cluster) = shipped(receiver.port);
    let gateway = Gateway::start_with(&config(Some(&sign(&bundle_at(now())))), false, |o| {
        o.access_logger(logger).raw_cluster(cluster)
    });
    let seen = gateway.send(authed("GET", CRM, "/api/v2/contacts/42", &token(&claims(SUPPORT_BOT, now()))));
    let record = seen.record();
    // No decision_id attribute to find the log record by: find it by its body.
    let until = Instant::now() + Duration::from_secs(15);
    let log = loop {
        let found = receiver
            .records
            .lock()
            .unwrap()
            .iter()
            .find(|r| r["body"].as_str().and_then(|b| serde_json::from_str::<Value>(b).ok()).as_ref() == Some(&record))
            .cloned();
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < until, "no OTLP log record with the decision record as body");
        std::thread::sleep(Duration::from_millis(100));
    };
    for key in ["decision_id", "warden.decision", "warden.reason", "warden.rule"] {
        assert_eq!(log["attributes"][key], "-", "{key} is not written without decision_fields");
    }
}
