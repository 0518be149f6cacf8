//! Validation of an authored bundle and its compilation into the indexed form `decide` uses.
//!
//! The checks are split by section: `catalog` (header, exception policy, tools and routes), `rules` (every rule's
//! selectors, conditions, exception and step-up), and the identity, approval and MCP modules for their own parts;
//! `query` answers questions about a compiled bundle for offline tools (`warden report`).
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
//! - limits (`limits`) are validated and indexed by the tools they count ([`crate::limits::Limits`]);
//! - rule ids map to rule indexes, for the accessors the filter uses after a decision
//!   ([`CompiledBundle::step_up_requirement`], [`CompiledBundle::exception_of`]).

mod catalog;
mod limits;
mod public;
mod query;
mod rules;

pub use public::{PublicTarget, WELL_KNOWN};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::approval::{self, ApprovalFailure, ApproverSet, CallBinding, VerifiedApproval};
use crate::args::{Conditions, FailedCondition};
use crate::bundle::{Bundle, Effect, Sensitivity};
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::identity::IssuerSet;
use crate::index::{AgentIndex, Candidates};
use crate::mcp::index::{McpIndex, McpTarget};
use crate::mcp::parse::McpMessage;
use crate::pins::ServerPins;
use crate::route::RouteTable;
use crate::vocab::McpServerIdx;
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
    /// Public routes and protected resources (RFC 9728).
    pub(crate) public: public::PublicIndex,
    /// Rate limits and budgets, by tool.
    pub(crate) limits: crate::limits::Limits,
}

#[derive(Debug)]
pub(crate) struct CompiledTool {
    pub(crate) id: Box<str>,
    pub(crate) sensitivity: Sensitivity,
    pub(crate) log_arguments: bool,
}

