//! Validation of an authored bundle and its compilation into the indexed form `decide` uses.
//!
//! [`compile`] checks everything at once and reports every problem with a JSON-pointer location into the bundle
//! (`/rules/3/tools/0`) and a message that says what is wrong; the messages are part of the interface (tested
//! verbatim, documented in `policies/README.md`). A bundle that validates becomes a [`CompiledBundle`]:
//!
//! - tool selectors (ids, `namespace.*` patterns, sensitivities) are expanded against the finite catalog, so each tool
//!   holds the rules that can apply to it; rules that select every tool (no `tools`, or `*`) sit in one bundle-wide
//!   list instead of being copied to every tool;
//! - agent patterns are interned into classes and each candidate list is keyed by class (see `index`), so `decide`
//!   does work proportional to the agent id's segments and the few candidate rules, never to the number of rules;
//! - HTTP routes go into a host → method → segment-trie table (see `route`);
//! - shadow rules (`shadow: true`) go into a separate candidate index that only [`crate::decide::shadow`] walks, so
//!   the enforced decision never sees them and a bundle without shadow rules pays nothing for the feature;
//! - approvers' keys are parsed once ([`crate::approval::ApproverSet`]); each `step_up` rule keeps its approvers
//!   and its effective approval lifetime, each exception its grant (`not_before` = `granted_at`, before which it
//!   does not match) and, without an `environments` selector of its own, `exception_policy.environments`;
//! - rule ids map to rule indexes, for the accessors the filter uses after a decision
//!   ([`CompiledBundle::step_up_requirement`], [`CompiledBundle::exception_of`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::approval::ApproverSet;
use crate::args::{compile_conditions, Conditions};
use crate::bundle::{Bundle, Effect, Sensitivity, FORMAT_V1};
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::identity::IssuerSet;
use crate::index::{parse_agent_pattern, AgentIndex, Candidates, ALL_TOOLS, ANY_AGENT};
use crate::mcp::index::{McpIndex, McpTarget};
use crate::mcp::parse::McpMessage;
use crate::route::{self, HostPattern, RouteTable};
use crate::time::parse_rfc3339;
use crate::vocab::McpServerIdx;
use crate::vocab::ALL_SENSITIVITIES;
pub use crate::vocab::{valid_id, ToolIdx, ValidationError, ValidationErrors};

/// A validated, indexed bundle, ready for the request path.
#[derive(Debug)]
pub struct CompiledBundle {
    pub revision: u64,
    /// Seconds since the epoch.
    pub issued_at: i64,
    /// Seconds since the epoch.
    pub expires_at: i64,
    pub owner: String,
    pub authority: String,
    /// The trusted token issuers with their keys parsed.
    pub issuers: IssuerSet,
    /// The trusted approval services (step-up approvals) with their keys parsed.
    pub approvers: ApproverSet,
    pub(crate) revoked_signing_keys: Vec<String>,
    pub(crate) unknown_tool: Effect,
    pub(crate) tools: Vec<CompiledTool>,
    pub(crate) tool_ids: HashMap<String, ToolIdx, crate::fxhash::FxBuild>,
    pub(crate) rules: Vec<CompiledRule>,
    /// Rule id → index in `rules` (the key shares the rule's `id`).
    pub(crate) rule_index: FxHashMap<Arc<str>, u32>,
    pub(crate) routes: RouteTable,
    /// Agent classes and revoked agents.
    pub(crate) agents: AgentIndex,
    /// Candidate rules by (tool or every tool, agent class), shadow rules left out.
    pub(crate) candidates: Candidates,
    /// The shadow rules' candidates, the same way; `None` when the bundle has no shadow rule.
    pub(crate) shadow_candidates: Option<Candidates>,
    pub(crate) revoked_tasks: FxHashSet<Box<str>>,
    pub(crate) revoked_tokens: FxHashSet<Box<str>>,
    /// MCP servers and what their messages reach.
    pub(crate) mcp: McpIndex,
}

#[derive(Debug)]
pub(crate) struct CompiledTool {
    pub(crate) id: Box<str>,
    pub(crate) sensitivity: Sensitivity,
    pub(crate) log_arguments: bool,
}

/// A `step_up` rule's requirement, compiled.
#[derive(Debug)]
pub(crate) struct CompiledStepUp {
    /// Indexes into the bundle's [`ApproverSet`], in the rule's order.
    pub(crate) approvers: Box<[u32]>,
    /// Effective longest approval lifetime: the rule's `max_age_seconds`, else the smallest of its approvers'.
    pub(crate) max_age: u64,
}

