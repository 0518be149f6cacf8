//! The decision record: one JSON object per request, written to the host log and to filter state.
//!
//! Field names follow OPA's decision logs where they mean the same thing (`decision_id`, `timestamp`, `path`,
//! `bundles.<name>.revision`). Token contents are never recorded.

use crate::config::Mode;
use crate::decision::{Decision, Outcome};
use crate::facts::Agent;
use crate::gate::outcome::{Governance, McpRecord};
use crate::time::push_rfc3339;

/// The `type` of every decision record.
pub const RECORD_TYPE: &str = "warden.decision";

/// Everything a decision record states. The gate fills it from the request's outcome; the host adds the time, the
/// VM and the latency it measured.
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    pub decision_id: &'a str,
    /// Host time when the request headers arrived, nanoseconds since the epoch.
    pub time_ns: u64,
    pub environment: &'a str,
    /// The worker VM that decided (random per VM, stable for its life).
    pub vm: &'a str,
    pub mode: Mode,
    /// Host time spent deciding (may be 0: Envoy's clock advances per event loop iteration).
    pub latency_ns: u64,
    /// The verified agent, if any.
    pub agent: Option<&'a Agent>,
    /// The tool the request reached (catalog id).
    pub tool: Option<&'a str>,
    pub method: &'a str,
    /// The normalized path without query; the raw path (query cut off) when it could not be normalized.
    pub path: &'a str,
    pub host: &'a str,
    pub decision: &'a Decision,
    /// Revision of the bundle that decided; `None` while no bundle is active.
    pub revision: Option<u64>,
    pub governance: &'a Governance,
    /// The `mcp` object of MCP requests.
    pub mcp: Option<&'a McpRecord>,
}

/// The `decision` field: `allow`, `deny`, `step_up`; in shadow mode a request that would not have gone through is
/// `would_deny` or `would_step_up` (shadow never records a refusal as an allow).
pub fn decision_label(d: &Decision, mode: Mode) -> &'static str {
    match (d.outcome, mode) {
        (Outcome::Allow, _) => Outcome::Allow.as_str(),
        (outcome, Mode::Enforce) => outcome.as_str(),
        (Outcome::StepUp, Mode::Shadow) => "would_step_up",
        (Outcome::Deny, Mode::Shadow) => "would_deny",
    }
}

/// `2026-11-28T10:00:00.123Z` from nanoseconds since the epoch.
pub fn timestamp(time_ns: u64) -> String {
    let mut out = String::with_capacity(24);
    push_timestamp(&mut out, time_ns);
    out
}

fn push_timestamp(out: &mut String, time_ns: u64) {
    let secs = i64::try_from(time_ns / 1_000_000_000).unwrap_or(i64::MAX);
    let millis = (time_ns / 1_000_000) % 1000;
    push_rfc3339(out, secs);
    out.pop(); // the `Z`
    out.push('.');
    push_digits(out, millis, 3);
    out.push('Z');
}

/// `n` in decimal with at least `width` digits.
fn push_digits(out: &mut String, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len().saturating_sub(width));
    for &b in &buf[start..] {
        out.push(char::from(b));
    }
}

