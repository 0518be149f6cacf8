//! `warden approve`: mints a step-up approval token (JWS, `typ` `warden-approval+jwt`) for tests and demos.
//!
//! The call it approves comes from a step-up reply (`--from`: the HTTP 403 body, or the JSON-RPC error whose
//! `error.data.approval` holds the same object) and/or explicit flags, which win over the reply. The claims are those
//! of `policies/README.md`, "Step-up approvals"; the signature is the core's ([`warden_core::approval::mint`]) with a
//! private JWK as written by `warden keygen`. Everything that would make the gateway refuse the token for a reason the
//! CLI can see (a ttl above the reply's `max_age_seconds`, an `--iss` the rule does not accept, a missing binding
//! field) is refused here with exit 2.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use warden_core::approval::{self, MAX_JTI_BYTES};
use warden_core::time::{format_rfc3339, parse_rfc3339};

use crate::files;
use crate::Status;

/// Default approval lifetime in seconds, when neither --ttl nor a shorter `max_age_seconds` in the reply says less.
pub const DEFAULT_TTL_SECONDS: u64 = 300;

/// Mint a step-up approval for one call (for tests and demos; real approvals come from an approval service).
///
/// The call is read from a step-up reply (--from FILE, or - for stdin: the gateway's HTTP 403 JSON body with its
/// "approval" object, or an MCP JSON-RPC error with "error.data.approval"), and/or given with --agent, --task,
/// --tool and --arguments-digest, which override the reply's fields. The token is signed with an approver's private
/// JWK (from `warden keygen`); its algorithm follows the key. Prints the compact JWS on stdout; send it on the retry
/// in the reply's "header" (default x-warden-approval).
///
/// A plain HTTP call answered before its body was read (a gateway without allow_on_headers_stop_iteration) has a
/// reply with "head_digest" and a "binding" without "body_sha256": give the request body with --body FILE and the
/// arguments digest is computed from the binding and that body. The reply's head_digest is copied into the token.
///
/// Refused (exit 2): a --from that is not a step-up reply, a missing agent / tool / arguments digest, a --ttl above
/// the reply's max_age_seconds, an --iss that is not one of the reply's approvers.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The approver's private signing key (JWK, from `warden keygen`); its kid goes in the token's header.
    #[arg(long, value_name = "PRIVATE.jwk.json")]
    key: PathBuf,
    /// The approver's issuer: the `iss` claim, one of the bundle's approvers[].iss.
    #[arg(long, value_name = "URL")]
    iss: String,
    /// A step-up reply body (HTTP 403 JSON or JSON-RPC error) to approve; `-` reads stdin.
    #[arg(long, value_name = "FILE|-")]
    from: Option<String>,
    /// The agent id of the call (overrides the reply's).
    #[arg(long, value_name = "AGENT_ID")]
    agent: Option<String>,
    /// The task id of the call (overrides the reply's); omit when the call has no task.
    #[arg(long, value_name = "TASK_ID")]
    task: Option<String>,
    /// The catalog tool id of the call (overrides the reply's).
    #[arg(long, value_name = "TOOL_ID")]
    tool: Option<String>,
    /// SHA-256 (64 lower-case hex) of the call's canonical arguments or body (overrides the reply's).
    #[arg(long, value_name = "HEX")]
    arguments_digest: Option<String>,
    /// The body of the plain HTTP call (a file, `-` for stdin): with the reply's binding it gives the arguments
    /// digest when the reply has none (a call answered before its body was read).
    #[arg(long, value_name = "FILE|-", conflicts_with = "arguments_digest")]
    body: Option<String>,
    /// Who approved: the `sub` claim, recorded as approved_by.
    #[arg(long, value_name = "WHO")]
    approved_by: Option<String>,
    /// Lifetime (exp - iat) in seconds; default 300, or the reply's max_age_seconds when that is less.
    #[arg(long, value_name = "SECONDS")]
    ttl: Option<u64>,
    /// The `iat` claim: RFC 3339 UTC or unix seconds; default the system clock (set it to the gateway's clock when
    /// testing against a manual clock).
    #[arg(long, value_name = "RFC3339|UNIX")]
    issued_at: Option<String>,
    /// The `jti` claim; default a random UUID (v4).
    #[arg(long, value_name = "ID")]
    jti: Option<String>,
}

