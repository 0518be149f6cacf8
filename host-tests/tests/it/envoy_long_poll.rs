//! Long polling through real Envoy (two workers): with `control.long_poll_wait_seconds`, `warden serve` holds the
//! filter's conditional GET until a revision is published, the revocation it carries reaches every VM (each VM that
//! activated the first revision activates the revoking one, woken through its shared queue), and polling survives
//! the control endpoint restarting on the same port; against nginx, which ignores `Prefer`, the filter falls back to
//! plain polls every `poll_seconds`. In the host too, the publishing VM wakes the others through their queues. No
//! durations are asserted (the `revocation` bench measures them).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_host::envoy::{Envoy, EnvoyOptions};
use warden_host::upstream::{RecordingServer, Reply as ToolReply};
use warden_host::HttpRequest;

use crate::e2e_nginx::Nginx;
use crate::support::envoy::{now, request_id};
use crate::support::live::{self, bundle, revoking_bundle, sign, Owner, BOT, CLUSTER, CRM};
use crate::support::warden_wasm;

const BOT2: &str = "spiffe://acme.example/agents/support/bot-2";
const WAIT: u64 = 30;

struct Live {
    envoy: Envoy,
    _tools: RecordingServer,
}

fn start(control: std::net::SocketAddr) -> Live {
    let c = json!({"poll_seconds": 1, "jitter_percent": 0, "timeout_ms": 1000, "backoff_max_seconds": 2,
                   "long_poll_wait_seconds": WAIT});
    let config = live::config(c, None);
    let tools = RecordingServer::canned(ToolReply::ok("from the tool")).unwrap();
    let opts =
        EnvoyOptions::new(warden_wasm(), config.to_string(), tools.addr).cluster(CLUSTER, control).concurrency(2);
    Live { envoy: Envoy::start(&opts).unwrap_or_else(|e| panic!("{e}")), _tools: tools }
}

/// `agent` reads a contact: `(reason, revision, vm)`, reason `allowed` when the tool answered.
fn read(l: &Live, agent: &str) -> (String, Option<u64>, String) {
    let id = request_id();
    let t = live::token(agent, now());
    let req = HttpRequest::new("GET", "/contacts/1")
        .authority(CRM)
        .header("authorization", &format!("Bearer {t}"))
        .header("x-request-id", &id);
    let r = l.envoy.send(&req).unwrap();
    let record = l.envoy.access_log_entry(&id, Duration::from_secs(2)).and_then(|e| e.record).unwrap_or(Value::Null);
    let vm = record["vm"].as_str().unwrap_or("").to_string();
    let revision = record["revision"].as_u64();
    if r.status == 200 && r.body_str() == "from the tool" {
        return ("allowed".into(), revision, vm);
    }
    (r.json()["reason"].as_str().unwrap_or("").into(), revision, vm)
}

fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The activation count once every VM activated the first revision (workers and Envoy's main-thread VMs) and it
/// stopped growing.
fn settled_activations(l: &Live) -> i64 {
    let workers = i64::try_from(l.envoy.concurrency()).unwrap();
    let reached = l.envoy.wait_stat("warden.bundle.activations", Duration::from_secs(10), |v| v > workers);
    assert!(reached > workers, "every VM activated the first revision: {reached}");
    let mut last = reached;
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = l.envoy.warden_stat("warden.bundle.activations");
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits until `vms` more activations were counted than `before` (each VM that had the previous revision activated
/// the new one) and `n` requests of `agent` in a row answer `reason`; returns the VMs the answers came from.
fn enforced_everywhere(l: &Live, before: i64, vms: i64, agent: &str, reason: &str) -> BTreeSet<String> {
    let all = l.envoy.wait_stat("warden.bundle.activations", Duration::from_secs(10), |v| v >= before + vms);
    assert_eq!(all, before + vms, "every VM that had the previous revision activated the new one");
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let (got, _, vm) = read(l, agent);
        assert_eq!(got, reason, "{agent} on VM {vm}");
        seen.insert(vm);
    }
    seen
}

#[test]
fn long_polling_delivers_a_revocation_to_every_worker_and_survives_the_endpoint_restarting() {
    let owner = Owner::new();
    std::fs::write(owner.bundles().join("bundle.jws"), owner.sign_with_cli(&bundle(1))).unwrap();
    let serve = owner.serve();
    let addr = serve.addr;
    let l = start(addr);
    let vms = settled_activations(&l);
    assert_eq!(read(&l, BOT).0, "allowed");

    // The endpoint holds the conditional GET: with 1 s polls there would be a 304 a second; a held request answers
    // nothing until a revision is published (or the 30 s wait ends).
    let not_modified = l.envoy.warden_stat("warden.bundle.fetch.not_modified");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(l.envoy.warden_stat("warden.bundle.fetch.not_modified"), not_modified, "the long poll is held");
    let long_polls = l.envoy.warden_stat("warden.bundle.fetch.long_poll");
    let wakeups = l.envoy.warden_stat("warden.bundle.wakeups");

    // Revision 2 revokes the bot: the held request answers with it, and every VM enforces it.
    let (status, body, _) = serve.upload("bundle.jws", &owner.sign_with_cli(&revoking_bundle(2)), live::UPLOAD_TOKEN);
    assert_eq!(status, 200, "{body}");
    let uploaded = Instant::now();
    let seen = enforced_everywhere(&l, vms, vms, BOT, "revoked_agent");
    eprintln!("revision 2 enforced by {vms} VMs {:?} after the upload; answers from {seen:?}", uploaded.elapsed());
    assert!(l.envoy.warden_stat("warden.bundle.fetch.long_poll") > long_polls, "delivered by a long poll");
    assert!(
        l.envoy.warden_stat("warden.bundle.wakeups") > wakeups,
        "the fetching VM woke the others through their shared queues"
    );
    assert_eq!(read(&l, BOT2).0, "allowed");

    // The endpoint goes away (the held request fails) and comes back on the same port; the next revision, revoking
    // a second agent, is enforced everywhere too.
    drop(serve);
    let failures = |l: &Live| -> i64 {
        ["connect", "reset"].iter().map(|c| l.envoy.warden_stat(&format!("warden.bundle.fetch.failure.{c}"))).sum()
    };
    assert!(eventually(Duration::from_secs(10), || failures(&l) > 0), "the fetches fail while the endpoint is down");
    assert_eq!(read(&l, BOT).0, "revoked_agent", "the last good bundle stays");
    let serve = owner.serve_on(&addr.to_string());
    assert_eq!(serve.addr, addr);
    let before = l.envoy.warden_stat("warden.bundle.activations");
    let mut third = revoking_bundle(3);
    third["revocations"] = json!({"agents": [BOT, BOT2]});
    // Upload once the filter is long polling again (a held request is answered by the upload).
    let long_polls = l.envoy.warden_stat("warden.bundle.fetch.long_poll");
    let (status, body, _) = serve.upload("bundle.jws", &owner.sign_with_cli(&third), live::UPLOAD_TOKEN);
    assert_eq!(status, 200, "{body}");
    let seen = enforced_everywhere(&l, before, vms, BOT2, "revoked_agent");
    eprintln!("revision 3 (after the restart) enforced by {vms} VMs; answers from {seen:?}");
    assert_eq!(read(&l, BOT).0, "revoked_agent");
    assert!(
        eventually(Duration::from_secs(5), || l.envoy.warden_stat("warden.bundle.fetch.long_poll") > long_polls),
        "long polling resumed after the restart"
    );
    assert_eq!(l.envoy.warden_stat("warden.bundle.revision"), 3);
}

#[test]
fn against_nginx_long_polling_falls_back_to_plain_polls() {
    let nginx = Nginx::start();
    nginx.publish(&sign(&bundle(11)));
    let l = start(nginx.addr);
    let vms = settled_activations(&l);
    // nginx answers the conditional GET at once without `Preference-Applied`: a 304 every poll period.
    let not_modified = l.envoy.warden_stat("warden.bundle.fetch.not_modified");
    let more = l.envoy.wait_stat("warden.bundle.fetch.not_modified", Duration::from_secs(6), |v| v > not_modified + 1);
    assert!(more > not_modified + 1, "plain polls go on: {not_modified} -> {more}");
    assert_eq!(l.envoy.warden_stat("warden.bundle.fetch.long_poll"), 0, "nginx never applied a wait");
    // nginx's ETag is mtime-size: wait a second so the new file's differs even at equal size.
    std::thread::sleep(Duration::from_millis(1100));
    nginx.publish(&sign(&revoking_bundle(12)));
    let seen = enforced_everywhere(&l, vms, vms, BOT, "revoked_agent");
    eprintln!("revision 12 from nginx enforced by {vms} VMs; answers from {seen:?}");
    assert_eq!(l.envoy.warden_stat("warden.bundle.revision"), 12);
}

/// The host delivers the wake-up as Envoy does (`on_queue_ready` on the VM that registered the queue): on a manual
/// clock, one second after start one VM fetched and every VM enforces the bundle, without another tick.
#[test]
fn in_the_host_the_publishing_vm_wakes_the_others_before_their_next_tick() {
    let server = live::ControlServer::start(live::Reply::bundle(&sign(&bundle(5))));
    let mut p = live::start(&live::config(json!({"poll_seconds": 5, "jitter_percent": 0}), None), 3, server.addr);
    live::step1(&mut p, 1);
    assert_eq!(server.requests(), 1, "one VM fetched");
    assert_eq!(live::revisions(&mut p), vec![Some(5); 3], "every VM adopted it at once");
    assert_eq!(live::metric(&p, "warden.bundle.wakeups"), 2, "the two others were woken");
    assert_eq!(live::metric(&p, "warden.bundle.activations"), 3);
}