/// A JSON object written field by field: the record is written on every request, and a generic serializer spent
/// more on it than the decision itself. Strings are escaped as RFC 8259 requires (`"`, `\`, control characters);
/// everything else is copied as is.
struct Obj<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Obj<'o> {
    fn open(out: &'o mut String) -> Obj<'o> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_str(self.out, k);
        self.out.push(':');
        self.out
    }

    fn str(&mut self, k: &str, v: &str) {
        let out = self.key(k);
        push_str(out, v);
    }

    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.key(k).push_str("null"),
        }
    }

    fn num(&mut self, k: &str, v: u64) {
        let out = self.key(k);
        push_digits(out, v, 1);
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// `v` as a JSON string.
fn push_str(out: &mut String, v: &str) {
    out.push('"');
    let bytes = v.as_bytes();
    // Ids, paths and codes almost never need escaping: one pass to check, one copy.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(v);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(v.get(plain..i).unwrap_or_default());
        match escape {
            Some(e) => out.push_str(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
        plain = i + 1;
    }
    out.push_str(v.get(plain..).unwrap_or_default());
    out.push('"');
}

/// The record as one line of JSON.
pub fn build(r: &RecordFields<'_>) -> String {
    let agent = r.agent;
    let ctx = r;
    let gov = r.governance;
    let mut out = String::with_capacity(640);
    let mut o = Obj::open(&mut out);
    o.str("type", RECORD_TYPE);
    o.str("decision_id", ctx.decision_id);
    {
        // Digits, `-`, `:`, `T`, `.` and `Z`: nothing to escape.
        let out = o.key("timestamp");
        out.push('"');
        push_timestamp(out, ctx.time_ns);
        out.push('"');
    }
    o.str("environment", ctx.environment);
    o.str("vm", ctx.vm);
    o.opt_str("agent", agent.map(|a| a.id.as_str()));
    o.opt_str("issuer", agent.map(|a| a.issuer.as_str()));
    if let Some(d) = agent.and_then(|a| a.delegation.as_ref()) {
        // RFC 8693: the party the agent acts for (the token's `sub`); prior actors only when there are any.
        o.str("delegator", &d.delegator);
        if !d.chain.is_empty() {
            let out = o.key("delegation_chain");
            out.push('[');
            for (i, actor) in d.chain.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, actor);
            }
            out.push(']');
        }
    }
    match agent.and_then(|a| a.task.as_ref()) {
        Some(t) => {
            let mut task = Obj::open(o.key("task"));
            task.str("id", &t.id);
            task.opt_str("purpose", t.purpose.as_deref());
            task.close();
        }
        None => o.key("task").push_str("null"),
    }
    o.opt_str("tool", r.tool);
    o.str("method", r.method);
    o.str("path", r.path);
    o.str("host", r.host);
    o.str("decision", decision_label(r.decision, ctx.mode));
    o.str("mode", ctx.mode.as_str());
    o.str("rule", r.decision.rule_id());
    o.str("reason", r.decision.reason.code());
    {
        let mut bundles = Obj::open(o.key("bundles"));
        if let Some(revision) = r.revision {
            let mut warden = Obj::open(bundles.key("warden"));
            warden.num("revision", revision);
            warden.close();
        }
        bundles.close();
    }
    o.num("latency_ns", ctx.latency_ns);
    match &gov.approval {
        Some(a) => {
            let mut approval = Obj::open(o.key("approval"));
            approval.str("id", &a.id);
            approval.str("approver", &a.approver);
            approval.opt_str("approved_by", a.approved_by.as_deref());
            approval.str("expires_at", &a.expires_at);
            approval.close();
        }
        None => o.key("approval").push_str("null"),
    }
    match &gov.exception {
        Some(e) => {
            let mut exception = Obj::open(o.key("exception"));
            exception.str("ticket", &e.ticket);
            exception.str("approver", &e.approver);
            exception.str("expires_at", &e.expires_at);
            exception.close();
        }
        None => o.key("exception").push_str("null"),
    }
    match &gov.shadow {
        Some(sh) => {
            let mut shadow = Obj::open(o.key("shadow"));
            shadow.str("decision", sh.decision);
            shadow.str("rule", &sh.rule);
            shadow.str("reason", sh.reason);
            shadow.close();
        }
        None => o.key("shadow").push_str("null"),
    }
    o.opt_str("arguments_digest", gov.arguments_digest.as_deref());
    if let Some(args) = &gov.arguments {
        // Opted in per tool: arbitrary JSON, written by serde_json (escaping included).
        let text = serde_json::to_string(args).unwrap_or_else(|_| "null".to_string());
        o.key("arguments").push_str(&text);
    }
    if let Some(l) = gov.limit.as_ref().filter(|_| r.decision.reason.is_limit()) {
        // Which limit refused the call, its key and what remained: written by serde_json (ids and keys escaped).
        let text = serde_json::to_string(l).unwrap_or_else(|_| "null".to_string());
        o.key("limit").push_str(&text);
    }
    if let Some(m) = r.mcp {
        let mut rec = Obj::open(o.key("mcp"));
        rec.str("server", &m.server);
        rec.opt_str("method", m.method.as_deref());
        rec.opt_str("name", m.name.as_deref());
        rec.num("messages", u64::try_from(m.messages).unwrap_or(u64::MAX));
        let out = rec.key("batch");
        out.push_str(if m.batch { "true" } else { "false" });
        if !m.tools_removed.is_empty() {
            // A `tools/list` answer that lost tools to the server's pins: which, why, and the digests.
            let out = rec.key("tools_removed");
            out.push('[');
            for (i, f) in m.tools_removed.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let mut t = Obj::open(out);
                t.str("name", &f.tool);
                t.str("reason", f.failure.code());
                t.opt_str("expected", f.expected.as_deref());
                t.str("seen", &f.seen);
                t.close();
            }
            out.push(']');
        }
        rec.close();
    }
    o.close();
    out
}

/// The filter-state key (proxy-wasm property path) of the whole record; Envoy stores it as `wasm.warden_decision`.
pub const RECORD_PROPERTY: &str = "warden_decision";

