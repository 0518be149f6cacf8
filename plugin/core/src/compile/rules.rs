//! Validation and compilation of the bundle's rules: each rule's selectors (agents into classes, tools expanded
//! against the catalog, sensitivities, environments, task purposes, issuers, delegation, sender binding), its
//! argument conditions, expiry, exception grant and step-up requirement, and the (scope, class, rule) triples the
//! candidate indexes are built from.

use std::fmt;
use std::sync::Arc;

use crate::args::compile_conditions;
use crate::bundle::{Approver, Bundle, Effect, Rule, StepUp};
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::index::{parse_agent_pattern, AgentIndex, Candidates, ALL_TOOLS, ANY_AGENT};
use crate::time::parse_rfc3339;
use crate::vocab::{valid_id, ALL_SENSITIVITIES};

use super::catalog::{Catalog, ExceptionLimits};
use super::{bad_id, bad_time, CompiledException, CompiledRule, CompiledStepUp, Loc, EMPTY_LIST, EMPTY_STRING};

const DAY: i64 = 86_400;

/// What rules are checked against besides the catalog.
pub(super) struct Context<'b> {
    pub(super) catalog: &'b Catalog<'b>,
    pub(super) limits: &'b ExceptionLimits,
    pub(super) issuer_ids: FxHashSet<&'b str>,
    /// Approver id → (index, `max_approval_age_seconds`), first definition of each.
    pub(super) approver_ids: FxHashMap<&'b str, (u32, u64)>,
    pub(super) known_approvers: Known<'b>,
}

impl<'b> Context<'b> {
    pub(super) fn new(bundle: &'b Bundle, catalog: &'b Catalog<'b>, limits: &'b ExceptionLimits) -> Context<'b> {
        let mut approver_ids: FxHashMap<&str, (u32, u64)> = FxHashMap::default();
        for (ai, a) in bundle.approvers.iter().enumerate() {
            approver_ids.entry(a.id.as_str()).or_insert((ai as u32, a.max_approval_age_seconds));
        }
        Context {
            catalog,
            limits,
            issuer_ids: bundle.issuers.iter().map(|i| i.id.as_str()).collect(),
            approver_ids,
            known_approvers: Known(&bundle.approvers),
        }
    }
}

/// The compiled rules and what the candidate indexes are built from.
pub(super) struct RuleSet {
    /// Rule id → index, first definition of each valid id (complete when the bundle has no error).
    pub(super) rule_index: FxHashMap<Arc<str>, u32>,
    pub(super) classes: AgentIndex,
    pub(super) rules: Vec<CompiledRule>,
    /// (scope, class, rule) triples of the enforced rules, and of the shadow rules.
    pub(super) triples: Vec<(u32, u32, u32)>,
    pub(super) shadow_triples: Vec<(u32, u32, u32)>,
}

/// Which tools a rule selects.
enum ToolSelection {
    /// Every tool (no `tools` selector, or `*`), possibly narrowed by sensitivity at decision time.
    All,
    /// These tools (already narrowed by sensitivity).
    Some(Vec<u32>),
}

pub(super) fn rules(bundle: &Bundle, cx: &Context<'_>, err: &mut impl FnMut(String, String)) -> RuleSet {
    let mut set = RuleSet {
        rule_index: FxHashMap::default(),
        classes: AgentIndex::new(),
        rules: Vec::with_capacity(bundle.rules.len()),
        triples: Vec::new(),
        shadow_triples: Vec::new(),
    };
    set.rule_index.reserve(bundle.rules.len());
    for (ri, rule) in bundle.rules.iter().enumerate() {
        let at = Loc(&"", "/rules", ri);
        let id: Arc<str> = Arc::from(rule.id.as_str());
        if !valid_id(&rule.id) {
            err(format!("{at}/id"), bad_id(&rule.id));
        } else if let Some(first) = set.rule_index.get(rule.id.as_str()) {
            err(format!("{at}/id"), format!("duplicate rule id \"{}\" (first defined at /rules/{first})", rule.id));
        } else {
            set.rule_index.insert(Arc::clone(&id), ri as u32);
        }
        let agent_classes = agent_classes(rule, &at, &mut set.classes, err);
        let (sensitivities, sensitivities_ok) = sensitivities(bundle, rule, &at, err);
        let selection = tool_selection(bundle, rule, &at, cx.catalog, sensitivities, sensitivities_ok, err);
        let compiled = compile_rule(rule, id, &at, cx, sensitivities, err);

        let rule_idx = ri as u32;
        let triples = if rule.shadow { &mut set.shadow_triples } else { &mut set.triples };
        match &selection {
            ToolSelection::All => triples.extend(agent_classes.iter().map(|&c| (ALL_TOOLS, c, rule_idx))),
            ToolSelection::Some(picked) => {
                for &ti in picked {
                    let scope = Candidates::tool_scope(ti);
                    triples.extend(agent_classes.iter().map(|&c| (scope, c, rule_idx)));
                }
            }
        }
        set.rules.push(compiled);
    }
    set
}

