//! `warden report`: a review of a bundle for its owner — who reaches which tools, exceptions, step-up, limits,
//! findings, controls.
//!
//! The bundle is validated first (with the core's `compile`, as `warden lint` does); the report is then built from
//! the authored bundle into a [`Report`], which is printed as Markdown-ish text or, with `--format json`, as JSON.
//! Rule selectors are expanded against the tool catalog here with the format's rules (`namespace.*`, `*`,
//! sensitivities); agent rows are the patterns the rules name, each listing the rules that apply to *every* agent of
//! that pattern (a rule for a broader pattern applies too, a rule for a narrower one has its own row).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;
use warden_core::bundle::{ArgCondition, Bundle, Effect, Rule, Sensitivity};
use warden_core::compile::CompiledBundle;
use warden_core::compile::ToolIdx;
use warden_core::time::{format_rfc3339, parse_rfc3339};

use crate::files;
use crate::lint;
use crate::Status;

/// An exception expiring within this many seconds of the report time is a finding.
const EXPIRING_SOON_SECONDS: i64 = 7 * 86_400;

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Markdown-ish text for people.
    Text,
    /// One JSON document for tools.
    Json,
}

/// Review a bundle: who can reach which tools, exceptions, step-up, findings and controls.
///
/// Validates the bundle first (as `warden lint`; errors exit 1). Then prints: a summary; "Access" — for each agent
/// pattern the rules name (and `*`), the tools it can reach by sensitivity (payment, admin, write, read) with the
/// effect and the rules, shadow and conditional rules marked; "Exceptions" with days left at --now; "Step-up" with
/// approvers and maximum approval age; "Limits" (rate limits and budgets: tools, key, window, maximum); "Findings" (rules without owner or approval reference, unconditioned allows on
/// payment/admin tools, exceptions expiring within 7 days, expired rules, unused approvers); "Controls" (tag to rules).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle (JSON, as authored).
    #[arg(value_name = "BUNDLE.json")]
    bundle: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The time exception countdowns and expiry findings are computed at (RFC 3339 UTC); default: the system clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bundle: String,
    pub summary: Summary,
    pub access: Vec<AgentAccess>,
    pub exceptions: Vec<ExceptionEntry>,
    pub step_up: Vec<StepUpEntry>,
    pub approvers: Vec<ApproverEntry>,
    /// Routes that need no identity, in bundle order.
    pub public_routes: Vec<PublicRouteEntry>,
    /// OAuth protected resources (RFC 9728), in bundle order.
    pub protected_resources: Vec<ProtectedResourceEntry>,
    /// Rate limits and budgets, in bundle order.
    pub limits: Vec<LimitEntry>,
    pub findings: Vec<Finding>,
    /// Control tag → rule ids, tags sorted.
    pub controls: BTreeMap<String, Vec<String>>,
    /// Rules with no control tag.
    pub untagged_rules: Vec<String>,
    /// Pinned tool definitions, per MCP server.
    pub pins: Vec<PinsEntry>,
}

/// One MCP server's pinned tool definitions.
#[derive(Debug, Clone, Serialize)]
pub struct PinsEntry {
    pub server: String,
    /// Every listed tool needs a pin.
    pub pinned: bool,
    /// Tool names with a pin, sorted.
    pub pinned_tools: Vec<String>,
    /// MCP tool names the catalog binds on this server without a pin, sorted: on a pinned server they are removed
    /// from every listing and refused; otherwise their definitions are not checked.
    pub unpinned_tools: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub revision: u64,
    pub owner: String,
    pub authority: String,
    pub issued_at: String,
    pub expires_at: String,
    /// The report time (`--now`).
    pub now: String,
    pub expires_in_seconds: i64,
    pub tools: usize,
    pub rules: usize,
    pub allow_rules: usize,
    pub deny_rules: usize,
    pub step_up_rules: usize,
    pub exceptions: usize,
    pub shadow_rules: usize,
    pub issuers: usize,
    pub approvers: usize,
    pub mcp_servers: usize,
    pub unknown_tool: &'static str,
}