/// The keys [`field_properties`] writes (proxy-wasm property paths; Envoy stores each as `wasm.<key>`), in order.
pub const FIELD_PROPERTIES: [&str; 9] = [
    "warden.decision_id",
    "warden.decision",
    "warden.reason",
    "warden.rule",
    "warden.tool",
    "warden.agent",
    "warden.task",
    "warden.revision",
    "warden.mcp_method",
];

/// The record's main fields, each as its own filter-state value (the same values as the record's `decision_id`,
/// `decision`, `reason`, `rule`, `tool`, `agent`, `task.id`, `bundles.warden.revision` and `mcp.method`), so an
/// access-log formatter can address them one by one (`%FILTER_STATE(wasm.warden.reason:PLAIN)%`): the OpenTelemetry
/// access logger's attributes, a JSON access log. A field without a value (no tool, no agent, ...) is not written,
/// which Envoy's formatters print as `-`. Written only when the plugin configuration asks (`decision_fields`): nine
/// host calls per request.
pub fn field_properties(r: &RecordFields<'_>, mut each: impl FnMut(&'static str, &str)) {
    let [id, decision, reason, rule, tool, agent, task, revision, mcp_method] = FIELD_PROPERTIES;
    each(id, r.decision_id);
    each(decision, decision_label(r.decision, r.mode));
    each(reason, r.decision.reason.code());
    each(rule, r.decision.rule_id());
    if let Some(t) = r.tool {
        each(tool, t);
    }
    if let Some(a) = r.agent {
        each(agent, &a.id);
        if let Some(t) = &a.task {
            each(task, &t.id);
        }
    }
    if let Some(n) = r.revision {
        let mut digits = String::with_capacity(20);
        push_digits(&mut digits, n, 1);
        each(revision, &digits);
    }
    if let Some(m) = r.mcp.and_then(|m| m.method.as_deref()) {
        each(mcp_method, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::facts::Task;
    use crate::gate::outcome::{ApprovalRecord, ExceptionRecord, ShadowRecord};
    use serde_json::{json, Value};
    use std::sync::Arc;

    /// The inputs of one record (what the gate holds for a request).
    struct Evaluation {
        verdict: Verdict,
        agent: Option<Agent>,
        tool: Option<&'static str>,
        gov: Governance,
    }

    struct Verdict {
        decision: Decision,
        revision: Option<u64>,
    }

    fn evaluation(verdict: Verdict, agent: Option<Agent>) -> Evaluation {
        Evaluation { verdict, agent, tool: Some("crm.contacts.read"), gov: Default::default() }
    }

    fn fields(ev: &Evaluation, mode: Mode) -> RecordFields<'_> {
        RecordFields {
            decision_id: "0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b",
            time_ns: 1_795_860_000_123_456_789,
            environment: "prod",
            vm: "vm-5f3a9c21",
            mode,
            latency_ns: 4200,
            agent: ev.agent.as_ref(),
            tool: ev.tool,
            method: "GET",
            path: "/v1/contacts/42",
            host: "crm.internal",
            decision: &ev.verdict.decision,
            revision: ev.verdict.revision,
            governance: &ev.gov,
            mcp: None,
        }
    }

    fn build(ev: &Evaluation, mode: Mode) -> String {
        super::build(&fields(ev, mode))
    }

    fn ctx(mode: Mode) -> Mode {
        mode
    }

    fn agent() -> Agent {
        Agent {
            id: "spiffe://acme.example/agents/support/bot-1".to_string(),
            trust_domain: "acme.example".to_string(),
            issuer: "acme-workload".to_string(),
            token_id: Some("secret-jti-never-logged".to_string()),
            expires_at: 1_796_295_600,
            task: Some(Task { id: "task-9".to_string(), purpose: Some("support".to_string()), expires_at: None }),
            delegation: None,
            sender_bound: false,
        }
    }

    fn verdict(outcome: Outcome, status: u16, reason: Reason, rule: Option<&str>, revision: Option<u64>) -> Verdict {
        let decision = Decision { outcome, reason, rule: rule.map(Arc::from), revision: revision.unwrap_or(0) };
        assert_eq!(decision.http_status(), status);
        Verdict { decision, revision }
    }

    /// The field properties of an evaluation, as the filter would write them.
    fn properties(ev: &Evaluation, mode: Mode) -> std::collections::BTreeMap<&'static str, String> {
        let mut out = std::collections::BTreeMap::new();
        let fields = fields(ev, mode);
        field_properties(&fields, |k, v| {
            assert!(out.insert(k, v.to_string()).is_none(), "{k} written twice");
        });
        out
    }

    #[test]
    fn field_properties_carry_the_records_values() {
        let ev = evaluation(
            verdict(Outcome::Allow, 200, Reason::AllowedByRule, Some("support-reads"), Some(7)),
            Some(agent()),
        );
        let record: Value = serde_json::from_str(&build(&ev, Mode::Enforce)).unwrap();
        let p = properties(&ev, Mode::Enforce);
        let want = |k: &str| -> Option<String> {
            let v = match k {
                "warden.decision_id" => &record["decision_id"],
                "warden.decision" => &record["decision"],
                "warden.reason" => &record["reason"],
                "warden.rule" => &record["rule"],
                "warden.tool" => &record["tool"],
                "warden.agent" => &record["agent"],
                "warden.task" => &record["task"]["id"],
                "warden.revision" => return Some(record["bundles"]["warden"]["revision"].to_string()),
                "warden.mcp_method" => &Value::Null,
                other => panic!("unexpected key {other}"),
            };
            v.as_str().map(str::to_string)
        };
        for k in FIELD_PROPERTIES {
            assert_eq!(p.get(k).cloned(), want(k), "{k}");
        }
        assert_eq!(p["warden.revision"], "7");
        assert_eq!(p["warden.task"], "task-9");
        // No agent, no bundle, shadow mode: what is missing is not written; the label is the record's.
        let ev = evaluation(verdict(Outcome::Deny, 503, Reason::NoActiveBundle, None, None), None);
        let p = properties(&ev, Mode::Shadow);
        assert_eq!(
            p.keys().copied().collect::<Vec<_>>(),
            ["warden.decision", "warden.decision_id", "warden.reason", "warden.rule", "warden.tool"]
        );
        assert_eq!(p["warden.decision"], "would_deny");
        assert_eq!(p["warden.rule"], "default");
    }

    #[test]
    fn allow_record_has_every_field() {
        let ev = evaluation(
            verdict(Outcome::Allow, 200, Reason::AllowedByRule, Some("support-reads"), Some(7)),
            Some(agent()),
        );
        let line = build(&ev, ctx(Mode::Enforce));
        assert!(!line.contains('\n'));
        assert!(!line.contains("secret-jti"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "warden.decision",
                "decision_id": "0f8e2c1a-5b7d-4c3e-9a1b-2c3d4e5f6a7b",
                "timestamp": "2026-11-28T10:00:00.123Z",
                "environment": "prod",
                "vm": "vm-5f3a9c21",
                "agent": "spiffe://acme.example/agents/support/bot-1",
                "issuer": "acme-workload",
                "task": {"id": "task-9", "purpose": "support"},
                "tool": "crm.contacts.read",
                "method": "GET",
                "path": "/v1/contacts/42",
                "host": "crm.internal",
                "decision": "allow",
                "mode": "enforce",
                "rule": "support-reads",
                "reason": "allowed_by_rule",
                "bundles": {"warden": {"revision": 7}},
                "latency_ns": 4200,
                "approval": null,
                "exception": null,
                "shadow": null,
                "arguments_digest": null
            })
        );
    }

    #[test]
    fn without_identity_or_bundle_fields_are_null() {
        let mut ev = evaluation(verdict(Outcome::Deny, 503, Reason::NoActiveBundle, None, None), None);
        ev.tool = None;
        let v: Value = serde_json::from_str(&build(&ev, ctx(Mode::Enforce))).unwrap();
        assert_eq!(v["agent"], Value::Null);
        assert_eq!(v["issuer"], Value::Null);
        assert_eq!(v["task"], Value::Null);
        assert_eq!(v["tool"], Value::Null);
        assert_eq!(v["rule"], "default");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["reason"], "no_active_bundle");
        assert_eq!(v["bundles"], json!({}));
        assert_eq!(v.as_object().map(|o| o.len()), Some(22));
    }

    #[test]
    fn delegated_records_name_the_delegator_and_the_chain() {
        let mut a = agent();
        a.delegation = Some(crate::facts::Delegation {
            delegator: "https://login.acme.example/users/alice".to_string(),
            chain: vec!["spiffe://acme.example/agents/planner".to_string()],
        });
        let ev = evaluation(verdict(Outcome::Allow, 200, Reason::AllowedByRule, Some("r"), Some(7)), Some(a.clone()));
        let v: Value = serde_json::from_str(&build(&ev, ctx(Mode::Enforce))).unwrap();
        assert_eq!(v["delegator"], "https://login.acme.example/users/alice");
        assert_eq!(v["delegation_chain"], json!(["spiffe://acme.example/agents/planner"]));
        assert_eq!(v.as_object().map(|o| o.len()), Some(24));
        a.delegation.as_mut().unwrap().chain.clear();
        let ev = evaluation(verdict(Outcome::Allow, 200, Reason::AllowedByRule, Some("r"), Some(7)), Some(a));
        let v: Value = serde_json::from_str(&build(&ev, ctx(Mode::Enforce))).unwrap();
        assert_eq!(v.as_object().map(|o| o.len()), Some(23));
        assert!(v.get("delegation_chain").is_none());
    }

    #[test]
    fn decision_labels() {
        let cases = [
            (Outcome::Allow, 200, Reason::AllowedByRule, Mode::Enforce, "allow"),
            (Outcome::Allow, 200, Reason::AllowedByException, Mode::Shadow, "allow"),
            (Outcome::Deny, 403, Reason::DeniedByRule, Mode::Enforce, "deny"),
            (Outcome::Deny, 403, Reason::DeniedByRule, Mode::Shadow, "would_deny"),
            (Outcome::Deny, 401, Reason::IdentityMissing, Mode::Shadow, "would_deny"),
            (Outcome::Deny, 503, Reason::NoActiveBundle, Mode::Shadow, "would_deny"),
            (Outcome::StepUp, 403, Reason::StepUpRequired, Mode::Enforce, "step_up"),
            (Outcome::StepUp, 403, Reason::StepUpRequired, Mode::Shadow, "would_step_up"),
        ];
        for (outcome, status, reason, mode, want) in cases {
            assert_eq!(decision_label(&verdict(outcome, status, reason, None, Some(1)).decision, mode), want);
        }
    }

    #[test]
    fn timestamps_have_millis() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_860_000_999_999_999), "2026-11-28T10:00:00.999Z");
        assert_eq!(timestamp(1_000_000), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn governance_fields_are_recorded() {
        let mut ev = evaluation(
            verdict(Outcome::Allow, 200, Reason::AllowedByApproval, Some("refunds-need-approval"), Some(7)),
            Some(agent()),
        );
        ev.gov.approval = Some(ApprovalRecord {
            id: "a-1".into(),
            approver: "payments-approvals".into(),
            approved_by: Some("alice@acme.example".into()),
            expires_at: "2026-11-28T10:05:00Z".into(),
        });
        ev.gov.shadow =
            Some(ShadowRecord { decision: "would_deny", rule: "candidate".into(), reason: "denied_by_rule" });
        ev.gov.arguments_digest = Some("cd".repeat(32));
        ev.gov.arguments = Some(json!({"amount": 5}));
        let v: Value = serde_json::from_str(&build(&ev, ctx(Mode::Enforce))).unwrap();
        assert_eq!(
            v["approval"],
            json!({"id": "a-1", "approver": "payments-approvals", "approved_by": "alice@acme.example",
                   "expires_at": "2026-11-28T10:05:00Z"})
        );
        assert_eq!(v["shadow"], json!({"decision": "would_deny", "rule": "candidate", "reason": "denied_by_rule"}));
        assert_eq!(v["arguments_digest"], "cd".repeat(32));
        assert_eq!(v["arguments"], json!({"amount": 5}));
        assert_eq!(v["reason"], "allowed_by_approval");
        assert_eq!(v["exception"], Value::Null);
        ev.gov.exception = Some(ExceptionRecord {
            ticket: "SEC-1".into(),
            approver: "ciso@acme.example".into(),
            expires_at: "2026-12-01T00:00:00Z".into(),
        });
        let v: Value = serde_json::from_str(&build(&ev, ctx(Mode::Enforce))).unwrap();
        assert_eq!(v["exception"]["ticket"], "SEC-1");
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain /v1/contacts/42".into(),
            "quote \" backslash \\ slash /".into(),
            "line\nfeed\rtab\tbell\u{7}nul\u{0}esc\u{1b}del\u{7f}".into(),
            "unicode é ✓ 𝄞 \u{2028}".into(),
        ];
        // Every byte value that is valid alone as UTF-8.
        samples.push((0u8..0x80).map(char::from).collect());
        for sample in samples {
            let mut out = String::new();
            push_str(&mut out, &sample);
            let back: String = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
            assert_eq!(back, sample);
        }
    }

    #[test]
    fn numbers_and_timestamps() {
        for n in [0u64, 7, 10, 999, 1000, 4200, u64::MAX] {
            let mut out = String::new();
            push_digits(&mut out, n, 1);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        push_digits(&mut out, 7, 3);
        assert_eq!(out, "007");
    }
}