/// An exception's grant, compiled (its `expires_at` is the rule's).
#[derive(Debug)]
pub(crate) struct CompiledException {
    pub(crate) approver: Box<str>,
    pub(crate) ticket: Box<str>,
    pub(crate) granted_at: i64,
}

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) id: Arc<str>,
    pub(crate) effect: Effect,
    /// Present on time-boxed exceptions.
    pub(crate) exception: Option<Box<CompiledException>>,
    pub(crate) expires_at: Option<i64>,
    /// The rule does not match before this time (an exception's `granted_at`).
    pub(crate) not_before: Option<i64>,
    /// Present on `step_up` rules.
    pub(crate) step_up: Option<Box<CompiledStepUp>>,
    /// A shadow rule: only in the shadow candidate index.
    pub(crate) shadow: bool,
    /// Bit per [`Sensitivity`] (see `Sensitivity::bit`); all bits when the rule has no sensitivity selector.
    pub(crate) sensitivities: u8,
    pub(crate) environments: Option<Box<[Box<str>]>>,
    pub(crate) task_purposes: Option<Box<[Box<str>]>>,
    pub(crate) issuers: Option<Box<[Box<str>]>>,
    /// Delegator patterns (`*` suffix: prefix match).
    pub(crate) delegators: Option<Box<[Box<str>]>>,
    pub(crate) max_delegation_depth: Option<u32>,
    pub(crate) require_sender_binding: bool,
    pub(crate) owner: Option<String>,
    /// Argument conditions, compiled (`None`: the rule has none).
    pub(crate) conditions: Option<Conditions>,
}

impl CompiledRule {
    /// The lowest precedence key this rule can produce (its candidate lists are sorted by it): a step-up rule with
    /// conditions denies when they cannot be evaluated, so it ranks with the deny rules.
    pub(crate) fn floor_key(&self, index: u32) -> u64 {
        let rank = match (self.effect, &self.conditions) {
            (Effect::StepUp, Some(_)) => Effect::Deny.rank(),
            (effect, _) => effect.rank(),
        };
        (rank << 32) | u64::from(index)
    }
}

/// A rule as reports list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo<'a> {
    pub id: &'a str,
    pub effect: Effect,
    pub owner: Option<&'a str>,
    /// Whether the rule is a time-boxed exception.
    pub exception: bool,
    /// Seconds since the epoch, when the rule expires.
    pub expires_at: Option<i64>,
    /// Whether the rule is a shadow rule (evaluated and logged, never enforced).
    pub shadow: bool,
}

/// What approval lets a call through a `step_up` rule: what the step-up reply states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpRequirement<'a> {
    /// The approvers whose approvals count, as (`id`, `iss`), in the rule's order.
    pub approvers: Vec<(&'a str, &'a str)>,
    /// Longest accepted approval lifetime (`exp - iat`) in seconds: the rule's `max_age_seconds`, else the smallest
    /// `max_approval_age_seconds` of its approvers.
    pub max_age_seconds: u64,
}

/// A time-boxed exception's grant: it matches from `granted_at` (inclusive) to `expires_at` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionInfo<'a> {
    /// Who approved the exception.
    pub approver: &'a str,
    /// The ticket reference.
    pub ticket: &'a str,
    /// Seconds since the epoch.
    pub granted_at: i64,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

impl CompiledBundle {
    /// The tool an HTTP request reaches: `host` as sent (port and case ignored), `method` as sent (case-sensitive),
    /// `path` the normalized path without its query. See `policies/README.md` ("Tool resolution").
    pub fn resolve_http(&self, host: &str, method: &str, path: &str) -> Option<ToolIdx> {
        self.routes.resolve(host, method, path)
    }

    /// The tool with this id.
    pub fn tool_by_id(&self, id: &str) -> Option<ToolIdx> {
        self.tool_ids.get(id).copied()
    }

    /// The id of a tool (empty for an index from another bundle).
    pub fn tool_id(&self, t: ToolIdx) -> &str {
        self.tools.get(t.0 as usize).map(|tool| &*tool.id).unwrap_or("")
    }

    /// The sensitivity of a tool (`admin`, the most sensitive, for an index from another bundle).
    pub fn tool_sensitivity(&self, t: ToolIdx) -> Sensitivity {
        self.tools.get(t.0 as usize).map(|tool| tool.sensitivity).unwrap_or(Sensitivity::Admin)
    }

    /// Whether decision records carry this tool's arguments in clear (`log_arguments`; false for an index from
    /// another bundle).
    pub fn logs_arguments(&self, t: ToolIdx) -> bool {
        self.tools.get(t.0 as usize).is_some_and(|tool| tool.log_arguments)
    }

    fn rule(&self, rule_id: &str) -> Option<&CompiledRule> {
        self.rule_index.get(rule_id).and_then(|&i| self.rules.get(i as usize))
    }