/// One agent pattern's row.
#[derive(Debug, Clone, Serialize)]
pub struct AgentAccess {
    /// The pattern (`*` for every agent).
    pub agents: String,
    /// Tools some rule gives this pattern, in sensitivity order (payment, admin, write, read), catalog order within.
    pub tools: Vec<ToolAccess>,
    /// Tools no applicable rule selects (denied, `no_matching_rule`).
    pub no_rule: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolAccess {
    pub tool: String,
    pub sensitivity: &'static str,
    /// The applicable rules in precedence order (deny, step-up, allow; bundle order within).
    pub rules: Vec<Grant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub rule: String,
    pub effect: &'static str,
    /// Approver ids of a step-up rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    pub shadow: bool,
    /// The exception's ticket, on time-boxed exceptions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// The rule's `expires_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// What else must hold for the rule to apply (empty: unconditional).
    pub conditions: Vec<String>,
    /// Whether the rule has expired at the report time.
    pub expired: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExceptionEntry {
    pub rule: String,
    pub tools: Vec<String>,
    /// Agent patterns (`["*"]` for every agent).
    pub agents: Vec<String>,
    pub approver: String,
    pub ticket: String,
    pub granted_at: String,
    pub expires_at: String,
    /// Negative once expired.
    pub seconds_left: i64,
    pub expired: bool,
    /// Where it applies: the rule's environments, else the exception policy's (`None`: every environment).
    pub environments: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepUpEntry {
    pub rule: String,
    pub tools: Vec<String>,
    pub agents: Vec<String>,
    pub approvers: Vec<ApproverRef>,
    /// The effective maximum approval age.
    pub max_age_seconds: u64,
}

/// A rate limit or budget as the compiled bundle has it.
#[derive(Debug, Clone, Serialize)]
pub struct LimitEntry {
    pub id: String,
    /// `calls` or `budget`.
    pub kind: &'static str,
    /// The tools whose calls count (selectors expanded).
    pub tools: Vec<String>,
    /// The key (`[]`: one counter for all calls).
    pub per: Vec<&'static str>,
    pub window_seconds: i64,
    /// Most calls, or most of the budget's argument, per key and window.
    pub max: serde_json::Value,
    /// The budget's argument (JSON Pointer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApproverRef {
    pub id: String,
    pub iss: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApproverEntry {
    pub id: String,
    pub iss: String,
    pub algorithms: Vec<String>,
    pub kids: Vec<String>,
    pub max_approval_age_seconds: u64,
    /// Step-up rules naming it.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublicRouteEntry {
    pub id: String,
    /// The host pattern (`*`: any host).
    pub host: String,
    /// `["OPTIONS"]` for a CORS preflight route.
    pub methods: Vec<String>,
    pub path: String,
    pub cors_preflight: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProtectedResourceEntry {
    pub resource: String,
    /// `mcp_server NAME` or `host NAME`: the requests whose 401 points to the metadata.
    pub covers: String,
    pub authorization_servers: Vec<String>,
    /// What 401s carry as `resource_metadata`.
    pub metadata_url: String,
    /// Whether the gateway serves the document itself.
    pub served_by_gateway: bool,
}

/// Something the owner should look at.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable kind: `no_owner`, `no_approval_reference`, `unconditioned_allow`, `exception_expiring`,
    /// `expired_rule`, `unused_approver`.
    pub kind: &'static str,
    /// The rule or approver concerned.
    pub subject: String,
    pub message: String,
}

const SENSITIVITY_ORDER: [Sensitivity; 4] =
    [Sensitivity::Payment, Sensitivity::Admin, Sensitivity::Write, Sensitivity::Read];

fn list(items: &[String]) -> String {
    items.join(", ")
}

fn number(n: &serde_json::Number) -> String {
    n.to_string()
}

/// `/amount <= 100`, `/currency in [EUR, USD]`, ...
fn describe_condition(c: &ArgCondition) -> String {
    let a = &c.argument;
    let mut tests = Vec::new();
    if let Some(v) = &c.equals {
        tests.push(format!("{a} = {v}"));
    }
    if let Some(vs) = &c.one_of {
        tests.push(format!("{a} in [{}]", vs.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")));
    }
    if let Some(n) = &c.min {
        tests.push(format!("{a} >= {}", number(n)));
    }
    if let Some(n) = &c.exclusive_min {
        tests.push(format!("{a} > {}", number(n)));
    }
    if let Some(n) = &c.max {
        tests.push(format!("{a} <= {}", number(n)));
    }
    if let Some(n) = &c.exclusive_max {
        tests.push(format!("{a} < {}", number(n)));
    }
    if let Some(p) = &c.prefix {
        tests.push(format!("{a} starts with {p:?}"));
    }
    if let Some(p) = &c.path_prefix {
        tests.push(format!("{a} under {p}"));
    }
    if let Some(g) = &c.glob {
        tests.push(format!("{a} matches {g}"));
    }
    match c.present {
        Some(true) => tests.push(format!("{a} present")),
        Some(false) => tests.push(format!("{a} absent")),
        None => {}
    }
    tests.join(" and ")
}

/// What must hold besides agent and tool for a rule to apply.
fn rule_conditions(rule: &Rule, bundle: &Bundle) -> Vec<String> {
    let mut out = Vec::new();
    match (&rule.environments, &rule.exception, &bundle.exception_policy.environments) {
        (Some(envs), _, _) => out.push(format!("environments {}", list(envs))),
        (None, Some(_), Some(envs)) => out.push(format!("environments {} (exception policy)", list(envs))),
        _ => {}
    }
    if let Some(p) = &rule.task_purposes {
        out.push(format!("task_purposes {}", list(p)));
    }
    if let Some(i) = &rule.issuers {
        out.push(format!("issuers {}", list(i)));
    }
    if let Some(d) = &rule.delegators {
        out.push(format!("delegators {}", list(d)));
    }
    if let Some(n) = rule.max_delegation_depth {
        out.push(format!("delegation depth <= {n}"));
    }
    if rule.require_sender_binding {
        out.push("mTLS sender binding".to_string());
    }
    if let Some(conds) = &rule.conditions {
        out.push(format!("arguments {}", conds.iter().map(describe_condition).collect::<Vec<_>>().join(", ")));
    }
    out
}

fn agents_of(rule: &Rule) -> Vec<String> {
    rule.agents.clone().unwrap_or_else(|| vec!["*".to_string()])
}

/// `25 days left`, `13h 5m left`, `EXPIRED 2d 3h ago`.
fn countdown(seconds_left: i64) -> String {
    if seconds_left <= 0 {
        return format!("EXPIRED {} ago", crate::sign::human_duration(-seconds_left));
    }
    let days = seconds_left / 86_400;
    match days {
        0 => format!("{} left", crate::sign::human_duration(seconds_left)),
        1 => "1 day left".to_string(),
        d => format!("{d} days left"),
    }
}

/// The access rows' agent patterns: `*` first, then every pattern in the order the rules name them.
pub fn agent_patterns(bundle: &Bundle) -> Vec<String> {
    let mut rows: Vec<String> = vec!["*".to_string()];
    for r in &bundle.rules {
        for p in r.agents.iter().flatten() {
            if !rows.contains(p) {
                rows.push(p.clone());
            }
        }
    }
    rows
}

/// One rule as it applies in an access row.
fn grant(r: &Rule, bundle: &Bundle, compiled: &CompiledBundle, now: i64) -> Grant {
    let requirement = compiled.step_up_requirement(&r.id);
    Grant {
        rule: r.id.clone(),
        effect: r.effect.as_str(),
        approvers: r.step_up.as_ref().map(|s| s.approvers.clone()).unwrap_or_default(),
        max_age_seconds: requirement.map(|q| q.max_age_seconds),
        shadow: r.shadow,
        exception: r.exception.as_ref().map(|e| e.ticket.clone()),
        expires_at: r.expires_at.clone(),
        conditions: rule_conditions(r, bundle),
        expired: r.expires_at.as_deref().and_then(parse_rfc3339).is_some_and(|e| e <= now),
    }
}

/// For each agent pattern of `rows`, the tools some rule gives it (the core's `rules_for_agents`), in sensitivity
/// order, and the tools no rule selects. `warden diff` asks it of both bundles with the union of their patterns.
pub fn access(bundle: &Bundle, compiled: &CompiledBundle, rows: &[String], now: i64) -> Vec<AgentAccess> {
    rows.iter()
        .map(|row| {
            let mut entries = Vec::new();
            let mut no_rule = Vec::new();
            for s in SENSITIVITY_ORDER {
                for (ti, tool) in bundle.tools.iter().enumerate().filter(|(_, t)| t.sensitivity == s) {
                    let applicable: Vec<&Rule> = compiled
                        .rules_for_agents(ToolIdx(ti as u32), row)
                        .into_iter()
                        .filter_map(|ri| bundle.rules.get(ri))
                        .collect();
                    if applicable.is_empty() {
                        no_rule.push(tool.id.clone());
                    } else {
                        entries.push(ToolAccess {
                            tool: tool.id.clone(),
                            sensitivity: s.as_str(),
                            rules: applicable.into_iter().map(|r| grant(r, bundle, compiled, now)).collect(),
                        });
                    }
                }
            }
            AgentAccess { agents: row.clone(), tools: entries, no_rule }
        })
        .collect()
}

/// Builds the report of a bundle that compiled.
pub fn build(name: &str, bundle: &Bundle, compiled: &CompiledBundle, now: i64) -> Report {
    let tools = &bundle.tools;
    // The core's answers: which tools each rule selects, which rules apply to an agent pattern.
    let rule_tools: Vec<Vec<usize>> =
        compiled.tools_of_rules().into_iter().map(|t| t.into_iter().map(|t| t.0 as usize).collect()).collect();
    let tool_ids =
        |idx: &[usize]| -> Vec<String> { idx.iter().filter_map(|&i| tools.get(i)).map(|t| t.id.clone()).collect() };
    let expires = |r: &Rule| r.expires_at.as_deref().and_then(parse_rfc3339);

    let count = |e: Effect| bundle.rules.iter().filter(|r| r.effect == e).count();
    let summary = Summary {
        revision: bundle.revision,
        owner: bundle.owner.clone(),
        authority: bundle.authority.clone(),
        issued_at: bundle.issued_at.clone(),
        expires_at: bundle.expires_at.clone(),
        now: format_rfc3339(now),
        expires_in_seconds: parse_rfc3339(&bundle.expires_at).map_or(0, |e| e - now),
        tools: tools.len(),
        rules: bundle.rules.len(),
        allow_rules: count(Effect::Allow),
        deny_rules: count(Effect::Deny),
        step_up_rules: count(Effect::StepUp),
        exceptions: bundle.rules.iter().filter(|r| r.exception.is_some()).count(),
        shadow_rules: bundle.rules.iter().filter(|r| r.shadow).count(),
        issuers: bundle.issuers.len(),
        approvers: bundle.approvers.len(),
        mcp_servers: bundle.mcp_servers.len(),
        unknown_tool: bundle.defaults.unknown_tool.as_str(),
    };

    let access = access(bundle, compiled, &agent_patterns(bundle), now);

    let exceptions = bundle
        .rules
        .iter()
        .zip(&rule_tools)
        .filter_map(|(r, t)| {
            let e = r.exception.as_ref()?;
            let expires_at = expires(r).unwrap_or(i64::MIN);
            Some(ExceptionEntry {
                rule: r.id.clone(),
                tools: tool_ids(t),
                agents: agents_of(r),
                approver: e.approver.clone(),
                ticket: e.ticket.clone(),
                granted_at: e.granted_at.clone(),
                expires_at: r.expires_at.clone().unwrap_or_default(),
                seconds_left: expires_at.saturating_sub(now),
                expired: expires_at <= now,
                environments: r.environments.clone().or_else(|| bundle.exception_policy.environments.clone()),
            })
        })
        .collect();

    let step_up = bundle
        .rules
        .iter()
        .zip(&rule_tools)
        .filter_map(|(r, t)| {
            let q = compiled.step_up_requirement(&r.id)?;
            Some(StepUpEntry {
                rule: r.id.clone(),
                tools: tool_ids(t),
                agents: agents_of(r),
                approvers: q
                    .approvers
                    .iter()
                    .map(|(id, iss)| ApproverRef { id: id.to_string(), iss: iss.to_string() })
                    .collect(),
                max_age_seconds: q.max_age_seconds,
            })
        })
        .collect();

    let approvers: Vec<ApproverEntry> = bundle
        .approvers
        .iter()
        .map(|a| ApproverEntry {
            id: a.id.clone(),
            iss: a.iss.clone(),
            algorithms: a.algorithms.clone(),
            kids: a.jwks.keys.iter().filter_map(|k| k.get("kid").and_then(|v| v.as_str())).map(String::from).collect(),
            max_approval_age_seconds: a.max_approval_age_seconds,
            used_by: bundle
                .rules
                .iter()
                .filter(|r| r.step_up.as_ref().is_some_and(|s| s.approvers.contains(&a.id)))
                .map(|r| r.id.clone())
                .collect(),
        })
        .collect();

    let mut findings = Vec::new();
    let mut finding = |kind: &'static str, subject: &str, message: String| {
        findings.push(Finding { kind, subject: subject.to_string(), message });
    };
    for (r, t) in bundle.rules.iter().zip(&rule_tools) {
        if r.owner.as_deref().is_none_or(str::is_empty) {
            finding("no_owner", &r.id, format!("rule {} has no owner", r.id));
        }
        if r.approval.as_deref().is_none_or(str::is_empty) && r.exception.is_none() {
            finding("no_approval_reference", &r.id, format!("rule {} has no approval reference", r.id));
        }
        if r.effect == Effect::Allow && r.conditions.is_none() {
            let sensitive: Vec<String> = t
                .iter()
                .filter_map(|&i| tools.get(i))
                .filter(|tool| matches!(tool.sensitivity, Sensitivity::Payment | Sensitivity::Admin))
                .map(|tool| format!("{} ({})", tool.id, tool.sensitivity.as_str()))
                .collect();
            if !sensitive.is_empty() {
                finding(
                    "unconditioned_allow",
                    &r.id,
                    format!("rule {} allows {} without argument conditions", r.id, list(&sensitive)),
                );
            }
        }
        match expires(r) {
            Some(e) if e <= now => finding(
                "expired_rule",
                &r.id,
                format!("rule {} expired at {} and is still in the bundle", r.id, format_rfc3339(e)),
            ),
            Some(e) if r.exception.is_some() && e - now <= EXPIRING_SOON_SECONDS => finding(
                "exception_expiring",
                &r.id,
                format!("exception {} expires at {} ({})", r.id, format_rfc3339(e), countdown(e - now)),
            ),
            _ => {}
        }
    }
    for a in &approvers {
        if a.used_by.is_empty() {
            finding("unused_approver", &a.id, format!("approver {} is used by no step-up rule", a.id));
        }
    }

    let mut controls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut untagged_rules = Vec::new();
    for r in &bundle.rules {
        match &r.controls {
            Some(tags) if !tags.is_empty() => {
                for tag in tags {
                    let rules = controls.entry(tag.clone()).or_default();
                    if !rules.contains(&r.id) {
                        rules.push(r.id.clone());
                    }
                }
            }
            _ => untagged_rules.push(r.id.clone()),
        }
    }

    let public_routes = bundle
        .public_routes
        .iter()
        .map(|p| PublicRouteEntry {
            id: p.id.clone(),
            host: p.host.clone().unwrap_or_else(|| "*".into()),
            methods: if p.cors_preflight { vec!["OPTIONS".into()] } else { p.methods.clone() },
            path: p.path.clone(),
            cors_preflight: p.cors_preflight,
        })
        .collect();
    let protected_resources = bundle
        .protected_resources
        .iter()
        .zip(compiled.protected_resources())
        .map(|(r, (_, metadata_url, served))| ProtectedResourceEntry {
            resource: r.resource.clone(),
            covers: match (&r.mcp_server, &r.host) {
                (Some(s), _) => format!("mcp_server {s}"),
                (None, h) => format!("host {}", h.as_deref().unwrap_or("")),
            },
            authorization_servers: r.authorization_servers.clone(),
            metadata_url: metadata_url.to_string(),
            served_by_gateway: served,
        })
        .collect();
    let limits = limit_entries(compiled);
    let pins = bundle
        .mcp_servers
        .iter()
        .map(|server| {
            let mut unpinned: Vec<String> = bundle
                .tools
                .iter()
                .flat_map(|t| t.mcp.iter())
                .filter(|m| m.server == server.name)
                .filter_map(|m| m.tool.clone())
                .filter(|t| !server.pins.contains_key(t))
                .collect();
            unpinned.sort();
            unpinned.dedup();
            PinsEntry {
                server: server.name.clone(),
                pinned: server.pinned,
                pinned_tools: server.pins.keys().cloned().collect(),
                unpinned_tools: unpinned,
            }
        })
        .collect();

    Report {
        bundle: name.to_string(),
        summary,
        access,
        exceptions,
        step_up,
        approvers,
        public_routes,
        protected_resources,
        limits,
        findings,
        controls,
        untagged_rules,
        pins,
    }
}

pub fn describe_grant(g: &Grant) -> String {
    let mut s = match g.effect {
        "step_up" => {
            let mut s = format!("step-up via {}", list(&g.approvers));
            if let Some(age) = g.max_age_seconds {
                let _ = write!(s, " (max {age} s)");
            }
            s
        }
        other => other.to_string(),
    };
    let _ = write!(s, " by {}", g.rule);
    let mut marks = Vec::new();
    if g.shadow {
        marks.push("SHADOW: logged, not enforced".to_string());
    }
    match (&g.exception, &g.expires_at, g.expired) {
        (_, Some(at), true) => marks.push(format!("EXPIRED at {at}")),
        (Some(ticket), Some(at), false) => marks.push(format!("exception {ticket} until {at}")),
        (None, Some(at), false) => marks.push(format!("until {at}")),
        _ => {}
    }
    if !g.conditions.is_empty() {
        marks.push(format!("conditional: {}", g.conditions.join("; ")));
    }
    if !marks.is_empty() {
        let _ = write!(s, " [{}]", marks.join("] ["));
    }
    s
}

/// The text form.
/// The limits from the compiled bundle (the core's selector expansion and units).
fn limit_entries(compiled: &CompiledBundle) -> Vec<LimitEntry> {
    use warden_core::limits::{units_value, Kind};
    compiled
        .limits()
        .iter()
        .enumerate()
        .map(|(i, l)| LimitEntry {
            id: l.id.to_string(),
            kind: l.kind.as_str(),
            tools: compiled.limits().tools_of(i as u32).map(|t| compiled.tool_id(ToolIdx(t)).to_string()).collect(),
            per: l.per.iter().map(|k| k.as_str()).collect(),
            window_seconds: l.window,
            max: match &l.kind {
                Kind::Calls { max } => serde_json::Value::from(*max),
                Kind::Budget { max, .. } => units_value(*max),
            },
            argument: match &l.kind {
                Kind::Budget { argument, .. } => Some(argument.to_string()),
                Kind::Calls { .. } => None,
            },
            owner: l.owner.as_deref().map(str::to_string),
        })
        .collect()
}

pub fn render_text(r: &Report) -> String {
    let mut o = String::new();
    macro_rules! line {
        () => { o.push('\n') };
        ($($t:tt)*) => {{ let _ = writeln!(o, $($t)*); }};
    }
    let s = &r.summary;
    line!("# Policy report: {}", r.bundle);
    line!();
    line!("- revision: {}", s.revision);
    line!("- owner: {}", s.owner);
    line!("- authority: {}", s.authority);
    line!("- issued: {}", s.issued_at);
    if s.expires_in_seconds > 0 {
        line!("- expires: {} (in {})", s.expires_at, crate::sign::human_duration(s.expires_in_seconds));
    } else {
        line!("- expires: {} (EXPIRED: gateways refuse it)", s.expires_at);
    }
    line!("- report time: {}", s.now);
    line!(
        "- {} tools, {} rules ({} allow, {} step-up, {} deny; {} exceptions, {} shadow), {} issuers, {} approvers, {} MCP servers",
        s.tools,
        s.rules,
        s.allow_rules,
        s.step_up_rules,
        s.deny_rules,
        s.exceptions,
        s.shadow_rules,
        s.issuers,
        s.approvers,
        s.mcp_servers
    );
    line!("- requests that reach no tool: {}", s.unknown_tool);

    line!();
    line!("## Access");
    line!();
    line!("For each agent pattern: the tools its rules reach (payment, admin, write, read), the effect and the rule.");
    line!("Rules are listed in precedence order (deny, step-up, allow); the first that applies decides.");
    for row in &r.access {
        line!();
        if row.agents == "*" {
            line!("### every agent (*)");
        } else {
            line!("### {}", row.agents);
        }
        line!();
        for t in &row.tools {
            let grants: Vec<String> = t.rules.iter().map(describe_grant).collect();
            line!("- {} {}: {}", t.sensitivity, t.tool, grants.join("; then "));
        }
        if !row.no_rule.is_empty() {
            line!("- no rule (denied, no_matching_rule): {}", list(&row.no_rule));
        }
    }

    line!();
    line!("## Exceptions");
    line!();
    if r.exceptions.is_empty() {
        line!("none");
    }
    for e in &r.exceptions {
        line!("- {}: {}", e.rule, countdown(e.seconds_left));
        line!("  - tools: {}", list(&e.tools));
        line!("  - agents: {}", list(&e.agents));
        line!("  - approver: {}, ticket: {}", e.approver, e.ticket);
        line!("  - granted_at: {}, expires_at: {}", e.granted_at, e.expires_at);
        match &e.environments {
            Some(envs) => line!("  - environments: {}", list(envs)),
            None => line!("  - environments: any"),
        }
    }

    line!();
    line!("## Step-up");
    line!();
    if r.step_up.is_empty() {
        line!("none");
    }
    for e in &r.step_up {
        let approvers: Vec<String> = e.approvers.iter().map(|a| format!("{} ({})", a.id, a.iss)).collect();
        line!(
            "- {}: tools {}; agents {}; approvers {}; max approval age {} s",
            e.rule,
            list(&e.tools),
            list(&e.agents),
            list(&approvers),
            e.max_age_seconds
        );
    }
    if !r.approvers.is_empty() {
        line!();
        line!("Approvers:");
        for a in &r.approvers {
            let used = if a.used_by.is_empty() { "no rule".to_string() } else { list(&a.used_by) };
            line!(
                "- {}: iss {}, {} keys {}, max {} s; used by {}",
                a.id,
                a.iss,
                list(&a.algorithms),
                list(&a.kids),
                a.max_approval_age_seconds,
                used
            );
        }
    }

    line!();
    line!("## Public routes and discovery");
    line!();
    line!("Requests these match need no identity: no token is read, none is forwarded; each is still recorded.");
    if r.public_routes.is_empty() && r.protected_resources.is_empty() {
        line!();
        line!("none");
    }
    for p in &r.public_routes {
        let what = if p.cors_preflight { "CORS preflight".to_string() } else { list(&p.methods) };
        line!("- {}: {} {}{}", p.id, what, p.host, p.path);
    }
    for e in &r.protected_resources {
        let by = if e.served_by_gateway { "served by the gateway" } else { "served elsewhere" };
        line!(
            "- protected resource {} ({}): authorization servers {}; metadata {} ({by})",
            e.resource,
            e.covers,
            list(&e.authorization_servers),
            e.metadata_url
        );
    }

    line!();
    line!("## Limits");
    line!();
    if r.limits.is_empty() {
        line!("none");
    } else {
        line!("Counted per proxy process after the decision allows a call (fleet-wide limits: envoy/ratelimit/).");
    }
    for l in &r.limits {
        let what = match &l.argument {
            Some(arg) => format!("at most {} of argument {arg}", l.max),
            None => format!("at most {} calls", l.max),
        };
        let per =
            if l.per.is_empty() { "for all callers together".to_string() } else { format!("per {}", l.per.join(", ")) };
        let owner = l.owner.as_deref().map(|o| format!("; owner {o}")).unwrap_or_default();
        line!(
            "- {} ({}): {what} per {} {per}; tools {}{owner}",
            l.id,
            l.kind,
            crate::sign::human_duration(l.window_seconds),
            list(&l.tools)
        );
    }

    line!();
    line!("## Pinned tool definitions");
    line!();
    if r.pins.is_empty() {
        line!("no MCP server");
    }
    for p in &r.pins {
        let pinned = if p.pinned { "pinned (every tool needs a pin)" } else { "not pinned" };
        let tools = if p.pinned_tools.is_empty() { "none".to_string() } else { list(&p.pinned_tools) };
        line!("- {}: {pinned}; pins {tools}", p.server);
        if !p.unpinned_tools.is_empty() {
            let effect = if p.pinned { "removed from listings and refused" } else { "definitions not checked" };
            line!("  - bound without a pin ({effect}): {}", list(&p.unpinned_tools));
        }
    }

    line!();
    line!("## Findings");
    line!();
    if r.findings.is_empty() {
        line!("none");
    }
    for f in &r.findings {
        line!("- {}", f.message);
    }

    line!();
    line!("## Controls");
    line!();
    if r.controls.is_empty() {
        line!("no rule is tagged with a control");
    }
    for (tag, rules) in &r.controls {
        line!("- {tag}: {}", list(rules));
    }
    if !r.untagged_rules.is_empty() {
        line!("- rules with no control tag: {}", list(&r.untagged_rules));
    }
    o
}

pub fn run(args: &Args) -> Result<Status> {
    let now = files::now(args.now.as_deref())?;
    let checked = match lint::check_file(&args.bundle)? {
        Ok(c) => c,
        Err(diagnostics) => {
            lint::report(&args.bundle, &diagnostics);
            return Ok(Status::Failed);
        }
    };
    let name = args.bundle.display().to_string();
    let report = build(&name, &checked.bundle, &checked.compiled, now);
    match args.format {
        Format::Text => print!("{}", render_text(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str, now: &str) -> Report {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples").join(name);
        let checked = lint::check_file(&path).unwrap().unwrap();
        build(name, &checked.bundle, &checked.compiled, parse_rfc3339(now).unwrap())
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    fn assert_lines(text: &str, expected: &[&str]) {
        let have = lines(text);
        for e in expected {
            assert!(have.contains(e), "missing line {e:?} in:\n{text}");
        }
    }

    #[test]
    fn finance_report_lists_access_exceptions_step_up_findings_and_controls() {
        let text = render_text(&example("finance-agent.json", "2026-11-28T10:00:00Z"));
        assert_lines(
            &text,
            &[
                "# Policy report: finance-agent.json",
                "- revision: 17",
                "- owner: identity-security@acme.example",
                "- authority: policy.acme.example",
                "- expires: 2027-12-31T00:00:00Z (in 397d 14h)",
                "- report time: 2026-11-28T10:00:00Z",
                "- 7 tools, 4 rules (2 allow, 1 step-up, 1 deny; 1 exceptions, 0 shadow), 1 issuers, 1 approvers, 0 MCP servers",
                "- requests that reach no tool: deny",
                // Every agent: only the payout ban.
                "### every agent (*)",
                "- payment payments.payouts.create: deny by finance-never-payouts",
                "- no rule (denied, no_matching_rule): payments.refunds.create, ledger.export, billing.invoices.void, payments.charges.read, payments.refunds.read, billing.invoices.read",
                "### spiffe://acme.example/agents/finance/*",
                "- payment payments.refunds.create: step-up via payments-approvals (max 300 s) by finance-refunds-step-up [conditional: task_purposes customer-refund]",
                "- read payments.charges.read: allow by finance-read",
                "- no rule (denied, no_matching_rule): ledger.export, billing.invoices.void",
                // The reconciler gets the finance rules plus its exception.
                "### spiffe://acme.example/agents/finance/reconciler",
                "- write billing.invoices.void: allow by q4-close-void-invoices [exception FIN-2026-Q4-17 until 2026-12-24T00:00:00Z] [conditional: environments prod]",
                "- no rule (denied, no_matching_rule): ledger.export",
                // Exceptions.
                "- q4-close-void-invoices: 25 days left",
                "  - tools: billing.invoices.void",
                "  - agents: spiffe://acme.example/agents/finance/reconciler",
                "  - approver: cfo@acme.example, ticket: FIN-2026-Q4-17",
                "  - granted_at: 2026-11-25T00:00:00Z, expires_at: 2026-12-24T00:00:00Z",
                "  - environments: prod",
                // Step-up.
                "- finance-refunds-step-up: tools payments.refunds.create; agents spiffe://acme.example/agents/finance/*; approvers payments-approvals (https://approvals.acme.example); max approval age 300 s",
                "- payments-approvals: iss https://approvals.acme.example, EdDSA keys payments-approvals-test-1, max 600 s; used by finance-refunds-step-up",
                // Controls.
                "- NIST-AI-RMF:GOVERN-1.2: finance-never-payouts, finance-refunds-step-up",
                "- OWASP-ASI02: finance-never-payouts, finance-refunds-step-up",
                "- OWASP-ASI03: finance-refunds-step-up, finance-read",
                "- rules with no control tag: q4-close-void-invoices",
                // Limits.
                "- refunds-per-task (calls): at most 3 calls per 1d 0h per agent, task; tools payments.refunds.create; owner payments-risk@acme.example",
                "- finance-reads-per-agent (calls): at most 120 calls per 1m 0s per agent; tools payments.charges.read, payments.refunds.read, billing.invoices.read",
            ],
        );
        // Nothing to flag in the finance example at this time: owners, references, no unconditioned payment allow.
        let findings = text.split("## Findings\n\n").nth(1).unwrap().split("\n\n").next().unwrap();
        assert_eq!(findings, "none");
    }

    #[test]
    fn an_exception_near_its_end_and_after_it_is_a_finding() {
        let r = example("finance-agent.json", "2026-12-20T00:00:00Z");
        let text = render_text(&r);
        assert_lines(
            &text,
            &[
                "- q4-close-void-invoices: 4 days left",
                "- exception q4-close-void-invoices expires at 2026-12-24T00:00:00Z (4 days left)",
            ],
        );
        let r = example("finance-agent.json", "2026-12-25T00:00:00Z");
        let text = render_text(&r);
        assert_lines(
            &text,
            &[
                "- q4-close-void-invoices: EXPIRED 1d 0h ago",
                "- rule q4-close-void-invoices expired at 2026-12-24T00:00:00Z and is still in the bundle",
                "- write billing.invoices.void: allow by q4-close-void-invoices [EXPIRED at 2026-12-24T00:00:00Z] [conditional: environments prod]",
            ],
        );
        assert_eq!(r.exceptions[0].seconds_left, -86_400);
        assert!(r.exceptions[0].expired);
    }

    #[test]
    fn support_and_coding_reports() {
        let text = render_text(&example("support-agent.json", "2026-11-28T10:00:00Z"));
        assert_lines(
            &text,
            &[
                "### spiffe://acme.example/agents/support/*",
                "- admin crm.contacts.delete: deny by support-no-writes",
                "- write crm.contacts.update: deny by support-no-writes",
                "- read crm.contacts.read: allow by support-read-crm [conditional: environments prod, staging; issuers acme-workload]",
                "## Exceptions",
                "- OWASP-ASI03: support-read-crm",
            ],
        );
        let coding = render_text(&example("coding-agent.json", "2026-11-28T10:00:00Z"));
        assert_lines(
            &coding,
            &[
                "- admin deploy.release: deny by coding-not-in-prod [conditional: environments prod]; then deny by coding-no-deploys",
                "- write scm.pulls.create: deny by coding-not-in-prod [conditional: environments prod]; then allow by coding-staging [conditional: environments staging, dev; issuers acme-ci]",
                "- OWASP-ASI05: coding-no-deploys",
            ],
        );
        // No exception, no step-up in these examples.
        assert!(coding.contains("## Exceptions\n\nnone\n"), "{coding}");
        assert!(coding.contains("## Step-up\n\nnone\n"), "{coding}");
    }

    #[test]
    fn findings_name_missing_owners_references_unconditioned_allows_and_unused_approvers() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/finance-agent.json");
        let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        // A standing allow on payments, with no owner and no reference, and the step-up rule removed.
        b["rules"][1] = serde_json::json!({"id": "refunds-open", "effect": "allow", "tools": ["payments.*"],
            "agents": ["spiffe://acme.example/agents/finance/*"]});
        b["rules"][2]["shadow"] = serde_json::json!(true);
        let bundle: Bundle = serde_json::from_value(b).unwrap();
        let compiled = warden_core::compile::compile(&bundle).unwrap();
        let r = build("b.json", &bundle, &compiled, parse_rfc3339("2026-11-28T10:00:00Z").unwrap());
        let text = render_text(&r);
        assert_lines(
            &text,
            &[
                "- rule refunds-open has no owner",
                "- rule refunds-open has no approval reference",
                "- rule refunds-open allows payments.refunds.create (payment), payments.payouts.create (payment) without argument conditions",
                "- approver payments-approvals is used by no step-up rule",
                "- read payments.charges.read: allow by refunds-open; then allow by finance-read [SHADOW: logged, not enforced]",
                "- rules with no control tag: refunds-open, q4-close-void-invoices",
            ],
        );
        let kinds: Vec<&str> = r.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["no_owner", "no_approval_reference", "unconditioned_allow", "unused_approver"]);
    }

    #[test]
    fn public_routes_and_protected_resources_are_listed() {
        let r = example("support-agent.json", "2026-11-28T10:00:00Z");
        let text = render_text(&r);
        let section = text.split("## Public routes and discovery\n\n").nth(1).unwrap().split("\n\n").next().unwrap();
        assert_lines(
            section,
            &[
                "Requests these match need no identity: no token is read, none is forwarded; each is still recorded.",
                "- crm-health: GET, HEAD crm.acme.example/healthz",
                "- crm-cors-preflight: CORS preflight crm.acme.example/api/v2/contacts/{contact_id}",
                "- protected resource https://crm.acme.example (host crm.acme.example): authorization servers \
                 https://spire.acme.example; metadata https://crm.acme.example/.well-known/oauth-protected-resource \
                 (served by the gateway)",
            ],
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["public_routes"][1]["methods"], serde_json::json!(["OPTIONS"]));
        assert_eq!(v["protected_resources"][0]["served_by_gateway"], true);
    }

    #[test]
    fn pinned_servers_and_unpinned_tools() {
        let text = render_text(&example("payments-mcp.json", "2026-11-28T10:00:00Z"));
        assert!(
            text.contains(
                "## Pinned tool definitions\n\n- payments-mcp: pinned (every tool needs a pin); pins get_charge, refund\n"
            ),
            "{text}"
        );
        let unpinned = example("finance-agent.json", "2026-11-28T10:00:00Z");
        assert!(unpinned.pins.iter().all(|p| !p.pinned && p.pinned_tools.is_empty()), "{:?}", unpinned.pins);
        // A pinned server with a bound tool left unpinned names it.
        let mut bundle: Bundle = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/payments-mcp.json"),
            )
            .unwrap(),
        )
        .unwrap();
        bundle.mcp_servers[0].pins.remove("refund");
        let compiled = warden_core::compile::compile(&bundle).unwrap();
        let r = build("b", &bundle, &compiled, 0);
        assert_eq!(r.pins[0].unpinned_tools, vec!["refund".to_string()]);
        assert!(render_text(&r).contains("  - bound without a pin (removed from listings and refused): refund"));
        let warnings = crate::lint::warnings(&bundle, &compiled);
        assert!(warnings.iter().any(|w| w.message.contains("\"refund\", which the catalog binds, has no pin")));
    }

    #[test]
    fn the_json_form_has_every_section() {
        let r = example("finance-agent.json", "2026-11-28T10:00:00Z");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["summary"]["revision"], 17);
        assert_eq!(v["exceptions"][0]["seconds_left"], 25 * 86_400 + 14 * 3_600);
        assert_eq!(v["exceptions"][0]["environments"], serde_json::json!(["prod"]));
        assert_eq!(v["step_up"][0]["approvers"][0]["iss"], "https://approvals.acme.example");
        assert_eq!(v["step_up"][0]["max_age_seconds"], 300);
        assert_eq!(
            v["controls"]["OWASP-ASI02"],
            serde_json::json!(["finance-never-payouts", "finance-refunds-step-up"])
        );
        assert_eq!(v["untagged_rules"], serde_json::json!(["q4-close-void-invoices"]));
        let finance_row = &v["access"][1];
        assert_eq!(finance_row["agents"], "spiffe://acme.example/agents/finance/*");
        assert_eq!(finance_row["tools"][0]["tool"], "payments.refunds.create");
        assert_eq!(finance_row["tools"][0]["rules"][0]["effect"], "step_up");
        assert_eq!(finance_row["tools"][0]["rules"][0]["approvers"], serde_json::json!(["payments-approvals"]));
        assert_eq!(
            finance_row["tools"][0]["rules"][0]["conditions"],
            serde_json::json!(["task_purposes customer-refund"])
        );
        assert_eq!(finance_row["tools"][1]["tool"], "payments.payouts.create");
        assert_eq!(finance_row["tools"][1]["rules"][0]["effect"], "deny");
        assert_eq!(v["findings"], serde_json::json!([]));
        assert_eq!(v["limits"][0]["id"], "refunds-per-task");
        assert_eq!(v["limits"][0]["per"], serde_json::json!(["agent", "task"]));
        assert_eq!(v["limits"][0]["max"], 3);
    }

    #[test]
    fn budgets_are_reported_with_their_argument() {
        let r = example("refund-budget.json", "2026-11-28T10:00:00Z");
        assert_lines(
            &render_text(&r),
            &["- refund-budget-per-task (budget): at most 500 of argument /amount per 1d 0h per task; tools refunds.issue; owner payments-risk@acme.example"],
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["limits"][0]["argument"], "/amount");
        assert_eq!(v["limits"][0]["window_seconds"], 86_400);
    }

    #[test]
    fn selectors_expand_like_the_core() {
        let r = example("support-agent.json", "2026-11-28T10:00:00Z");
        let row = r.access.iter().find(|a| a.agents == "spiffe://acme.example/agents/support/*").unwrap();
        let reached: Vec<&str> = row.tools.iter().map(|t| t.tool.as_str()).collect();
        assert_eq!(
            reached,
            [
                "crm.contacts.delete",
                "crm.contacts.update",
                "crm.tickets.comment",
                "crm.contacts.search",
                "crm.contacts.read",
                "crm.tickets.read",
                "kb.articles.read"
            ]
        );
    }
}