/// The call an approval binds, and what the reply asks of the approval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    pub arguments_digest: Option<String>,
    /// A plain HTTP call's head digest (the `head_digest` claim).
    pub head_digest: Option<String>,
    /// A plain HTTP call's binding (what `arguments_digest` covers).
    pub binding: Option<approval::HttpBinding>,
    pub decision_id: Option<String>,
    /// The `iss` values of the approvers the rule accepts (from the reply; empty without a reply).
    pub approver_iss: Vec<String>,
    /// The reply's `max_age_seconds`.
    pub max_age_seconds: Option<u64>,
}

/// Reads the `approval` object of a step-up reply: the HTTP 403 body (`approval` at the top) or a JSON-RPC error
/// (`error.data.approval`).
pub fn parse_reply(reply: &Value) -> Result<Request> {
    let approval = reply
        .get("approval")
        .or_else(|| reply.get("error").and_then(|e| e.get("data")).and_then(|d| d.get("approval")));
    let Some(approval) = approval else {
        let what = match reply {
            Value::Object(o) if o.contains_key("error") => "a JSON-RPC error without error.data.approval",
            Value::Object(o) if o.contains_key("decision") => {
                return Err(anyhow!(
                    "not a step-up reply: decision {} without an \"approval\" object",
                    o.get("decision").map(Value::to_string).unwrap_or_default()
                ))
            }
            Value::Object(_) => "an object with neither \"approval\" nor \"error.data.approval\"",
            _ => "not a JSON object",
        };
        bail!("not a step-up reply: {what} (expected the gateway's HTTP 403 body or a JSON-RPC error)");
    };
    let Some(approval) = approval.as_object() else {
        bail!("not a step-up reply: \"approval\" is not an object");
    };
    if let Some(decision) = reply.get("decision").and_then(Value::as_str) {
        if decision != "step_up" {
            bail!("not a step-up reply: decision is {decision:?}, not \"step_up\"");
        }
    }
    let text = |name: &str| -> Result<Option<String>> {
        match approval.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => bail!("step-up reply: approval.{name} is {other}, expected a string"),
        }
    };
    let mut approver_iss = Vec::new();
    match approval.get("approvers") {
        Some(Value::Array(list)) => {
            for (i, a) in list.iter().enumerate() {
                match a.get("iss").and_then(Value::as_str) {
                    Some(iss) => approver_iss.push(iss.to_string()),
                    None => bail!("step-up reply: approval.approvers[{i}] has no \"iss\" string"),
                }
            }
        }
        _ => bail!("step-up reply: approval.approvers is missing or not a list"),
    }
    let max_age_seconds = match approval.get("max_age_seconds") {
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| anyhow!("step-up reply: approval.max_age_seconds is {v}, expected a whole number"))?,
        ),
        None => bail!("step-up reply: approval.max_age_seconds is missing"),
    };
    let binding = match approval.get("binding") {
        None | Some(Value::Null) => None,
        Some(b) => Some(
            serde_json::from_value::<approval::HttpBinding>(b.clone())
                .map_err(|e| anyhow!("step-up reply: approval.binding: {e}"))?,
        ),
    };
    Ok(Request {
        agent: text("agent")?,
        task: text("task")?,
        tool: text("tool")?,
        arguments_digest: text("arguments_digest")?,
        head_digest: text("head_digest")?,
        binding,
        decision_id: text("decision_id")?,
        approver_iss,
        max_age_seconds,
    })
}

/// What to put in the token besides the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minting {
    pub iss: String,
    pub approved_by: Option<String>,
    pub ttl: Option<u64>,
    pub issued_at: i64,
    pub jti: String,
}

