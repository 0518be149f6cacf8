//! `warden-gateway demo`: the README's first command. Signs the example finance bundle with the TEST authority key,
//! starts a small tool server and the gateway on loopback with the bundle inline, sends a scripted set of agent
//! requests over real HTTP with tokens minted by the example TEST issuer, and prints what the filter decided and why.
//!
//! Every row states the status it expects; a row that comes out differently is marked and makes the exit status 1,
//! so the demo doubles as an end-to-end smoke test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use warden_core::envelope::{self, Algorithm, SigningKey};
use warden_host::http_call::{self, CallResult};

use crate::args::{DemoOptions, PluginOptions};
use crate::http::{Handler, Reply, Request, Response, Server};
use crate::proxy::{decision_record, Gateway};
use crate::tokens::Minter;
use crate::vms::{level_name, LogSink};

const BUNDLE_FILE: &str = "finance-agent.json";
const AUTHORITY_KEY: &str = "keys/TEST-ONLY-authority.jwk.json";
const AUTHORITY_JWKS: &str = "keys/TEST-ONLY-authority.jwks.json";
const ISSUER_KEY: &str = "keys/TEST-ONLY-issuer-acme-workload.jwk.json";
const ISSUER: &str = "https://spire.acme.example";
const AGENTS: &str = "spiffe://acme.example/agents/";
const ENVIRONMENT: &str = "prod";
/// Shown without it in the table.
const HOST_SUFFIX: &str = ".acme.example";

/// How a scripted request authenticates.
#[derive(Clone, Copy)]
enum Credential {
    None,
    Valid,
    /// A valid token plus a Transaction-Token-style task (id, purpose) in the agent token's claims.
    WithTask(&'static str, &'static str),
    Expired,
    /// Signed by a key the bundle does not trust, under the trusted key's id.
    ForgedSignature,
}

struct Scenario {
    label: &'static str,
    agent: &'static str,
    credential: Credential,
    method: &'static str,
    host: &'static str,
    path: &'static str,
    body: Option<Value>,
    extra_header: Option<(&'static str, &'static str)>,
    expect: u16,
}

fn scenarios(exception_active: bool) -> Vec<Scenario> {
    let s = |label, agent, credential, method, host, path, expect| Scenario {
        label,
        agent,
        credential,
        method,
        host,
        path,
        body: None,
        extra_header: None,
        expect,
    };
    let pay = "payments.acme.example";
    vec![
        s("read a charge", "finance/reconciler", Credential::Valid, "GET", pay, "/v1/charges/ch_1001", 200),
        Scenario {
            extra_header: Some(("x-warden-agent", "spiffe://acme.example/agents/admin")),
            ..s(
                "forged x-warden-agent",
                "finance/reconciler",
                Credential::Valid,
                "GET",
                pay,
                "/v1/charges/ch_1002",
                200,
            )
        },
        s(
            "void an invoice (exception)",
            "finance/reconciler",
            Credential::Valid,
            "POST",
            "billing.acme.example",
            "/invoices/inv_77/void",
            if exception_active { 200 } else { 403 },
        ),
        Scenario {
            body: Some(json!({"amount": 250000, "currency": "EUR", "destination": "acct_9"})),
            ..s("pay out", "finance/reconciler", Credential::Valid, "POST", pay, "/v1/payouts", 403)
        },
        Scenario {
            body: Some(json!({"charge": "ch_1001", "amount": 1999})),
            ..s(
                "refund a customer",
                "finance/refunds",
                Credential::WithTask("case-4711", "customer-refund"),
                "POST",
                pay,
                "/v1/refunds",
                403,
            )
        },
        s("read a charge", "support/tier1", Credential::Valid, "GET", pay, "/v1/charges/ch_1001", 403),
        s("unknown tool", "finance/reconciler", Credential::Valid, "GET", pay, "/v1/balance", 403),
        s("no token", "finance/reconciler", Credential::None, "GET", pay, "/v1/charges/ch_1001", 401),
        s(
            "forged signature",
            "finance/reconciler",
            Credential::ForgedSignature,
            "GET",
            pay,
            "/v1/charges/ch_1001",
            401,
        ),
        s("expired token", "finance/reconciler", Credential::Expired, "GET", pay, "/v1/charges/ch_1001", 401),
    ]
}