/// A `step_up` rule's requirement, compiled.
pub(crate) use crate::approval::StepUpPolicy as CompiledStepUp;

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
    /// The reference to the approval that justifies the rule (ticket, change request).
    pub(crate) approval: Option<String>,
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

    /// For a request that reaches no tool: the tool whose route it misses only by spelling (letter case, a trailing
    /// `/`, a `.suffix`, `HEAD` for `GET`; `policies/README.md`, "Near misses").
    pub fn near_miss_tool(&self, host: &str, method: &str, path: &str) -> Option<ToolIdx> {
        self.routes.near_miss(host, method, path)
    }

    /// For a request that reaches no MCP server: the server whose path it misses only by spelling.
    pub fn near_miss_mcp_server(&self, host: &str, path: &str) -> Option<McpServerIdx> {
        self.mcp.near_miss(host, path)
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

    /// Verifies an approval presented for a call that rule `rule_id` sent to step-up ([`crate::approval`]'s
    /// checks, with the rule's approvers and lifetime; any other rule or an unknown id allows no approver).
    pub fn verify_approval(
        &self,
        rule_id: &str,
        token: &str,
        call: &CallBinding<'_>,
        now: i64,
    ) -> Result<VerifiedApproval, ApprovalFailure> {
        approval::verify(&self.approvers, self.step_up_of(rule_id), token, call, now)
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

    /// Whom to ask about a rule's decision: its `owner` (else the bundle's) and its `approval` reference. For a
    /// default's decision (`rule_id` `default` or unknown), the bundle's owner and no reference.
    pub fn rule_contact(&self, rule_id: &str) -> (&str, Option<&str>) {
        match self.rule(rule_id) {
            Some(r) => (r.owner.as_deref().unwrap_or(&self.owner), r.approval.as_deref()),
            None => (&self.owner, None),
        }
    }

    /// The argument condition of rule `rule_id` that did not hold for these arguments (the first false one, else
    /// the first that cannot be evaluated): what an `invalid_arguments` refusal names.
    pub fn failed_condition(&self, rule_id: &str, arguments: Option<&serde_json::Value>) -> Option<FailedCondition> {
        self.rule(rule_id)?.conditions.as_ref()?.failure(arguments)
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

    /// The bundle's rate limits and budgets.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.limits
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
    /// What a request reaches that needs no identity: a public route, or a protected resource's metadata document
    /// the gateway serves. `host` as sent, `path` normalized without its query; `preflight`: the request is a CORS
    /// preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, no body). See `policies/README.md`,
    /// "Public routes".
    pub fn resolve_public(&self, host: &str, method: &str, path: &str, preflight: bool) -> Option<PublicTarget> {
        self.public.resolve(host, method, path, preflight)
    }

    /// The id of the public route at this index (empty for an index from another bundle).
    pub fn public_route_id(&self, i: u32) -> &str {
        self.public.route_id(i)
    }

    /// The metadata URL a 401 of this request points to (RFC 9728 section 5.1 `resource_metadata`): the protected
    /// resource of its MCP server, else of its host; `None` when none covers it.
    pub fn resource_metadata_url(&self, server: Option<McpServerIdx>, host: &str) -> Option<&str> {
        self.public.resource_for(server, host).map(|r| &*r.metadata_url)
    }

    /// The metadata document (JSON) the gateway serves for the protected resource at this index (`None`: it points
    /// to a `metadata_url` served elsewhere, or an index from another bundle).
    pub fn resource_document(&self, i: u32) -> Option<&str> {
        self.public.resources.get(i as usize).and_then(|r| r.document.as_deref())
    }

    /// The protected resources as (resource identifier, metadata URL, served by the gateway), in bundle order.
    pub fn protected_resources(&self) -> impl ExactSizeIterator<Item = (&str, &str, bool)> + '_ {
        self.public.resources.iter().map(|r| (&*r.resource, &*r.metadata_url, r.document.is_some()))
    }

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

    /// The server's pinned tool definitions (`None` for an index from another bundle).
    pub fn mcp_pins(&self, s: McpServerIdx) -> Option<&ServerPins> {
        self.mcp.pins(s)
    }

    /// The MCP tool names a server's `tools/call`s reach in the catalog, with their tools (any order).
    pub fn mcp_bound_tools(&self, s: McpServerIdx) -> impl Iterator<Item = (&str, ToolIdx)> {
        self.mcp.bound_tools(s)
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

    let (issued_at, expires_at) = catalog::header(bundle, &mut err);
    // Issuers and approvers: keys and settings are the identity and approval modules' to check.
    let issuers = collect(IssuerSet::compile(&bundle.issuers), &mut err);
    let approvers = collect(ApproverSet::compile(&bundle.approvers), &mut err);
    let limits = catalog::exception_limits(&bundle.exception_policy, &mut err);
    let catalog = catalog::catalog(bundle, &mut err);
    let limit_set = limits::limits(bundle, &catalog, &mut err);
    let rule_set = rules::rules(bundle, &rules::Context::new(bundle, &catalog, &limits), &mut err);
    let rules::RuleSet { rule_index, mut classes, rules: compiled_rules, triples, shadow_triples } = rule_set;

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

    // Public routes and protected resources (after the catalog and the MCP servers they must not overlap).
    let public = public::public(bundle, &mut err);

    // Defaults.
    if bundle.defaults.unknown_tool == Effect::StepUp {
        err(
            "/defaults/unknown_tool".into(),
            "must be \"deny\" or \"allow\": step_up needs a known tool to bind the approval to".into(),
        );
    }

    let (Some(mut issuers), Some(approvers), Some(issued_at), Some(expires_at), true) =
        (issuers, approvers, issued_at, expires_at, errs.is_empty())
    else {
        return Err(ValidationErrors(errs));
    };
    // `decide` reads `agent.sender_bound` only for a rule that requires sender binding (shadow rules included).
    issuers.sender_bound_unused = !compiled_rules.iter().any(|r| r.require_sender_binding);

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
        tool_ids: catalog.tool_ids,
        rules: compiled_rules,
        rule_index,
        routes: catalog.routes,
        agents: classes,
        candidates,
        shadow_candidates,
        revoked_tasks,
        revoked_tokens,
        mcp,
        public,
        limits: limit_set,
    })
}

/// A section compiled by another module: its value, or its errors reported.
fn collect<T>(result: Result<T, Vec<ValidationError>>, err: &mut impl FnMut(String, String)) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(list) => {
            for e in list {
                err(e.location, e.message);
            }
            None
        }
    }
}

/// Largest `exception_policy.max_duration_days`.
pub const MAX_EXCEPTION_DAYS: u32 = 365;

fn revocation_set(list: &[String], at: &str, err: &mut impl FnMut(String, String)) -> FxHashSet<Box<str>> {
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            err(format!("{at}/{i}"), EMPTY_STRING.into());
        }
    }
    list.iter().map(|s| s.as_str().into()).collect()
}