/// The approval's claims for `request`, checked as the gateway would check what the CLI can see.
pub fn claims(request: &Request, minting: &Minting) -> Result<Value> {
    let missing = |what: &str, flag: &str| anyhow!("missing the {what}: give {flag}, or --from a step-up reply");
    let agent = request.agent.as_deref().ok_or_else(|| missing("agent id", "--agent"))?;
    let tool = request.tool.as_deref().ok_or_else(|| missing("tool id", "--tool"))?;
    let digest = request.arguments_digest.as_deref().ok_or_else(|| match &request.binding {
        Some(_) => anyhow!(
            "the step-up reply was given before the call's body was read, so it has no arguments digest: give the \
             request body with --body FILE (or --arguments-digest)"
        ),
        None => missing("arguments digest", "--arguments-digest"),
    })?;
    if let Some(head) = request.head_digest.as_deref() {
        if head.len() != 64 || !head.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            bail!("step-up reply: head_digest {head:?} is not a SHA-256 in 64 lower-case hex digits");
        }
    }
    if agent.is_empty() {
        bail!("the agent id is empty");
    }
    if tool.is_empty() {
        bail!("the tool id is empty");
    }
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        bail!("arguments digest {digest:?} is not a SHA-256 in 64 lower-case hex digits");
    }
    if minting.jti.is_empty() || minting.jti.len() > MAX_JTI_BYTES {
        bail!("--jti must be 1 to {MAX_JTI_BYTES} bytes");
    }
    if !request.approver_iss.is_empty() && !request.approver_iss.contains(&minting.iss) {
        bail!(
            "--iss {:?} is not one of the approvers this step-up accepts: {}",
            minting.iss,
            request.approver_iss.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
        );
    }
    let ttl = match (minting.ttl, request.max_age_seconds) {
        (Some(0), _) => bail!("--ttl must be at least 1 second"),
        (Some(ttl), Some(max)) if ttl > max => {
            bail!("--ttl {ttl} is longer than the step-up's max_age_seconds {max}: the gateway would refuse it")
        }
        (Some(ttl), _) => ttl,
        (None, Some(0)) => bail!("step-up reply: max_age_seconds is 0"),
        (None, Some(max)) => DEFAULT_TTL_SECONDS.min(max),
        (None, None) => DEFAULT_TTL_SECONDS,
    };
    let exp = i64::try_from(ttl)
        .ok()
        .and_then(|t| minting.issued_at.checked_add(t))
        .ok_or_else(|| anyhow!("--ttl {ttl} is out of range"))?;
    Ok(approval::claims(&approval::ApprovalGrant {
        iss: &minting.iss,
        approved_by: minting.approved_by.as_deref(),
        jti: &minting.jti,
        issued_at: minting.issued_at,
        expires_at: exp,
        agent,
        task: request.task.as_deref(),
        tool,
        arguments_digest: digest,
        head_digest: request.head_digest.as_deref(),
        decision_id: request.decision_id.as_deref(),
    }))
}

/// `--issued-at`: RFC 3339 UTC or unix seconds.
pub fn parse_issued_at(text: &str) -> Result<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    parse_rfc3339(text).ok_or_else(|| {
        anyhow!("--issued-at {text:?} is neither unix seconds nor an RFC 3339 UTC time such as 2026-11-28T10:00:00Z")
    })
}

/// A random UUID (version 4, RFC 9562) from the operating system's random source.
pub fn uuid_v4() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no random source for --jti: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// A file's bytes, or stdin's for `-`.
fn read_input(from: &str, what: &str) -> Result<Vec<u8>> {
    if from == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).with_context(|| format!("cannot read {what} from stdin"))?;
        Ok(bytes)
    } else {
        std::fs::read(from).with_context(|| format!("cannot read {what} from {from}"))
    }
}

fn read_reply(from: &str) -> Result<Value> {
    let (name, text) = if from == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the step-up reply from stdin")?;
        ("stdin".to_string(), text)
    } else {
        let path = PathBuf::from(from);
        (path.display().to_string(), files::read_text(&path)?)
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("{name}: not a step-up reply: {}", files::serde_position(&e)))
}