    pub(crate) fn step_up_of(&self, rule_id: &str) -> Option<&CompiledStepUp> {
        self.rule(rule_id).and_then(|r| r.step_up.as_deref())
    }

    /// What approval a `step_up` rule requires (`None` for another rule or an unknown id).
    pub fn step_up_requirement(&self, rule_id: &str) -> Option<StepUpRequirement<'_>> {
        let step_up = self.step_up_of(rule_id)?;
        let approvers = step_up
            .approvers
            .iter()
            .filter_map(|&a| self.approvers.get(a))
            .map(|a| (a.id.as_str(), a.iss.as_str()))
            .collect();
        Some(StepUpRequirement { approvers, max_age_seconds: step_up.max_age })
    }

    /// The grant of a time-boxed exception (`None` for another rule or an unknown id).
    pub fn exception_of(&self, rule_id: &str) -> Option<ExceptionInfo<'_>> {
        let rule = self.rule(rule_id)?;
        let exception = rule.exception.as_deref()?;
        Some(ExceptionInfo {
            approver: &exception.approver,
            ticket: &exception.ticket,
            granted_at: exception.granted_at,
            expires_at: rule.expires_at.unwrap_or(i64::MIN),
        })
    }

    /// Whether the bundle has shadow rules (when it has none, [`crate::decide::shadow`] returns at once).
    pub fn has_shadow_rules(&self) -> bool {
        self.shadow_candidates.is_some()
    }

    /// Number of tools in the catalog.
    pub fn tool_count(&self) -> usize {
        self.tools.len()
    }

    /// Key ids of bundle-signing keys this bundle revokes.
    pub fn revoked_signing_keys(&self) -> &[String] {
        &self.revoked_signing_keys
    }

    /// The effect for requests that reach no tool (`deny` or `allow`).
    pub fn default_unknown_tool(&self) -> Effect {
        self.unknown_tool
    }

    /// The rules in bundle order.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = RuleInfo<'_>> + '_ {
        self.rules.iter().map(|r| RuleInfo {
            id: &r.id,
            effect: r.effect,
            owner: r.owner.as_deref(),
            exception: r.exception.is_some(),
            expires_at: r.expires_at,
            shadow: r.shadow,
        })
    }
}

impl CompiledBundle {
    /// The MCP server a request goes to: `host` as sent (port and case ignored), `path` the normalized path without
    /// its query. `None`: not an MCP endpoint of the catalog (HTTP routes apply).
    pub fn resolve_mcp_server(&self, host: &str, path: &str) -> Option<McpServerIdx> {
        self.mcp.resolve_server(host, path)
    }

    /// The server's name (empty for an index from another bundle).
    pub fn mcp_server_name(&self, s: McpServerIdx) -> &str {
        self.mcp.server_name(s)
    }

    /// Whether the server accepts JSON-RPC batches (`false` for an index from another bundle).
    pub fn mcp_batches(&self, s: McpServerIdx) -> bool {
        self.mcp.batches(s)
    }

    /// The server's `lifecycle` effect (`deny` for an index from another bundle).
    pub fn mcp_lifecycle(&self, s: McpServerIdx) -> Effect {
        self.mcp.lifecycle(s)
    }

    /// Number of MCP servers in the catalog.
    pub fn mcp_server_count(&self) -> usize {
        self.mcp.server_count()
    }

    /// What a message reaches on a server.
    pub fn resolve_mcp(&self, s: McpServerIdx, msg: &McpMessage) -> McpTarget {
        self.mcp.resolve(s, msg)
    }

    /// The tool a `tools/call` of `name` would reach on a server (for `tools/list` filtering).
    pub fn mcp_tool(&self, s: McpServerIdx, name: &str) -> Option<ToolIdx> {
        self.mcp.tool(s, name)
    }
}

fn bad_id(id: &str) -> String {
    format!(
        "invalid id \"{id}\": use lower-case letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit"
    )
}

fn bad_time(value: &str) -> String {
    format!("invalid timestamp \"{value}\": expected RFC 3339 in UTC, like \"2026-11-28T10:00:00Z\"")
}

const EMPTY_LIST: &str = "empty list: omit the field to match everything";
const EMPTY_STRING: &str = "must not be empty";

/// Which tools a rule selects.
enum ToolSelection {
    /// Every tool (no `tools` selector, or `*`), possibly narrowed by sensitivity at decision time.
    All,
    /// These tools (already narrowed by sensitivity).
    Some(Vec<u32>),
}

/// A JSON-pointer location (`{parent}{field}/{index}`), formatted only when an error reports it: a valid bundle
/// reports none, so nothing is formatted for it.
struct Loc<'a>(&'a dyn fmt::Display, &'static str, usize);

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}/{}", self.0, self.1, self.2)
    }
}