/// The agent classes a rule selects (`*` alone when it selects every agent).
fn agent_classes(
    rule: &Rule,
    at: &Loc<'_>,
    classes: &mut AgentIndex,
    err: &mut impl FnMut(String, String),
) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    match &rule.agents {
        None => out.push(ANY_AGENT),
        Some(list) if list.is_empty() => err(format!("{at}/agents"), EMPTY_LIST.into()),
        Some(list) => {
            for (ai, pattern) in list.iter().enumerate() {
                match parse_agent_pattern(pattern) {
                    Some(p) => out.push(classes.intern(p)),
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
    if out.contains(&ANY_AGENT) {
        out = vec![ANY_AGENT];
    }
    out
}

/// The rule's sensitivity mask, and whether its selector is valid.
fn sensitivities(bundle: &Bundle, rule: &Rule, at: &Loc<'_>, err: &mut impl FnMut(String, String)) -> (u8, bool) {
    match &rule.sensitivities {
        None => (ALL_SENSITIVITIES, true),
        Some(list) if list.is_empty() => {
            err(format!("{at}/sensitivities"), EMPTY_LIST.into());
            (ALL_SENSITIVITIES, false)
        }
        Some(list) => {
            let mut mask = 0;
            let mut ok = true;
            for (si, s) in list.iter().enumerate() {
                mask |= s.bit();
                if !bundle.tools.iter().any(|t| t.sensitivity == *s) {
                    ok = false;
                    err(
                        format!("{at}/sensitivities/{si}"),
                        format!("no tool in the catalog has sensitivity \"{}\"", s.as_str()),
                    );
                }
            }
            (mask, ok)
        }
    }
}

/// The tools a rule selects, expanded against the catalog and narrowed by its sensitivities.
fn tool_selection(
    bundle: &Bundle,
    rule: &Rule,
    at: &Loc<'_>,
    catalog: &Catalog<'_>,
    sensitivities: u8,
    sensitivities_ok: bool,
    err: &mut impl FnMut(String, String),
) -> ToolSelection {
    let list = match &rule.tools {
        None => return ToolSelection::All,
        Some(list) if list.is_empty() => {
            err(format!("{at}/tools"), EMPTY_LIST.into());
            return ToolSelection::Some(Vec::new());
        }
        Some(list) if list.iter().any(|t| t == "*") => return ToolSelection::All,
        Some(list) => list,
    };
    let (mut picked, selection_ok) = select_tools(list, &format_args!("{at}/tools"), catalog, err);
    picked.retain(|&ti| bundle.tools.get(ti as usize).is_some_and(|t| sensitivities & t.sensitivity.bit() != 0));
    if picked.is_empty() && selection_ok && sensitivities_ok && rule.sensitivities.is_some() {
        err(at.to_string(), "selects no tool: none of its tools has one of its sensitivities".into());
    }
    ToolSelection::Some(picked)
}

/// Everything of a rule but its agent and tool selection.
fn compile_rule(
    rule: &Rule,
    id: Arc<str>,
    at: &Loc<'_>,
    cx: &Context<'_>,
    sensitivities: u8,
    err: &mut impl FnMut(String, String),
) -> CompiledRule {
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
    let environments = string_list(&rule.environments, format_args!("{at}/environments"), err);
    let task_purposes = string_list(&rule.task_purposes, format_args!("{at}/task_purposes"), err);
    let issuers = string_list(&rule.issuers, format_args!("{at}/issuers"), err);
    let delegators = string_list(&rule.delegators, format_args!("{at}/delegators"), err);
    check_identity_selectors(rule, at, cx, err);
    let expires_at = match &rule.expires_at {
        None => None,
        Some(v) => {
            let parsed = parse_rfc3339(v);
            if parsed.is_none() {
                err(format!("{at}/expires_at"), bad_time(v));
            }
            parsed
        }
    };
    let exception = rule.exception.as_ref().map(|_| exception(rule, at, cx.limits, expires_at, err));
    let not_before = exception.as_ref().map(|e| e.granted_at).filter(|&g| g != i64::MAX);
    // An exception without an environment selector applies only where exceptions may apply.
    let environments = match (environments, &cx.limits.environments) {
        (None, Some(allowed)) if exception.is_some() => Some(allowed.clone()),
        (envs, _) => envs,
    };
    let step_up = step_up(rule, at, cx, err);
    check_controls(rule, at, err);
    CompiledRule {
        id,
        effect: rule.effect,
        exception: exception.map(Box::new),
        expires_at,
        not_before,
        step_up,
        shadow: rule.shadow,
        sensitivities,
        environments,
        task_purposes,
        issuers,
        delegators,
        max_delegation_depth: rule.max_delegation_depth,
        require_sender_binding: rule.require_sender_binding,
        owner: rule.owner.clone(),
        approval: rule.approval.clone(),
        conditions,
    }
}

/// Delegator patterns, sender binding and issuer ids.
fn check_identity_selectors(rule: &Rule, at: &Loc<'_>, cx: &Context<'_>, err: &mut impl FnMut(String, String)) {
    if let Some(list) = &rule.delegators {
        for (di, d) in list.iter().enumerate() {
            if d.len() > 1 && d[..d.len() - 1].contains('*') {
                err(
                    format!("{at}/delegators/{di}"),
                    format!("invalid delegator pattern \"{d}\": use an exact id, a prefix ending in \"*\", or \"*\""),
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
            if !id.is_empty() && !cx.issuer_ids.contains(id.as_str()) {
                err(format!("{at}/issuers/{ii}"), format!("unknown issuer \"{id}\""));
            }
        }
    }
}

/// A rule's exception grant (the rule has `exception`); `granted_at` is `i64::MAX` when invalid (reported).
fn exception(
    rule: &Rule,
    at: &Loc<'_>,
    limits: &ExceptionLimits,
    expires_at: Option<i64>,
    err: &mut impl FnMut(String, String),
) -> CompiledException {
    let Some(exc) = &rule.exception else {
        return CompiledException { approver: "".into(), ticket: "".into(), granted_at: i64::MAX };
    };
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
    if let (Some(g), Some(e)) = (granted_at, expires_at) {
        let limit = i64::from(limits.max_days) * DAY;
        if e <= g {
            err(format!("{at}/exception/granted_at"), "must be earlier than expires_at".into());
        } else if limits.max_days_ok && e - g > limit {
            err(
                format!("{at}/expires_at"),
                format!(
                    "the exception lasts {} from granted_at, longer than exception_policy.max_duration_days \
                     ({} days)",
                    duration(e - g),
                    limits.max_days
                ),
            );
        }
    }
    if let (Some(allowed), Some(list)) = (&limits.environments, &rule.environments) {
        for (ei, env) in list.iter().enumerate() {
            if !env.is_empty() && !allowed.iter().any(|a| **a == **env) {
                let allowed: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                err(
                    format!("{at}/environments/{ei}"),
                    format!(
                        "environment \"{env}\" is not allowed for exceptions: exception_policy.environments is [{}]",
                        quoted(&allowed)
                    ),
                );
            }
        }
    }
    CompiledException {
        approver: exc.approver.as_str().into(),
        ticket: exc.ticket.as_str().into(),
        granted_at: granted_at.unwrap_or(i64::MAX),
    }
}

/// A rule's step-up requirement: required on `step_up` rules, refused on others.
fn step_up(
    rule: &Rule,
    at: &Loc<'_>,
    cx: &Context<'_>,
    err: &mut impl FnMut(String, String),
) -> Option<Box<CompiledStepUp>> {
    match (&rule.step_up, rule.effect) {
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
            compile_step_up(s, format_args!("{at}/step_up"), &cx.approver_ids, cx.known_approvers, err).map(Box::new)
        }
    }
}

/// Controls are free tags for reports: present lists must not be empty, nor their entries.
fn check_controls(rule: &Rule, at: &Loc<'_>, err: &mut impl FnMut(String, String)) {
    let Some(list) = &rule.controls else { return };
    if list.is_empty() {
        err(format!("{at}/controls"), "empty list: omit the field when the rule implements no tagged control".into());
    }
    for (ci, c) in list.iter().enumerate() {
        if c.trim().is_empty() {
            err(format!("{at}/controls/{ci}"), EMPTY_STRING.into());
        }
    }
}

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
pub(super) struct Known<'a>(&'a [Approver]);

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
    step_up: &StepUp,
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

/// The catalog indexes of the tools a list of tool selectors (ids and `namespace.*`; `*` is the caller's) names,
/// sorted and deduplicated, and whether every selector was valid; errors are located at `{at}/J`. Rules and limits
/// select tools with it.
pub(super) fn select_tools(
    list: &[String],
    at: &dyn fmt::Display,
    catalog: &Catalog<'_>,
    err: &mut impl FnMut(String, String),
) -> (Vec<u32>, bool) {
    let mut picked: Vec<u32> = Vec::new();
    let mut ok = true;
    for (si, sel) in list.iter().enumerate() {
        let loc = || format!("{at}/{si}");
        if let Some(ns) = sel.strip_suffix(".*") {
            if !valid_id(ns) {
                ok = false;
                err(loc(), bad_tool_selector(sel));
                continue;
            }
            match catalog.namespaces.get(ns) {
                Some(tools) => picked.extend_from_slice(tools),
                None => {
                    ok = false;
                    err(loc(), format!("pattern \"{sel}\" matches no tool"));
                }
            }
        } else if !valid_id(sel) {
            ok = false;
            err(loc(), bad_tool_selector(sel));
        } else {
            match catalog.tool_ids.get(sel) {
                Some(t) => picked.push(t.0),
                None => {
                    ok = false;
                    err(loc(), format!("unknown tool \"{sel}\""));
                }
            }
        }
    }
    picked.sort_unstable();
    picked.dedup();
    (picked, ok)
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