pub fn run(args: &Args) -> Result<Status> {
    let mut request = match &args.from {
        Some(from) => {
            let reply = read_reply(from)?;
            parse_reply(&reply).with_context(|| format!("--from {from}"))?
        }
        None => Request::default(),
    };
    // Explicit flags win over the reply.
    for (flag, field) in [
        (&args.agent, &mut request.agent),
        (&args.task, &mut request.task),
        (&args.tool, &mut request.tool),
        (&args.arguments_digest, &mut request.arguments_digest),
    ] {
        if let Some(v) = flag {
            *field = Some(v.clone());
        }
    }
    if let Some(from) = &args.body {
        let Some(binding) = &request.binding else {
            bail!("--body needs a step-up reply of a plain HTTP call (--from, with approval.binding)");
        };
        let body = read_input(from, "the request body")?;
        request.arguments_digest = binding.with_body(&body).digest();
    }
    let key = files::read_signing_key(&args.key)?;
    let minting = Minting {
        iss: args.iss.clone(),
        approved_by: args.approved_by.clone(),
        ttl: args.ttl,
        issued_at: match &args.issued_at {
            Some(t) => parse_issued_at(t)?,
            None => files::clock(),
        },
        jti: match &args.jti {
            Some(j) => j.clone(),
            None => uuid_v4()?,
        },
    };
    let claims = claims(&request, &minting)?;
    let token = approval::mint(&claims, &key);
    println!("{token}");
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
    eprintln!(
        "approval {} by {:?} ({}, kid {:?}) for agent {} tool {}, valid until {}",
        minting.jti,
        minting.iss,
        key.alg(),
        key.kid(),
        request.agent.as_deref().unwrap_or(""),
        request.tool.as_deref().unwrap_or(""),
        format_rfc3339(exp)
    );
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;
    use warden_core::approval::{ApprovalFailure, CallBinding};
    use warden_core::bundle::Bundle;
    use warden_core::envelope::SigningKey;

    const ISS: &str = "https://approvals.acme.example";
    const AGENT: &str = "spiffe://acme.example/agents/finance/refund-bot";
    const DIGEST: &str = "5d3c0f7a0e3f9a1b2c4d6e8f00112233445566778899aabbccddeeff00112233";

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn approval_object() -> Value {
        json!({
            "agent": AGENT, "task": "task-1", "tool": "payments.refunds.create",
            "arguments_digest": DIGEST, "digest_of": "arguments", "decision_id": "d-1",
            "rule": "finance-refunds-step-up",
            "approvers": [{"id": "payments-approvals", "iss": ISS}],
            "max_age_seconds": 300, "header": "x-warden-approval"
        })
    }

    fn http_reply() -> Value {
        json!({"decision_id": "d-1", "decision": "step_up", "reason": "step_up_required",
               "rule": "finance-refunds-step-up", "revision": 17, "approval": approval_object()})
    }

    fn minting() -> Minting {
        Minting {
            iss: ISS.into(),
            approved_by: Some("alice@acme.example".into()),
            ttl: None,
            issued_at: 1_000,
            jti: "j-1".into(),
        }
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    fn test_key() -> SigningKey {
        let text = std::fs::read_to_string(root().join("policies/examples/keys/TEST-ONLY-approver-payments.jwk.json"))
            .unwrap();
        SigningKey::from_jwk(&serde_json::from_str(&text).unwrap()).unwrap()
    }

    #[test]
    fn reads_the_http_reply_and_the_json_rpc_error() {
        let http = parse_reply(&http_reply()).unwrap();
        let rpc = parse_reply(&json!({"jsonrpc": "2.0", "id": 7,
            "error": {"code": -31002, "message": "step-up required", "data": {"approval": approval_object()}}}))
        .unwrap();
        assert_eq!(http, rpc);
        assert_eq!(http.agent.as_deref(), Some(AGENT));
        assert_eq!(http.task.as_deref(), Some("task-1"));
        assert_eq!(http.tool.as_deref(), Some("payments.refunds.create"));
        assert_eq!(http.arguments_digest.as_deref(), Some(DIGEST));
        assert_eq!(http.decision_id.as_deref(), Some("d-1"));
        assert_eq!(http.approver_iss, [ISS]);
        assert_eq!(http.max_age_seconds, Some(300));
    }

    #[test]
    fn a_task_of_null_means_no_task_claim() {
        let mut reply = http_reply();
        reply["approval"]["task"] = Value::Null;
        let c = claims(&parse_reply(&reply).unwrap(), &minting()).unwrap();
        assert!(c.get("task").is_none(), "{c}");
    }

    #[test]
    fn refuses_what_is_not_a_step_up_reply() {
        assert_eq!(
            err(parse_reply(&json!({"decision": "deny", "reason": "denied_by_rule"}))),
            "not a step-up reply: decision \"deny\" without an \"approval\" object"
        );
        assert_eq!(
            err(parse_reply(&json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "x"}}))),
            "not a step-up reply: a JSON-RPC error without error.data.approval (expected the gateway's HTTP 403 \
             body or a JSON-RPC error)"
        );
        assert!(err(parse_reply(&json!([1]))).contains("not a JSON object"));
        let mut reply = http_reply();
        reply["decision"] = json!("allow");
        assert_eq!(err(parse_reply(&reply)), "not a step-up reply: decision is \"allow\", not \"step_up\"");
        let mut reply = http_reply();
        reply["approval"]["approvers"] = json!("payments-approvals");
        assert_eq!(err(parse_reply(&reply)), "step-up reply: approval.approvers is missing or not a list");
        let mut reply = http_reply();
        reply["approval"].as_object_mut().unwrap().remove("max_age_seconds");
        assert_eq!(err(parse_reply(&reply)), "step-up reply: approval.max_age_seconds is missing");
        let mut reply = http_reply();
        reply["approval"]["agent"] = json!(42);
        assert_eq!(err(parse_reply(&reply)), "step-up reply: approval.agent is 42, expected a string");
    }

    #[test]
    fn refuses_missing_fields_a_long_ttl_and_a_foreign_issuer() {
        let request = parse_reply(&http_reply()).unwrap();
        let m = Minting { ttl: Some(301), ..minting() };
        assert_eq!(
            err(claims(&request, &m)),
            "--ttl 301 is longer than the step-up's max_age_seconds 300: the gateway would refuse it"
        );
        let m = Minting { iss: "https://evil.example".into(), ..minting() };
        assert_eq!(
            err(claims(&request, &m)),
            "--iss \"https://evil.example\" is not one of the approvers this step-up accepts: \
             \"https://approvals.acme.example\""
        );
        let no_agent = Request { agent: None, ..request.clone() };
        assert_eq!(err(claims(&no_agent, &minting())), "missing the agent id: give --agent, or --from a step-up reply");
        let no_tool = Request { tool: None, ..request.clone() };
        assert_eq!(err(claims(&no_tool, &minting())), "missing the tool id: give --tool, or --from a step-up reply");
        let no_digest = Request { arguments_digest: None, ..request.clone() };
        assert_eq!(
            err(claims(&no_digest, &minting())),
            "missing the arguments digest: give --arguments-digest, or --from a step-up reply"
        );
        let upper = Request { arguments_digest: Some(DIGEST.to_uppercase()), ..request.clone() };
        assert!(err(claims(&upper, &minting())).contains("is not a SHA-256 in 64 lower-case hex digits"));
        let m = Minting { ttl: Some(0), ..minting() };
        assert_eq!(err(claims(&request, &m)), "--ttl must be at least 1 second");
        let m = Minting { jti: String::new(), ..minting() };
        assert_eq!(err(claims(&request, &m)), "--jti must be 1 to 256 bytes");
    }

    #[test]
    fn ttl_defaults_to_300_or_the_replys_shorter_max_age() {
        let mut request = parse_reply(&http_reply()).unwrap();
        assert_eq!(claims(&request, &minting()).unwrap()["exp"], 1_300);
        request.max_age_seconds = Some(120);
        assert_eq!(claims(&request, &minting()).unwrap()["exp"], 1_120);
        let explicit = Request { max_age_seconds: None, approver_iss: vec![], ..request };
        assert_eq!(claims(&explicit, &Minting { ttl: Some(900), ..minting() }).unwrap()["exp"], 1_900);
    }

    #[test]
    fn issued_at_is_rfc3339_or_unix_seconds() {
        assert_eq!(parse_issued_at("1800000000").unwrap(), 1_800_000_000);
        assert_eq!(parse_issued_at("2026-11-28T10:00:00Z").unwrap(), parse_rfc3339("2026-11-28T10:00:00Z").unwrap());
        assert!(err(parse_issued_at("yesterday")).starts_with("--issued-at \"yesterday\" is neither"));
    }

    #[test]
    fn jti_defaults_to_a_random_uuid_v4() {
        let a = uuid_v4().unwrap();
        let b = uuid_v4().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(groups[2].starts_with('4'), "{a}");
        assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn the_minted_token_carries_the_header_and_claims() {
        let key = test_key();
        let c = claims(&parse_reply(&http_reply()).unwrap(), &minting()).unwrap();
        let token = approval::mint(&c, &key);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
        assert_eq!(
            decode(parts[0]),
            json!({"alg": "EdDSA", "kid": "payments-approvals-test-1", "typ": "warden-approval+jwt"})
        );
        assert_eq!(
            decode(parts[1]),
            json!({"iss": ISS, "sub": "alice@acme.example", "jti": "j-1", "iat": 1_000, "exp": 1_300,
                   "agent": AGENT, "task": "task-1", "tool": "payments.refunds.create",
                   "arguments_digest": DIGEST, "decision_id": "d-1"})
        );
    }

    /// A token minted from a step-up reply verifies against the finance example bundle for that exact call, and
    /// only for it.
    #[test]
    fn a_minted_token_verifies_against_the_finance_example() {
        let text = std::fs::read_to_string(root().join("policies/examples/finance-agent.json")).unwrap();
        let bundle: Bundle = serde_json::from_str(&text).unwrap();
        let compiled = warden_core::compile::compile(&bundle).unwrap();
        let now = parse_rfc3339("2026-12-01T09:00:00Z").unwrap();
        let m = Minting { issued_at: now - 10, ..minting() };
        let token = approval::mint(&claims(&parse_reply(&http_reply()).unwrap(), &m).unwrap(), &test_key());
        let call = CallBinding {
            agent: AGENT,
            task: Some("task-1"),
            tool: "payments.refunds.create",
            arguments_digest: Some(DIGEST),
            head_digest: None,
        };
        let rule = "finance-refunds-step-up";
        let ok = compiled.verify_approval(rule, &token, &call, now).unwrap();
        assert_eq!(ok.id, "j-1");
        assert_eq!(ok.approver, "payments-approvals");
        assert_eq!(ok.approved_by.as_deref(), Some("alice@acme.example"));
        assert_eq!(ok.expires_at, now + 290);
        assert_eq!(ok.decision_id.as_deref(), Some("d-1"));
        let other = "0".repeat(64);
        assert_eq!(
            compiled.verify_approval(rule, &token, &CallBinding { arguments_digest: Some(&other), ..call }, now),
            Err(ApprovalFailure::WrongArguments)
        );
        assert_eq!(
            compiled.verify_approval(rule, &token, &CallBinding { task: Some("task-2"), ..call }, now),
            Err(ApprovalFailure::WrongTask)
        );
        assert_eq!(compiled.verify_approval(rule, &token, &call, now + 600), Err(ApprovalFailure::Expired));
    }

    /// A reply given at the head of a plain HTTP call: no arguments digest, a binding without the body's digest,
    /// a head digest. The digest comes from the binding and the body; the head digest is copied.
    #[test]
    fn a_reply_given_at_the_head_needs_the_body() {
        let binding = approval::HttpBinding {
            method: "POST".into(),
            host: "billing.acme.example".into(),
            path: "/v1/refunds?to=a".into(),
            content_type: "application/json".into(),
            body_sha256: None,
        };
        let mut object = approval_object();
        object.as_object_mut().unwrap().remove("arguments_digest");
        object["digest_of"] = json!("request");
        object["binding"] = serde_json::to_value(&binding).unwrap();
        object["head_digest"] = json!(binding.head_digest());
        let reply = json!({"decision_id": "d-1", "decision": "step_up", "reason": "step_up_required",
                           "rule": "finance-refunds-step-up", "revision": 17, "approval": object});
        let mut request = parse_reply(&reply).unwrap();
        assert_eq!(request.binding.as_ref(), Some(&binding));
        assert!(err(claims(&request, &minting())).contains("give the request body with --body FILE"));
        request.arguments_digest = binding.with_body(b"{}").digest();
        let c = claims(&request, &minting()).unwrap();
        assert_eq!(c["head_digest"], binding.head_digest());
        assert_eq!(c["arguments_digest"], binding.with_body(b"{}").digest().unwrap());
        let bad = Request { head_digest: Some("x".into()), ..request };
        assert!(err(claims(&bad, &minting())).contains("head_digest \"x\" is not a SHA-256"));
    }
}