/// Validates `bundle` and builds its indexed form. Reports every problem at once.
pub fn compile(bundle: &Bundle) -> Result<CompiledBundle, ValidationErrors> {
    let mut errs: Vec<ValidationError> = Vec::new();
    let mut err = |loc: String, msg: String| errs.push(ValidationError { location: loc, message: msg });

    // Header.
    if bundle.format != FORMAT_V1 {
        err("/format".into(), format!("unsupported format \"{}\": expected \"{FORMAT_V1}\"", bundle.format));
    }
    let issued_at = parse_rfc3339(&bundle.issued_at);
    if issued_at.is_none() {
        err("/issued_at".into(), bad_time(&bundle.issued_at));
    }
    let expires_at = parse_rfc3339(&bundle.expires_at);
    if expires_at.is_none() {
        err("/expires_at".into(), bad_time(&bundle.expires_at));
    }
    if let (Some(i), Some(e)) = (issued_at, expires_at) {
        if e <= i {
            err("/expires_at".into(), "must be later than issued_at".into());
        }
    }
    if bundle.owner.trim().is_empty() {
        err("/owner".into(), EMPTY_STRING.into());
    }
    if bundle.authority.trim().is_empty() {
        err("/authority".into(), EMPTY_STRING.into());
    }

    // Issuers: keys and settings are the identity module's to check.
    let issuers = match IssuerSet::compile(&bundle.issuers) {
        Ok(set) => Some(set),
        Err(list) => {
            for e in list {
                err(e.location, e.message);
            }
            None
        }
    };
    let issuer_ids: FxHashSet<&str> = bundle.issuers.iter().map(|i| i.id.as_str()).collect();

    // Approvers: keys and settings are the approval module's to check. Step-up rules name them by id.
    let approvers = match ApproverSet::compile(&bundle.approvers) {
        Ok(set) => Some(set),
        Err(list) => {
            for e in list {
                err(e.location, e.message);
            }
            None
        }
    };
    let mut approver_ids: FxHashMap<&str, (u32, u64)> = FxHashMap::default();
    for (ai, a) in bundle.approvers.iter().enumerate() {
        approver_ids.entry(a.id.as_str()).or_insert((ai as u32, a.max_approval_age_seconds));
    }
    let known_approvers = Known(&bundle.approvers);

    // Exception policy.
    let policy = &bundle.exception_policy;
    let max_days = policy.max_duration_days;
    let max_days_ok = (1..=MAX_EXCEPTION_DAYS).contains(&max_days);
    if !max_days_ok {
        err(
            "/exception_policy/max_duration_days".into(),
            format!("must be 1 to {MAX_EXCEPTION_DAYS}, found {max_days}"),
        );
    }
    let exception_envs: Option<Box<[Box<str>]>> = match &policy.environments {
        None => None,
        Some(list) => {
            if list.is_empty() {
                err(
                    "/exception_policy/environments".into(),
                    "empty list: omit the field to allow exceptions in every environment".into(),
                );
            }
            for (i, e) in list.iter().enumerate() {
                if e.is_empty() {
                    err(format!("/exception_policy/environments/{i}"), EMPTY_STRING.into());
                }
            }
            Some(list.iter().map(|e| e.as_str().into()).collect())
        }
    };

    // Tool catalog and routes.
    let mut tool_ids: HashMap<String, ToolIdx, crate::fxhash::FxBuild> = HashMap::default();
    let mut routes = RouteTable::default();
    for (ti, tool) in bundle.tools.iter().enumerate() {
        let at = Loc(&"", "/tools", ti);
        if !valid_id(&tool.id) {
            err(format!("{at}/id"), bad_id(&tool.id));
        } else if let Some(first) = tool_ids.get(&tool.id) {
            err(format!("{at}/id"), format!("duplicate tool id \"{}\" (first defined at /tools/{})", tool.id, first.0));
        } else {
            tool_ids.insert(tool.id.clone(), ToolIdx(ti as u32));
        }
        for (hi, m) in tool.http.iter().enumerate() {
            let hat = Loc(&at, "/http", hi);
            let host = match &m.host {
                None => Some(HostPattern::Any),
                Some(h) => match route::parse_host(h) {
                    Ok(p) => Some(p),
                    Err(detail) => {
                        err(format!("{hat}/host"), format!("invalid host \"{h}\": {detail}"));
                        None
                    }
                },
            };
            let mut methods_ok = true;
            for (mi, method) in m.methods.iter().enumerate() {
                if !route::valid_method(method) {
                    methods_ok = false;
                    err(
                        format!("{hat}/methods/{mi}"),
                        format!("invalid method \"{method}\": use an upper-case HTTP method such as \"GET\""),
                    );
                }
            }
            let path = match route::parse_path(&m.path) {
                Ok(p) => Some(p),
                Err(detail) => {
                    err(format!("{hat}/path"), format!("invalid path pattern \"{}\": {detail}", m.path));
                    None
                }
            };
            if let (Some(host), Some(path), true) = (host, path, methods_ok) {
                if let Err((oti, ohi)) =
                    routes.insert(&host, &m.methods, &path, ToolIdx(ti as u32), (ti as u32, hi as u32))
                {
                    let other = bundle.tools.get(oti as usize).map(|t| t.id.as_str()).unwrap_or("");
                    err(
                        hat.to_string(),
                        format!(
                            "ambiguous route: same host, method and path as /tools/{oti}/http/{ohi} (tool \"{other}\")"
                        ),
                    );
                }
            }
        }
    }

    // Namespace selectors (`ns.*`): every namespace prefix of every tool id (`a` and `a.b` for `a.b.c`) to its
    // tools, so that each selector is one lookup.
    let mut namespaces: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
    for (ti, tool) in bundle.tools.iter().enumerate() {
        let id = tool.id.as_str();
        for (p, b) in id.bytes().enumerate() {
            if b == b'.' && p + 1 < id.len() {
                namespaces.entry(&id[..p]).or_default().push(ti as u32);
            }
        }
    }

    // Rules.
    // Rule id → index, first definition of each valid id: duplicate detection, and the compiled bundle's index
    // (complete when the bundle has no error).
    let mut rule_index: FxHashMap<Arc<str>, u32> = FxHashMap::default();
    rule_index.reserve(bundle.rules.len());
    let mut classes = AgentIndex::new();
    let mut compiled_rules: Vec<CompiledRule> = Vec::with_capacity(bundle.rules.len());
    // (scope, class, rule) triples for the index, and for the shadow rules' index.
    let mut triples: Vec<(u32, u32, u32)> = Vec::new();
    let mut shadow_triples: Vec<(u32, u32, u32)> = Vec::new();
    for (ri, rule) in bundle.rules.iter().enumerate() {
        let at = Loc(&"", "/rules", ri);
        let id: Arc<str> = Arc::from(rule.id.as_str());
        if !valid_id(&rule.id) {
            err(format!("{at}/id"), bad_id(&rule.id));
        } else if let Some(first) = rule_index.get(rule.id.as_str()) {
            err(format!("{at}/id"), format!("duplicate rule id \"{}\" (first defined at /rules/{first})", rule.id));
        } else {
            rule_index.insert(Arc::clone(&id), ri as u32);
        }

        // Agents.
        let mut agent_classes: Vec<u32> = Vec::new();
        match &rule.agents {
            None => agent_classes.push(ANY_AGENT),
            Some(list) if list.is_empty() => err(format!("{at}/agents"), EMPTY_LIST.into()),
            Some(list) => {
                for (ai, pattern) in list.iter().enumerate() {
                    match parse_agent_pattern(pattern) {
                        Some(p) => agent_classes.push(classes.intern(p)),
                        None => err(
                            format!("{at}/agents/{ai}"),
                            format!(
                                "invalid agent pattern \"{pattern}\": use an exact id, a prefix ending in \"/*\", or \"*\""
                            ),
                        ),
                    }
                }
            }
        }
        if agent_classes.contains(&ANY_AGENT) {
            agent_classes = vec![ANY_AGENT];
        }

        // Sensitivities.
        let mut sens_mask = ALL_SENSITIVITIES;
        let mut sens_ok = true;
        match &rule.sensitivities {
            None => {}
            Some(list) if list.is_empty() => {
                sens_ok = false;
                err(format!("{at}/sensitivities"), EMPTY_LIST.into());
            }
            Some(list) => {
                sens_mask = 0;
                for (si, s) in list.iter().enumerate() {
                    sens_mask |= s.bit();
                    if !bundle.tools.iter().any(|t| t.sensitivity == *s) {
                        sens_ok = false;
                        err(
                            format!("{at}/sensitivities/{si}"),
                            format!("no tool in the catalog has sensitivity \"{}\"", s.as_str()),
                        );
                    }
                }
            }
        }

        // Tools.
        let selection = match &rule.tools {
            None => ToolSelection::All,
            Some(list) if list.is_empty() => {
                err(format!("{at}/tools"), EMPTY_LIST.into());
                ToolSelection::Some(Vec::new())
            }
            Some(list) if list.iter().any(|t| t == "*") => ToolSelection::All,
            Some(list) => {
                let mut picked: Vec<u32> = Vec::new();
                let mut selection_ok = true;
                for (si, sel) in list.iter().enumerate() {
                    let loc = || format!("{at}/tools/{si}");
                    if let Some(ns) = sel.strip_suffix(".*") {
                        if !valid_id(ns) {
                            selection_ok = false;
                            err(loc(), bad_tool_selector(sel));
                            continue;
                        }
                        match namespaces.get(ns) {
                            Some(tools) => picked.extend_from_slice(tools),
                            None => {
                                selection_ok = false;
                                err(loc(), format!("pattern \"{sel}\" matches no tool"));
                            }
                        }
                    } else if !valid_id(sel) {
                        selection_ok = false;
                        err(loc(), bad_tool_selector(sel));
                    } else {
                        match tool_ids.get(sel) {
                            Some(t) => picked.push(t.0),
                            None => {
                                selection_ok = false;
                                err(loc(), format!("unknown tool \"{sel}\""));
                            }
                        }
                    }
                }
                picked.sort_unstable();
                picked.dedup();
                picked
                    .retain(|&ti| bundle.tools.get(ti as usize).is_some_and(|t| sens_mask & t.sensitivity.bit() != 0));
                if picked.is_empty() && selection_ok && sens_ok && rule.sensitivities.is_some() {
                    err(at.to_string(), "selects no tool: none of its tools has one of its sensitivities".into());
                }
                ToolSelection::Some(picked)
            }
        };

        // Argument conditions.
        let conditions = match &rule.conditions {
            None => None,
            Some(list) => match compile_conditions(list, &format!("{at}/conditions")) {
                Ok(c) => Some(c),
                Err(list) => {
                    for e in list {
                        err(e.location, e.message);
                    }
                    None
                }
            },
        };

        // Environments, task purposes, issuers.
        let environments = string_list(&rule.environments, format_args!("{at}/environments"), &mut err);
        let task_purposes = string_list(&rule.task_purposes, format_args!("{at}/task_purposes"), &mut err);
        let rule_issuers = string_list(&rule.issuers, format_args!("{at}/issuers"), &mut err);
        let delegators = string_list(&rule.delegators, format_args!("{at}/delegators"), &mut err);
        if let Some(list) = &rule.delegators {
            for (di, d) in list.iter().enumerate() {
                if d.len() > 1 && d[..d.len() - 1].contains('*') {
                    err(
                        format!("{at}/delegators/{di}"),
                        format!(
                            "invalid delegator pattern \"{d}\": use an exact id, a prefix ending in \"*\", or \"*\""
                        ),
                    );
                }
            }
        }
        if rule.require_sender_binding && rule.effect == Effect::Deny {
            err(
                format!("{at}/require_sender_binding"),
                "not allowed on a deny rule: a deny must not stop applying to requests without mTLS".into(),
            );
        }
        if let Some(list) = &rule.issuers {
            for (ii, id) in list.iter().enumerate() {
                if !id.is_empty() && !issuer_ids.contains(id.as_str()) {
                    err(format!("{at}/issuers/{ii}"), format!("unknown issuer \"{id}\""));
                }
            }
        }

        // Expiry and exceptions.
        let rule_expires = match &rule.expires_at {
            None => None,
            Some(v) => {
                let parsed = parse_rfc3339(v);
                if parsed.is_none() {
                    err(format!("{at}/expires_at"), bad_time(v));
                }
                parsed
            }
        };
        let mut exception = None;
        let mut not_before = None;
        if let Some(exc) = &rule.exception {
            if rule.effect != Effect::Allow {
                err(
                    format!("{at}/exception"),
                    format!("only allow rules can be exceptions; this rule's effect is \"{}\"", rule.effect.as_str()),
                );
            }
            if rule.expires_at.is_none() {
                err(format!("{at}/expires_at"), "missing: an exception must have expires_at".into());
            }
            if exc.approver.trim().is_empty() {
                err(format!("{at}/exception/approver"), EMPTY_STRING.into());
            }
            if exc.ticket.trim().is_empty() {
                err(format!("{at}/exception/ticket"), EMPTY_STRING.into());
            }
            let granted_at = parse_rfc3339(&exc.granted_at);
            if granted_at.is_none() {
                err(format!("{at}/exception/granted_at"), bad_time(&exc.granted_at));
            }
            if let (Some(g), Some(e)) = (granted_at, rule_expires) {
                let limit = i64::from(max_days) * DAY;
                if e <= g {
                    err(format!("{at}/exception/granted_at"), "must be earlier than expires_at".into());
                } else if max_days_ok && e - g > limit {
                    err(
                        format!("{at}/expires_at"),
                        format!(
                            "the exception lasts {} from granted_at, longer than exception_policy.max_duration_days \
                             ({max_days} days)",
                            duration(e - g)
                        ),
                    );
                }
            }
            if let (Some(allowed), Some(list)) = (&policy.environments, &rule.environments) {
                for (ei, env) in list.iter().enumerate() {
                    if !env.is_empty() && !allowed.contains(env) {
                        err(
                            format!("{at}/environments/{ei}"),
                            format!(
                                "environment \"{env}\" is not allowed for exceptions: exception_policy.environments is \
                                 [{}]",
                                quoted(allowed)
                            ),
                        );
                    }
                }
            }
            not_before = granted_at;
            exception = Some(Box::new(CompiledException {
                approver: exc.approver.as_str().into(),
                ticket: exc.ticket.as_str().into(),
                granted_at: granted_at.unwrap_or(i64::MAX),
            }));
        }
        // An exception without an environment selector applies only where exceptions may apply.
        let environments = match (environments, &exception_envs) {
            (None, Some(allowed)) if exception.is_some() => Some(allowed.clone()),
            (envs, _) => envs,
        };

        // Step-up.
        let step_up = match (&rule.step_up, rule.effect) {
            (None, Effect::StepUp) => {
                err(
                    format!("{at}/step_up"),
                    "missing: a step_up rule must name the approvers whose approvals let a call through".into(),
                );
                None
            }
            (None, _) => None,
            (Some(_), effect @ (Effect::Allow | Effect::Deny)) => {
                err(
                    format!("{at}/step_up"),
                    format!("only step_up rules can have step_up; this rule's effect is \"{}\"", effect.as_str()),
                );
                None
            }
            (Some(s), Effect::StepUp) => {
                compile_step_up(s, format_args!("{at}/step_up"), &approver_ids, known_approvers, &mut err).map(Box::new)
            }
        };

        // Controls (free tags for reports).
        if let Some(list) = &rule.controls {
            if list.is_empty() {
                err(
                    format!("{at}/controls"),
                    "empty list: omit the field when the rule implements no tagged control".into(),
                );
            }
            for (ci, c) in list.iter().enumerate() {
                if c.trim().is_empty() {
                    err(format!("{at}/controls/{ci}"), EMPTY_STRING.into());
                }
            }
        }

        let rule_idx = ri as u32;
        let triples = if rule.shadow { &mut shadow_triples } else { &mut triples };
        match &selection {
            ToolSelection::All => triples.extend(agent_classes.iter().map(|&c| (ALL_TOOLS, c, rule_idx))),
            ToolSelection::Some(picked) => {
                for &ti in picked {
                    let scope = Candidates::tool_scope(ti);
                    triples.extend(agent_classes.iter().map(|&c| (scope, c, rule_idx)));
                }
            }
        }
        compiled_rules.push(CompiledRule {
            id,
            effect: rule.effect,
            exception,
            expires_at: rule_expires,
            not_before,
            step_up,
            shadow: rule.shadow,
            sensitivities: sens_mask,
            environments,
            task_purposes,
            issuers: rule_issuers,
            delegators,
            max_delegation_depth: rule.max_delegation_depth,
            require_sender_binding: rule.require_sender_binding,
            owner: rule.owner.clone(),
            conditions,
        });
    }

    // Revocations.
    for id in revocation_set(&bundle.revocations.agents, "/revocations/agents", &mut err) {
        classes.revoke(&id);
    }
    let revoked_tasks = revocation_set(&bundle.revocations.tasks, "/revocations/tasks", &mut err);
    let revoked_tokens = revocation_set(&bundle.revocations.token_ids, "/revocations/token_ids", &mut err);
    for (i, k) in bundle.revocations.signing_keys.iter().enumerate() {
        if k.is_empty() {
            err(format!("/revocations/signing_keys/{i}"), EMPTY_STRING.into());
        }
    }

    // MCP servers and the tools' MCP bindings.
    let mcp = McpIndex::build(bundle, &mut err);

    // Defaults.
    if bundle.defaults.unknown_tool == Effect::StepUp {
        err(
            "/defaults/unknown_tool".into(),
            "must be \"deny\" or \"allow\": step_up needs a known tool to bind the approval to".into(),
        );
    }

    let (Some(issuers), Some(approvers), Some(issued_at), Some(expires_at), true) =
        (issuers, approvers, issued_at, expires_at, errs.is_empty())
    else {
        return Err(ValidationErrors(errs));
    };

    let key = |r: u32| -> u64 {
        compiled_rules.get(r as usize).map(|rule| rule.floor_key(r)).unwrap_or(((u64::MAX >> 32) << 32) | u64::from(r))
    };
    let tools = bundle
        .tools
        .iter()
        .map(|t| CompiledTool { id: t.id.as_str().into(), sensitivity: t.sensitivity, log_arguments: t.log_arguments })
        .collect();
    let candidates = Candidates::build(triples, key);
    let shadow_candidates =
        if compiled_rules.iter().any(|r| r.shadow) { Some(Candidates::build(shadow_triples, key)) } else { None };

    Ok(CompiledBundle {
        revision: bundle.revision,
        issued_at,
        expires_at,
        owner: bundle.owner.clone(),
        authority: bundle.authority.clone(),
        issuers,
        approvers,
        revoked_signing_keys: bundle.revocations.signing_keys.clone(),
        unknown_tool: bundle.defaults.unknown_tool,
        tools,
        tool_ids,
        rules: compiled_rules,
        rule_index,
        routes,
        agents: classes,
        candidates,
        shadow_candidates,
        revoked_tasks,
        revoked_tokens,
        mcp,
    })
}

