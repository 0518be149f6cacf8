//! Policy test cases (`*.cases.json`): a request, or the bare facts of one, and the decision it must get. Every case
//! with a request runs through the gate's driver ([`crate::gate::driver`]) exactly as warden.wasm runs a request,
//! so `warden test` and the equivalence test give the gateway's answer. The format is documented in
//! `policies/README.md` ("Policy tests").
//!
//! Identity: `agent` states the verified agent's facts (or `"missing"`, or a token failure code). When the suite's
//! `defaults.keys` holds the private key of the agent's issuer, the facts are minted into a real agent token
//! (claims as the issuer's mapping and profile want them) that the gate verifies; otherwise the facts are taken as
//! established. `txn_token` mints a Transaction Token the same way, `peer` is the mTLS peer URI SAN (sender
//! binding), `approval` mints an approval for the call from the step-up reply of the same request (the approver's
//! key from `defaults.keys`; `claims` overrides any claim, to test a refused approval) and presents it on a retry.
//! `listed_before` (an MCP case) is what the server listed earlier on the same VM: the case first sends a
//! `tools/list` with the same identity, answered with those tools, then its request, with the VM's memory of pinned
//! tools that listing left ([`crate::pins::PinMemory`]): a call of a tool whose definition changed (a rug pull).
//!
//! Cases of one file run in order against one shared-data store ([`Context::store`]), as one gateway: a limit
//! counts the allowed calls of the cases before (a sequence of cases exercises it), and windows follow each case's
//! `time`. Cases with `tool` (facts only) are not counted: limits apply to requests.
//!
//! Nothing here reads files or a clock: keys come in as [`SigningKey`]s, times from the cases.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::approval::{self, ApprovalGrant};
use crate::bundle::{Bundle, Issuer, TokenProfile};
use crate::compile::CompiledBundle;
use crate::config::GateConfig;
use crate::decide::decide_with_args;
use crate::decision::Decision;
use crate::envelope::{sign_typed, SigningKey};
use crate::explain::{explain_call, explain_gate, Explanation};
use crate::facts::{Agent, Facts, Identity, Task, TokenFailure};
use crate::gate::driver::{self, Exchange, Run};
use crate::gate::{Credentials, MemoryStore};
use crate::identity::trust_domain;
use crate::pins::PinMemory;
use crate::request::RecordedRequest;
use crate::time::parse_rfc3339;

/// A file of cases: `{"defaults": {...}, "cases": [...]}` or a bare list of cases.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    #[serde(default)]
    pub defaults: Defaults,
    pub cases: Vec<Case>,
}

impl Suite {
    /// Parses either shape; the error keeps serde's line and column.
    pub fn parse(text: &str) -> Result<Suite, serde_json::Error> {
        if text.trim_start().starts_with('[') {
            serde_json::from_str::<Vec<Case>>(text).map(|cases| Suite { defaults: Defaults::default(), cases })
        } else {
            serde_json::from_str::<Suite>(text)
        }
    }
}

/// What every case of a file shares.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    /// Private JWKs by issuer or approver id, as paths relative to the cases file (TEST keys): agent tokens,
    /// Transaction Tokens and approvals are minted with them.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub agent: AgentSpec,
    /// A Transaction Token to present (minted with the key of its issuer).
    #[serde(default)]
    pub txn_token: Option<TxnSpec>,
    /// The mTLS peer's URI SAN.
    #[serde(default)]
    pub peer: Option<String>,
    /// A catalog tool id: decide on the facts alone, no request (not with `http` or `mcp`).
    #[serde(default)]
    pub tool: Option<String>,
    /// The call's arguments, with `tool`.
    #[serde(default)]
    pub arguments: Option<Value>,
    #[serde(default)]
    pub http: Option<HttpSpec>,
    #[serde(default)]
    pub mcp: Option<McpSpec>,
    /// Further request headers (`[[name, value], ...]` or `{name: value}`).
    #[serde(default, deserialize_with = "crate::request::deserialize_headers")]
    pub headers: Vec<(String, String)>,
    /// The request body as text (an HTTP body, or an MCP body instead of `mcp.message`).
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub approval: Option<ApprovalSpec>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    /// The tools (a `tools/list` result's `tools` array) the MCP server listed on this VM before the request.
    #[serde(default)]
    pub listed_before: Option<Vec<Value>>,
    pub expect: Expect,
}