pub fn run(opts: DemoOptions) -> Result<ExitCode> {
    let examples = examples_dir(opts.examples.as_deref())?;
    let bundle_bytes = read(&examples, BUNDLE_FILE)?;
    let bundle: Value = serde_json::from_slice(&bundle_bytes).context("the example bundle is not JSON")?;
    let authority_key =
        SigningKey::from_jwk(&read_json(&examples, AUTHORITY_KEY)?).map_err(|e| anyhow!("{AUTHORITY_KEY}: {e}"))?;
    let signed = envelope::sign(&bundle_bytes, &authority_key);
    let authority = bundle["authority"].as_str().ok_or_else(|| anyhow!("{BUNDLE_FILE}: no `authority`"))?;
    let configuration = json!({
        "environment": ENVIRONMENT,
        "authority": authority,
        "bundle_keys": read_json(&examples, AUTHORITY_JWKS)?,
        "inline_bundle": signed,
    });
    if opts.print_config {
        println!("{configuration:#}");
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let exception_active = bundle["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == "q4-close-void-invoices")
        .and_then(|r| r["expires_at"].as_str())
        .and_then(warden_core::time::parse_rfc3339)
        .is_some_and(|exp| now < exp);

    let tools = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), tool_server())?;
    let records: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let sink_records = records.clone();
    let sink: LogSink = Arc::new(move |l| match decision_record(&l.message) {
        Some(r) => {
            let id = r["decision_id"].as_str().unwrap_or_default().to_string();
            lock(&sink_records).insert(id, r);
        }
        None if l.level >= warden_host::LogLevel::Warn => eprintln!("[{} vm{}] {}", level_name(l), l.vm, l.message),
        None => {}
    });
    let plugin = PluginOptions {
        wasm: opts.wasm.clone(),
        config: None,
        workers: opts.workers,
        clusters: Vec::new(),
        allow_on_headers_stop_iteration: false,
        fail_open: false,
    };
    let gateway = Gateway::start(
        &plugin,
        configuration.to_string().into_bytes(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        tools.addr(),
        sink,
        false,
    )?;

    println!("Warden demo");
    println!(
        "  bundle    {} revision {} signed by {} (kid {}), TEST keys from {}",
        BUNDLE_FILE,
        bundle["revision"],
        authority,
        authority_key.kid(),
        examples.display()
    );
    println!(
        "  gateway   http://{} ({} worker VMs of {}), environment `{ENVIRONMENT}`",
        gateway.addr(),
        gateway.workers(),
        opts.wasm.display()
    );
    println!("  upstream  http://{} (a tool server: answers 200 and echoes what it received)", tools.addr());
    println!("  agents    spiffe://acme.example/agents/…, tokens minted with the TEST issuer key of {ISSUER}");
    println!("  hosts     *{HOST_SUFFIX}");
    println!();

    let minter = Minter::from_jwk(&read_json(&examples, ISSUER_KEY)?)?;
    let forger = forged_minter(&read_json(&examples, ISSUER_KEY)?)?;
    let mut rows = Vec::new();
    let mut step_up_body = None;
    let mut unexpected = 0;
    for (i, sc) in scenarios(exception_active).iter().enumerate() {
        let token = match sc.credential {
            Credential::None => None,
            Credential::Valid => Some(minter.mint(&claims(sc.agent, now, 300, None))?),
            Credential::WithTask(id, purpose) => Some(minter.mint(&claims(sc.agent, now, 300, Some((id, purpose))))?),
            Credential::Expired => Some(minter.mint(&claims(sc.agent, now - 1200, 600, None))?),
            Credential::ForgedSignature => Some(forger.mint(&claims(sc.agent, now, 300, None))?),
        };
        let mut headers = vec![
            (":method".to_string(), sc.method.to_string()),
            (":path".to_string(), sc.path.to_string()),
            (":authority".to_string(), sc.host.to_string()),
            ("user-agent".to_string(), "warden-demo".to_string()),
        ];
        if let Some(t) = token {
            headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        if let Some((k, v)) = sc.extra_header {
            headers.push((k.into(), v.into()));
        }
        let body = sc.body.as_ref().map(|b| b.to_string().into_bytes()).unwrap_or_default();
        if !body.is_empty() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let response = match http_call::request(gateway.addr(), &headers, &body) {
            CallResult::Response(r) => r,
            CallResult::Reset => bail!("request {}: the gateway reset the connection", i + 1),
        };
        let status = response.status().unwrap_or(0);
        let reply_body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let header = |n: &str| response.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        // The decision id: on a refusal from the reply, on an allow from what the tool server saw.
        let decision_id = header("x-warden-decision-id")
            .or_else(|| reply_body["saw"]["x-warden-decision-id"].as_str().map(str::to_string))
            .unwrap_or_default();
        let record = lock(&records).get(&decision_id).cloned().unwrap_or(Value::Null);
        let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
        let (decision, rule, reason) = if record.is_null() {
            (text(&reply_body["decision"]), text(&reply_body["rule"]), text(&reply_body["reason"]))
        } else {
            (text(&record["decision"]), text(&record["rule"]), text(&record["reason"]))
        };
        if reason == "step_up_required" || decision == "step_up" {
            step_up_body = Some(String::from_utf8_lossy(&response.body).into_owned());
        }
        let upstream_saw = match reply_body["saw"]["x-warden-agent"].as_str() {
            Some(a) => format!("agent {}", short(a)),
            None if status == 200 => "(no identity header)".into(),
            None => "-".into(),
        };
        let ok = status == sc.expect;
        if !ok {
            unexpected += 1;
        }
        rows.push(vec![
            format!("{}{}", i + 1, if ok { "" } else { " !" }),
            sc.label.to_string(),
            sc.agent.to_string(),
            format!("{} {} {}", sc.method, sc.host.strip_suffix(HOST_SUFFIX).unwrap_or(sc.host), sc.path),
            status.to_string(),
            decision,
            rule,
            reason,
            upstream_saw,
        ]);
    }
    print_table(&["#", "scenario", "agent", "request", "status", "decision", "rule", "reason", "upstream saw"], &rows);
    println!();
    if let Some(b) = step_up_body {
        println!("The step-up reply the agent receives (row 5):\n  {b}\n");
    }
    let n = lock(&records).len();
    println!(
        "{n} decision records were logged, one per request, with agent, task, tool, rule, reason and bundle revision\n\
         (`warden-gateway serve` prints them as JSON lines). In row 2 the client's forged x-warden-agent header was\n\
         removed and the upstream saw the verified agent instead."
    );
    if unexpected > 0 {
        eprintln!("warden-gateway demo: {unexpected} request(s) did not get the expected status (marked `!`)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Claims of the example `acme-workload` issuer (`sub` is the agent, `task_*` the task).
fn claims(agent: &str, iat: i64, lifetime: i64, task: Option<(&str, &str)>) -> Value {
    let mut c = json!({
        "iss": ISSUER,
        "aud": "warden",
        "sub": format!("{AGENTS}{agent}"),
        "iat": iat,
        "exp": iat + lifetime,
        "jti": format!("demo-{agent}-{iat}"),
    });
    if let Some((id, purpose)) = task {
        c["task_id"] = json!(id);
        c["task_purpose"] = json!(purpose);
        c["task_exp"] = json!(iat + lifetime);
    }
    c
}

/// A fresh Ed25519 key that claims the trusted key's id: its tokens carry a bad signature.
fn forged_minter(trusted: &Value) -> Result<Minter> {
    let kid = trusted["kid"].as_str().ok_or_else(|| anyhow!("{ISSUER_KEY}: no `kid`"))?;
    let key = SigningKey::generate(Algorithm::EdDSA, kid).map_err(|e| anyhow!("cannot generate a key: {e}"))?;
    Minter::from_jwk(&key.private_jwk())
}

/// The tool server: answers 200 with what it received (path and the identity headers the gateway forwarded).
fn tool_server() -> Handler {
    Arc::new(|req: Request| {
        let mut saw = json!({"method": req.method, "path": req.target});
        for name in ["x-warden-agent", "x-warden-task", "x-warden-decision-id"] {
            if let Some(v) = req.header(name) {
                saw[name] = json!(v);
            }
        }
        Reply::Respond(Response::json(200, &json!({"ok": true, "saw": saw})))
    })
}

fn examples_dir(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let candidates =
        [PathBuf::from("policies/examples"), Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples")];
    candidates.into_iter().find(|p| p.join(BUNDLE_FILE).is_file()).ok_or_else(|| {
        anyhow!("cannot find policies/examples/{BUNDLE_FILE}: run from the repository root or pass --examples DIR")
    })
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_json(dir: &Path, name: &str) -> Result<Value> {
    serde_json::from_slice(&read(dir, name)?).with_context(|| format!("{}: not JSON", dir.join(name).display()))
}

fn short(agent: &str) -> &str {
    agent.strip_prefix(AGENTS).unwrap_or(agent)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    line(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(String::as_str).collect());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