/// Largest `exception_policy.max_duration_days`.
pub const MAX_EXCEPTION_DAYS: u32 = 365;

const DAY: i64 = 86_400;

/// A duration in words: `31 days`, `30 days 01:00:00`, `1 day`.
fn duration(seconds: i64) -> String {
    let (days, rest) = (seconds / DAY, seconds % DAY);
    let unit = if days == 1 { "day" } else { "days" };
    if rest == 0 {
        format!("{days} {unit}")
    } else {
        format!("{days} {unit} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
    }
}

/// `"a", "b"`.
fn quoted(list: &[String]) -> String {
    list.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

/// The bundle's approver ids, for messages (formatted only when an error reports them).
#[derive(Clone, Copy)]
struct Known<'a>(&'a [crate::bundle::Approver]);

impl fmt::Display for Known<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("the bundle has no approvers");
        }
        f.write_str("known approvers: ")?;
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{}\"", a.id)?;
        }
        Ok(())
    }
}

/// A rule's `step_up`: its approvers must be known, and its `max_age_seconds` at most theirs.
fn compile_step_up(
    step_up: &crate::bundle::StepUp,
    at: fmt::Arguments<'_>,
    approver_ids: &FxHashMap<&str, (u32, u64)>,
    known: Known<'_>,
    err: &mut impl FnMut(String, String),
) -> Option<CompiledStepUp> {
    if step_up.approvers.is_empty() {
        err(format!("{at}/approvers"), "at least one approver is required".into());
    }
    let mut picked: Vec<u32> = Vec::with_capacity(step_up.approvers.len());
    let mut smallest: Option<u64> = None;
    let mut all_known = true;
    for (ai, id) in step_up.approvers.iter().enumerate() {
        match approver_ids.get(id.as_str()) {
            Some(&(index, _)) if picked.contains(&index) => {
                err(format!("{at}/approvers/{ai}"), format!("duplicate approver \"{id}\""));
            }
            Some(&(index, max_age)) => {
                picked.push(index);
                smallest = Some(smallest.map_or(max_age, |m| m.min(max_age)));
            }
            None => {
                all_known = false;
                err(format!("{at}/approvers/{ai}"), format!("unknown approver \"{id}\" ({known})"));
            }
        }
    }
    match (step_up.max_age_seconds, smallest) {
        (Some(0), _) => err(format!("{at}/max_age_seconds"), "must be at least 1".into()),
        (Some(n), Some(limit)) if all_known && n > limit => err(
            format!("{at}/max_age_seconds"),
            format!(
                "must be at most {limit}, the smallest max_approval_age_seconds of the rule's approvers, found {n}"
            ),
        ),
        _ => {}
    }
    let smallest = smallest?;
    Some(CompiledStepUp {
        approvers: picked.into_boxed_slice(),
        max_age: step_up.max_age_seconds.map_or(smallest, |n| n.min(smallest)),
    })
}

fn bad_tool_selector(sel: &str) -> String {
    format!("invalid tool selector \"{sel}\": use a tool id, \"namespace.*\" or \"*\"")
}

fn string_list(
    list: &Option<Vec<String>>,
    at: fmt::Arguments<'_>,
    err: &mut impl FnMut(String, String),
) -> Option<Box<[Box<str>]>> {
    let list = list.as_ref()?;
    if list.is_empty() {
        err(at.to_string(), EMPTY_LIST.into());
    }
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            err(format!("{at}/{i}"), EMPTY_STRING.into());
        }
    }
    Some(list.iter().map(|s| s.as_str().into()).collect())
}

fn revocation_set(list: &[String], at: &str, err: &mut impl FnMut(String, String)) -> FxHashSet<Box<str>> {
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            err(format!("{at}/{i}"), EMPTY_STRING.into());
        }
    }
    list.iter().map(|s| s.as_str().into()).collect()
}