/// The `tools/list` a case with `listed_before` sends first: the case's request (its identity headers included)
/// with a `tools/list` body, and the JSON answer the server gives it.
pub fn listing_before(request: &RecordedRequest, tools: &[Value]) -> (RecordedRequest, Vec<u8>) {
    let mut list = request.clone();
    list.body = Some(json!({"jsonrpc": "2.0", "id": 0, "method": "tools/list"}).to_string());
    list.body_base64 = None;
    list.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("mcp-method") && !k.eq_ignore_ascii_case("mcp-name"));
    let answer = json!({"jsonrpc": "2.0", "id": 0, "result": {"tools": tools}});
    (list, answer.to_string().into_bytes())
}

/// The caller's identity.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AgentSpec {
    /// `"missing"` (no token) or a token failure code (`"token_expired"`, ...).
    Code(String),
    Facts(AgentFacts),
}

/// A verified agent's facts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFacts {
    pub id: String,
    /// The bundle issuer id.
    pub issuer: String,
    #[serde(default)]
    pub token_id: Option<String>,
    #[serde(default)]
    pub task: Option<TaskFacts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFacts {
    pub id: String,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A Transaction Token: `txn` and `purp`, for the agent (`sub`, unless `subject` says otherwise).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnSpec {
    /// The bundle issuer id (a `txn_token` issuer).
    pub issuer: String,
    pub txn: String,
    pub purpose: String,
    /// The task's expiry (`exp`); default five minutes after the case's time.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub host: String,
    pub method: String,
    pub path: String,
}

/// An MCP request: `POST` (unless `method` says otherwise) of `message` (a JSON-RPC message or batch) to an MCP
/// server's endpoint, `content-type: application/json` unless `headers` set one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSpec {
    pub host: String,
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub message: Option<Value>,
}

/// Present an approval for the call on a retry, minted from the step-up reply of the first try.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// The bundle approver id (its key in `defaults.keys`).
    pub approver: String,
    #[serde(default)]
    pub approved_by: Option<String>,
    /// Claims to set or replace (e.g. another `arguments_digest`, to test a refused approval).
    #[serde(default)]
    pub claims: Map<String, Value>,
}

/// The expected outcome; omitted fields are not checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub decision: String,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The HTTP status the client gets (200: the request went on).
    #[serde(default)]
    pub status: Option<u16>,
}

impl Expect {
    /// Whether the run meets the expectation; `Err` when the expectation itself is malformed.
    pub fn met_by(&self, run: &CaseRun) -> Result<bool, String> {
        if !["allow", "deny", "step_up"].contains(&self.decision.as_str()) {
            return Err(format!("expect.decision {:?} is not allow, deny or step_up", self.decision));
        }
        let d = &run.decision;
        Ok(self.decision == d.outcome.as_str()
            && self.rule.as_ref().is_none_or(|r| r == d.rule_id())
            && self.reason.as_ref().is_none_or(|r| r == d.reason.code())
            && self.status.is_none_or(|s| s == run.status))
    }

    /// In words, for a failure report.
    pub fn describe(&self) -> String {
        let mut s = self.decision.clone();
        if let Some(rule) = &self.rule {
            s.push_str(&format!(", rule {rule}"));
        }
        if let Some(reason) = &self.reason {
            s.push_str(&format!(", reason {reason}"));
        }
        if let Some(status) = self.status {
            s.push_str(&format!(", status {status}"));
        }
        s
    }
}

/// What a case came to.
#[derive(Debug)]
pub struct CaseRun {
    pub decision: Decision,
    /// The status the client got (200: the request went on).
    pub status: u16,
    pub explanation: Explanation,
    pub environment: String,
    /// The case's clock, seconds since the epoch.
    pub now: i64,
    /// The request as it was run last, tokens and approval in its headers (`None` for a facts-only case).
    pub request: Option<RecordedRequest>,
    /// The identity was stated as facts (no token carried it), so only the gate's core saw this request.
    pub identity_stated: bool,
    /// The decision record of the last run.
    pub record: Option<String>,
}

/// Everything a case is run against.
pub struct Context<'a> {
    /// The bundle as authored (issuer claim mappings and profiles, for minting tokens).
    pub bundle: &'a Bundle,
    pub compiled: &'a CompiledBundle,
    pub defaults: &'a Defaults,
    /// The keys of `defaults.keys`, loaded.
    pub keys: &'a BTreeMap<String, SigningKey>,
    /// Shared data across the cases of one file, in order (`MemoryStore::default()` per file), as one gateway's
    /// across its requests: limits count every earlier case's allowed calls, and an approval is used once.
    pub store: &'a RefCell<MemoryStore>,
}

fn time(value: &str, field: &str) -> Result<i64, String> {
    parse_rfc3339(value).ok_or_else(|| format!("{field} {value:?} is not an RFC 3339 UTC time"))
}

/// How long minted tokens live: five minutes, or the issuer's limit when lower.
const MINTED_LIFETIME: i64 = 300;

impl Context<'_> {
    /// Runs case number `index` (used to make the `jti` of minted tokens unique). `Err`: the case is wrong (it names
    /// something the bundle or the keys lack, or gives an impossible combination).
    pub fn run(&self, index: usize, case: &Case) -> Result<CaseRun, String> {
        let now = match case.time.as_ref().or(self.defaults.time.as_ref()) {
            Some(t) => time(t, "time")?,
            None => self.compiled.issued_at,
        };
        let environment = case
            .environment
            .clone()
            .or_else(|| self.defaults.environment.clone())
            .ok_or("no environment: set `environment` in the case or in `defaults`")?;
        match (&case.tool, &case.http, &case.mcp) {
            (Some(tool), None, None) => self.run_facts(case, tool, environment, now),
            (None, Some(_), None) | (None, None, Some(_)) => self.run_request(index, case, environment, now),
            _ => Err("give exactly one of `tool`, `http` and `mcp`".to_string()),
        }
    }

    /// A case without a request: the facts decided by `decide_with_args`.
    fn run_facts(&self, case: &Case, tool: &str, environment: String, now: i64) -> Result<CaseRun, String> {
        if case.approval.is_some() || case.txn_token.is_some() || case.body.is_some() || !case.headers.is_empty() {
            return Err("`approval`, `txn_token`, `body` and `headers` need a request: give `http` or `mcp`".into());
        }
        let tool =
            self.compiled.tool_by_id(tool).ok_or_else(|| format!("tool {tool:?} is not in the bundle's catalog"))?;
        let identity = self.stated_identity(&case.agent, case.peer.as_deref(), now)?;
        let facts = Facts { environment: environment.clone(), identity, tool: Some(tool) };
        let decision = decide_with_args(self.compiled, &facts, case.arguments.as_ref(), now);
        let explanation = explain_call(self.compiled, &facts, case.arguments.as_ref(), now);
        let status = decision.http_status();
        Ok(CaseRun {
            decision,
            status,
            explanation,
            environment,
            now,
            request: None,
            identity_stated: true,
            record: None,
        })
    }

    /// A case with a request: through the gate, tokens minted where the keys allow, retried with an approval.
    fn run_request(&self, index: usize, case: &Case, environment: String, now: i64) -> Result<CaseRun, String> {
        if case.arguments.is_some() {
            return Err("`arguments` go with `tool`; an MCP call carries them in `mcp.message`".into());
        }
        let config = GateConfig::new(&environment);
        let mut request = self.request(case)?;
        let mut given = None;
        match &case.agent {
            AgentSpec::Code(code) if code == "missing" => {}
            AgentSpec::Facts(a) if self.keys.contains_key(&a.issuer) => {
                let token = self.agent_token(a, index, now)?;
                request.headers.push((config.token_header.clone(), format!("Bearer {token}")));
            }
            other => given = Some(self.stated_identity(other, case.peer.as_deref(), now)?),
        }
        if let Some(txn) = &case.txn_token {
            if given.is_some() {
                return Err("`txn_token` needs the agent's token: add its issuer's key to `defaults.keys`".into());
            }
            let agent_id = match &case.agent {
                AgentSpec::Facts(a) => a.id.as_str(),
                AgentSpec::Code(_) => "",
            };
            request.headers.push((config.txn_token_header.clone(), self.txn_token(txn, agent_id, index, now)?));
        }
        request.validate().map_err(|e| format!("the request: {e}"))?;
        let mut store = self.store.try_borrow_mut().map_err(|_| "the cases' store is in use".to_string())?;
        let mut listed = PinMemory::default();
        if let Some(tools) = &case.listed_before {
            if case.mcp.is_none() {
                return Err("`listed_before` goes with an `mcp` request".into());
            }
            let (list, answer) = listing_before(&request, tools);
            let mut exchange = Exchange::from_recorded(&list, now).map_err(|e| format!("the listing: {e}"))?;
            if let Some(identity) = given.clone() {
                exchange.credentials = Credentials::Given(identity);
            }
            exchange.response = Some(driver::Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: answer,
            });
            exchange.listed = Some(&mut listed);
            let run = driver::run(&config, Some(self.compiled), exchange, &mut *store);
            if run.response_body.is_none() {
                let d = run.flow.decision();
                return Err(format!(
                    "`listed_before`: the tools/list was not let through ({}, {})",
                    d.outcome.as_str(),
                    d.reason.code()
                ));
            }
        }
        let first = self.drive(&config, &request, given.clone(), now, &mut store, &mut listed)?;
        let Some(spec) = &case.approval else {
            return Ok(self.finish(first, request, given.is_some(), environment, now));
        };
        let Some(info) = first.flow.step_up() else {
            let d = first.flow.decision();
            return Err(format!(
                "`approval` is for a step-up call; without one this call is decided {} ({})",
                d.outcome.as_str(),
                d.reason.code()
            ));
        };
        let key = self.key(&spec.approver)?;
        let approver = self
            .bundle
            .approvers
            .iter()
            .find(|a| a.id == spec.approver)
            .ok_or_else(|| format!("approval.approver {:?} is not one of the bundle's approvers", spec.approver))?;
        let ttl = MINTED_LIFETIME.min(i64::try_from(info.max_age_seconds).unwrap_or(i64::MAX)).max(1);
        // A reply given at the head (before the body was read) has no digest of the body: taken from the request,
        // as an approval service would from the body it is shown.
        let digest = match (&info.arguments_digest, &info.binding) {
            (Some(d), _) => d.clone(),
            (None, Some(binding)) => {
                let body = request.body_bytes().map_err(|e| format!("the request: {e}"))?;
                binding.with_body(&body).digest().unwrap_or_default()
            }
            (None, None) => String::new(),
        };
        let jti = format!("case-{index}-approval");
        let mut claims = approval::claims(&ApprovalGrant {
            iss: &approver.iss,
            approved_by: spec.approved_by.as_deref(),
            jti: &jti,
            issued_at: now,
            expires_at: now + ttl,
            agent: info.agent.as_deref().unwrap_or_default(),
            task: info.task.as_deref(),
            tool: info.tool.as_deref().unwrap_or_default(),
            arguments_digest: &digest,
            head_digest: info.head_digest.as_deref(),
            decision_id: Some(&info.decision_id),
        });
        if let Value::Object(c) = &mut claims {
            c.extend(spec.claims.clone());
        }
        request.headers.push((config.approval_header.clone(), approval::mint(&claims, key)));
        let retry = self.drive(&config, &request, given.clone(), now, &mut store, &mut listed)?;
        Ok(self.finish(retry, request, given.is_some(), environment, now))
    }

    fn drive(
        &self,
        config: &GateConfig,
        request: &RecordedRequest,
        given: Option<Identity>,
        now: i64,
        store: &mut MemoryStore,
        listed: &mut PinMemory,
    ) -> Result<Run, String> {
        let mut exchange = Exchange::from_recorded(request, now).map_err(|e| format!("the request: {e}"))?;
        if let Some(identity) = given {
            exchange.credentials = Credentials::Given(identity);
        }
        exchange.listed = Some(listed);
        Ok(driver::run(config, Some(self.compiled), exchange, store))
    }

    fn finish(&self, run: Run, request: RecordedRequest, stated: bool, environment: String, now: i64) -> CaseRun {
        let flow = &run.flow;
        let facts = Facts { environment: environment.clone(), identity: flow.identity().clone(), tool: flow.tool() };
        let arguments = flow.call().and_then(|m| m.arguments());
        let explanation = explain_gate(self.compiled, &facts, arguments, now, flow.decision());
        CaseRun {
            decision: flow.decision().clone(),
            status: run.status(None),
            explanation,
            environment,
            now,
            request: Some(request),
            identity_stated: stated,
            record: run.record,
        }
    }

    /// The request of an `http` or `mcp` case, before identity headers.
    fn request(&self, case: &Case) -> Result<RecordedRequest, String> {
        let mut headers = case.headers.clone();
        let (method, path, host, body) = match (&case.http, &case.mcp) {
            (Some(h), _) => (h.method.clone(), h.path.clone(), h.host.clone(), case.body.clone()),
            (None, Some(m)) => {
                let body = match (&m.message, &case.body) {
                    (Some(_), Some(_)) => return Err("give `mcp.message` or `body`, not both".into()),
                    (Some(msg), None) => Some(msg.to_string()),
                    (None, body) => body.clone(),
                };
                if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                (m.method.clone().unwrap_or_else(|| "POST".into()), m.path.clone(), m.host.clone(), body)
            }
            (None, None) => return Err("no request: give `http` or `mcp`".into()),
        };
        Ok(RecordedRequest {
            method,
            path,
            host: Some(host),
            headers,
            body,
            peer_uri_san: case.peer.clone(),
            ..RecordedRequest::default()
        })
    }

    fn key(&self, id: &str) -> Result<&SigningKey, String> {
        self.keys.get(id).ok_or_else(|| format!("no key for {id:?}: add it to `defaults.keys`"))
    }

    fn issuer(&self, id: &str) -> Result<&Issuer, String> {
        self.bundle
            .issuers
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| format!("issuer {id:?} is not one of the bundle's issuers"))
    }

    /// The identity a case states, taken as established.
    fn stated_identity(&self, spec: &AgentSpec, peer: Option<&str>, now: i64) -> Result<Identity, String> {
        Ok(match spec {
            AgentSpec::Code(code) if code == "missing" => Identity::Missing,
            AgentSpec::Code(code) => match TokenFailure::from_code(code) {
                Some(f) => Identity::Invalid(f),
                None => {
                    let codes: Vec<&str> = TokenFailure::ALL.iter().map(|f| f.code()).collect();
                    return Err(format!(
                        "agent {code:?} is not \"missing\" nor a token failure code ({})",
                        codes.join(", ")
                    ));
                }
            },
            AgentSpec::Facts(a) => {
                self.issuer(&a.issuer)?;
                let task = match &a.task {
                    None => None,
                    Some(t) => Some(Task {
                        id: t.id.clone(),
                        purpose: t.purpose.clone(),
                        expires_at: t.expires_at.as_deref().map(|e| time(e, "task.expires_at")).transpose()?,
                    }),
                };
                Identity::Verified(Agent {
                    trust_domain: trust_domain(&a.id).to_string(),
                    id: a.id.clone(),
                    issuer: a.issuer.clone(),
                    token_id: a.token_id.clone(),
                    expires_at: now + MINTED_LIFETIME,
                    task,
                    delegation: None,
                    sender_bound: peer == Some(a.id.as_str()),
                })
            }
        })
    }

    /// An agent token carrying `a`'s facts, as its issuer's claim mapping and profile want them.
    fn agent_token(&self, a: &AgentFacts, index: usize, now: i64) -> Result<String, String> {
        let issuer = self.issuer(&a.issuer)?;
        let key = self.key(&a.issuer)?;
        let lifetime = MINTED_LIFETIME.min(i64::try_from(issuer.max_token_lifetime_seconds).unwrap_or(i64::MAX));
        let mut c = json!({
            "iss": issuer.iss, "sub": a.id, "aud": issuer.audiences.first(),
            "iat": now, "exp": now + lifetime,
            "jti": a.token_id.clone().unwrap_or_else(|| format!("case-{index}-agent")),
        });
        c[issuer.claims.agent_id.as_str()] = json!(a.id);
        let typ = match issuer.profile {
            TokenProfile::SpiffeJwtSvid => "JWT",
            TokenProfile::OauthAccessToken => {
                c["client_id"] = json!(a.id);
                "at+jwt"
            }
            TokenProfile::TxnToken => {
                return Err(format!("issuer {:?} issues Transaction Tokens, not agent tokens", a.issuer))
            }
        };
        if let Some(t) = &a.task {
            let Some(task_id) = &issuer.claims.task_id else {
                return Err(format!(
                    "issuer {:?} maps no task claims: give the task as `txn_token` instead of agent.task",
                    a.issuer
                ));
            };
            c[task_id.as_str()] = json!(t.id);
            if let (Some(claim), Some(p)) = (&issuer.claims.task_purpose, &t.purpose) {
                c[claim.as_str()] = json!(p);
            }
            if let (Some(claim), Some(e)) = (&issuer.claims.task_expires_at, &t.expires_at) {
                c[claim.as_str()] = json!(time(e, "task.expires_at")?);
            }
        }
        Ok(sign_typed(c.to_string().as_bytes(), key, typ))
    }

    /// A Transaction Token for `agent_id`.
    fn txn_token(&self, t: &TxnSpec, agent_id: &str, index: usize, now: i64) -> Result<String, String> {
        let issuer = self.issuer(&t.issuer)?;
        if issuer.profile != TokenProfile::TxnToken {
            return Err(format!("txn_token.issuer {:?} is not a txn_token issuer", t.issuer));
        }
        let key = self.key(&t.issuer)?;
        let exp = match &t.expires_at {
            Some(e) => time(e, "txn_token.expires_at")?,
            None => now + MINTED_LIFETIME,
        };
        let c = json!({
            "iss": issuer.iss, "aud": issuer.audiences.first(), "iat": now, "exp": exp,
            "jti": format!("case-{index}-txn"), "txn": t.txn, "purp": t.purpose,
            "sub": t.subject.as_deref().unwrap_or(agent_id),
        });
        Ok(sign_typed(c.to_string().as_bytes(), key, "txntoken+jwt"))
    }
}
