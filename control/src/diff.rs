//! `warden diff OLD NEW`: the review a bundle change needs before it is signed — who gains or loses which tool,
//! which rules, exceptions, revocations, catalog entries and trust anchors changed.
//!
//! Both bundles are validated and compiled first (as `warden lint`; a signed bundle is verified with `--keys`).
//! Access is compared through `warden report`'s access rows ([`report::access`], the core's `rules_for_agents`)
//! asked of both bundles with the union of their agent patterns, so a diff says exactly what the two reports would
//! say differently. Everything else is compared entry by entry by id, naming the fields that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use warden_core::bundle::Bundle;
use warden_core::compile::CompiledBundle;

use crate::eval::BundleSource;
use crate::files;
use crate::report::{self, Format, Grant};
use crate::Status;

/// Compare two bundles: what a reviewer must see before the new one is signed.
///
/// Prints, for every agent pattern either bundle's rules name (and `*`) and every tool of either catalog, the access
/// that changed: GAINED (no enforced rule let it through, now one does), LOST, STEP-UP ADDED / STEP-UP REMOVED, or
/// CHANGED (same reach, different rules or conditions); then rules, exceptions (added, removed, extended,
/// shortened), revocations (a lifted revocation is marked), tools, MCP servers, issuers, approvers and the header
/// (revision, expiry, owner, authority, defaults, exception policy), each change naming the fields it touched.
/// Shadow rules and rules expired at --now never count as reach. Exits 0 (with --exit-code: 1 when anything
/// differs).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle in force (JSON as authored, or signed: then --keys and --authority).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The proposed bundle.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    #[command(flatten)]
    source: BundleSource,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The time rule expiry is judged at (RFC 3339 UTC); default: the system clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Exit 1 when the bundles differ (as `git diff --exit-code`).
    #[arg(long)]
    exit_code: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub old: Side,
    pub new: Side,
    pub access: Vec<AccessChange>,
    pub rules: Vec<EntryChange>,
    pub exceptions: Vec<ExceptionChange>,
    pub revocations: Vec<RevocationChange>,
    pub tools: Vec<EntryChange>,
    pub mcp_servers: Vec<EntryChange>,
    pub issuers: Vec<EntryChange>,
    pub approvers: Vec<EntryChange>,
    pub header: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub file: String,
    pub revision: u64,
}

/// How far an agent pattern reaches a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// No enforced rule lets it through (or an unconditional deny applies).
    None,
    /// Through a step-up approval at best.
    StepUp,
    /// Some enforced allow rule can let it through.
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    Gained,
    Lost,
    StepUpAdded,
    StepUpRemoved,
    Changed,
}

impl AccessKind {
    fn label(self) -> &'static str {
        match self {
            AccessKind::Gained => "GAINED",
            AccessKind::Lost => "LOST",
            AccessKind::StepUpAdded => "STEP-UP ADDED",
            AccessKind::StepUpRemoved => "STEP-UP REMOVED",
            AccessKind::Changed => "CHANGED",
        }
    }
}

/// One (agent pattern, tool) whose access differs.
#[derive(Debug, Clone, Serialize)]
pub struct AccessChange {
    pub agents: String,
    pub tool: String,
    pub sensitivity: &'static str,
    pub change: AccessKind,
    pub old_reach: Reach,
    pub new_reach: Reach,
    /// The applicable rules, as `warden report` describes them (empty: no rule).
    pub old_rules: Vec<String>,
    pub new_rules: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Added,
    Removed,
    Changed,
}

/// A rule, tool, server, issuer or approver added, removed or changed.
#[derive(Debug, Clone, Serialize)]
pub struct EntryChange {
    pub id: String,
    pub change: EntryKind,
    /// The fields that differ, with both values (changed entries only).
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    Added,
    Removed,
    Extended,
    Shortened,
    Changed,
}

/// A time-boxed exception (a rule with `exception`) that appeared, went, or moved.
#[derive(Debug, Clone, Serialize)]
pub struct ExceptionChange {
    pub rule: String,
    pub change: ExceptionKind,
    pub ticket: String,
    pub old_expires_at: Option<String>,
    pub new_expires_at: Option<String>,
}

/// An entry of `revocations` added (`revoked: true`) or lifted.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationChange {
    /// `agents`, `tasks`, `token_ids` or `signing_keys`.
    pub kind: &'static str,
    pub id: String,
    pub revoked: bool,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.access.is_empty()
            && self.rules.is_empty()
            && self.exceptions.is_empty()
            && self.revocations.is_empty()
            && self.tools.is_empty()
            && self.mcp_servers.is_empty()
            && self.issuers.is_empty()
            && self.approvers.is_empty()
            && self.header.is_empty()
    }
}

/// The reach the applicable rules give, by the core's precedence (deny, step-up, allow): an unconditional deny
/// stops everything, an unconditional step-up stops plain allows, otherwise any allow can let the call through.
fn reach(grants: &[Grant]) -> Reach {
    let enforced: Vec<&Grant> = grants.iter().filter(|g| !g.shadow && !g.expired).collect();
    let unconditional = |effect: &str| enforced.iter().any(|g| g.effect == effect && g.conditions.is_empty());
    if unconditional("deny") {
        Reach::None
    } else if unconditional("step_up") {
        Reach::StepUp
    } else if enforced.iter().any(|g| g.effect == "allow") {
        Reach::Allow
    } else if enforced.iter().any(|g| g.effect == "step_up") {
        Reach::StepUp
    } else {
        Reach::None
    }
}

/// (pattern, tool) → (sensitivity, grants) for one bundle.
type AccessMap = BTreeMap<(String, String), (&'static str, Vec<Grant>)>;

fn access_map(bundle: &Bundle, compiled: &CompiledBundle, rows: &[String], now: i64) -> AccessMap {
    let mut map = AccessMap::new();
    for row in report::access(bundle, compiled, rows, now) {
        for t in row.tools {
            map.insert((row.agents.clone(), t.tool), (t.sensitivity, t.rules));
        }
    }
    map
}

fn compare_access(old: (&Bundle, &CompiledBundle), new: (&Bundle, &CompiledBundle), now: i64) -> Vec<AccessChange> {
    let mut rows = report::agent_patterns(old.0);
    for p in report::agent_patterns(new.0) {
        if !rows.contains(&p) {
            rows.push(p);
        }
    }
    let before = access_map(old.0, old.1, &rows, now);
    let after = access_map(new.0, new.1, &rows, now);
    let sensitivity_of = |tool: &str| -> &'static str {
        new.0.tools.iter().chain(&old.0.tools).find(|t| t.id == tool).map_or("read", |t| t.sensitivity.as_str())
    };
    let mut out = Vec::new();
    // Row order first (as the report), then tool order of the new catalog, then tools only the old one has.
    let mut tools: Vec<&str> = new.0.tools.iter().map(|t| t.id.as_str()).collect();
    for t in &old.0.tools {
        if !tools.contains(&t.id.as_str()) {
            tools.push(&t.id);
        }
    }
    let none: Vec<Grant> = Vec::new();
    for row in &rows {
        for &tool in &tools {
            let key = (row.clone(), tool.to_string());
            let old_grants = before.get(&key).map_or(&none, |(_, g)| g);
            let new_grants = after.get(&key).map_or(&none, |(_, g)| g);
            let old_rules: Vec<String> = old_grants.iter().map(report::describe_grant).collect();
            let new_rules: Vec<String> = new_grants.iter().map(report::describe_grant).collect();
            if old_rules == new_rules {
                continue;
            }
            let (old_reach, new_reach) = (reach(old_grants), reach(new_grants));
            let change = match (old_reach, new_reach) {
                (Reach::None, Reach::StepUp | Reach::Allow) => AccessKind::Gained,
                (Reach::StepUp | Reach::Allow, Reach::None) => AccessKind::Lost,
                (Reach::Allow, Reach::StepUp) => AccessKind::StepUpAdded,
                (Reach::StepUp, Reach::Allow) => AccessKind::StepUpRemoved,
                _ => AccessKind::Changed,
            };
            out.push(AccessChange {
                agents: row.clone(),
                tool: tool.to_string(),
                sensitivity: sensitivity_of(tool),
                change,
                old_reach,
                new_reach,
                old_rules,
                new_rules,
            });
        }
    }
    out
}

/// The fields of two JSON objects that differ (a field absent on one side is `null` there).
fn field_changes(old: &Value, new: &Value) -> Vec<FieldChange> {
    let empty = serde_json::Map::new();
    let (o, n) = (old.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (o.get(k).unwrap_or(&Value::Null), n.get(k).unwrap_or(&Value::Null));
            (a != b).then(|| FieldChange { field: k.clone(), old: a.clone(), new: b.clone() })
        })
        .collect()
}

/// Entries of one section (a list of objects keyed by `key`), in the new bundle's order, then removed ones.
fn compare_entries(old: &Value, new: &Value, key: &str) -> Vec<EntryChange> {
    let id = |v: &Value| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let (o, n) = (old.as_array().cloned().unwrap_or_default(), new.as_array().cloned().unwrap_or_default());
    let by_id = |list: &[Value]| -> BTreeMap<String, Value> { list.iter().map(|v| (id(v), v.clone())).collect() };
    let (before, after) = (by_id(&o), by_id(&n));
    let mut out = Vec::new();
    for v in &n {
        let k = id(v);
        match before.get(&k) {
            None => out.push(EntryChange { id: k, change: EntryKind::Added, fields: Vec::new() }),
            Some(prev) if prev != v => {
                out.push(EntryChange { id: k, change: EntryKind::Changed, fields: field_changes(prev, v) })
            }
            Some(_) => {}
        }
    }
    for v in &o {
        let k = id(v);
        if !after.contains_key(&k) {
            out.push(EntryChange { id: k, change: EntryKind::Removed, fields: Vec::new() });
        }
    }
    out
}

fn compare_exceptions(old: &Bundle, new: &Bundle) -> Vec<ExceptionChange> {
    let exceptions = |b: &Bundle| -> BTreeMap<String, (String, Option<String>, Value)> {
        b.rules
            .iter()
            .filter_map(|r| {
                let e = r.exception.as_ref()?;
                let whole = serde_json::to_value(e).unwrap_or(Value::Null);
                Some((r.id.clone(), (e.ticket.clone(), r.expires_at.clone(), whole)))
            })
            .collect()
    };
    let (before, after) = (exceptions(old), exceptions(new));
    let mut out = Vec::new();
    for (rule, (ticket, expires, whole)) in &after {
        let change = match before.get(rule) {
            None => ExceptionKind::Added,
            Some((_, prev_expires, prev_whole)) => {
                let at = |s: &Option<String>| s.as_deref().and_then(warden_core::time::parse_rfc3339);
                match at(expires).cmp(&at(prev_expires)) {
                    std::cmp::Ordering::Greater => ExceptionKind::Extended,
                    std::cmp::Ordering::Less => ExceptionKind::Shortened,
                    std::cmp::Ordering::Equal if prev_whole != whole => ExceptionKind::Changed,
                    std::cmp::Ordering::Equal => continue,
                }
            }
        };
        out.push(ExceptionChange {
            rule: rule.clone(),
            change,
            ticket: ticket.clone(),
            old_expires_at: before.get(rule).and_then(|(_, e, _)| e.clone()),
            new_expires_at: expires.clone(),
        });
    }
    for (rule, (ticket, expires, _)) in &before {
        if !after.contains_key(rule) {
            out.push(ExceptionChange {
                rule: rule.clone(),
                change: ExceptionKind::Removed,
                ticket: ticket.clone(),
                old_expires_at: expires.clone(),
                new_expires_at: None,
            });
        }
    }
    out
}

fn compare_revocations(old: &Bundle, new: &Bundle) -> Vec<RevocationChange> {
    let lists = |b: &Bundle| -> [(&'static str, BTreeSet<String>); 4] {
        let r = &b.revocations;
        let set = |v: &Vec<String>| v.iter().cloned().collect::<BTreeSet<String>>();
        [
            ("agents", set(&r.agents)),
            ("tasks", set(&r.tasks)),
            ("token_ids", set(&r.token_ids)),
            ("signing_keys", set(&r.signing_keys)),
        ]
    };
    let mut out = Vec::new();
    for ((kind, before), (_, after)) in lists(old).into_iter().zip(lists(new)) {
        for id in after.difference(&before) {
            out.push(RevocationChange { kind, id: id.clone(), revoked: true });
        }
        for id in before.difference(&after) {
            out.push(RevocationChange { kind, id: id.clone(), revoked: false });
        }
    }
    out
}

/// Compares two validated bundles.
pub fn compare(
    old_name: &str,
    old: (&Bundle, &CompiledBundle),
    new_name: &str,
    new: (&Bundle, &CompiledBundle),
    now: i64,
) -> Diff {
    let (o, n) =
        (serde_json::to_value(old.0).unwrap_or(Value::Null), serde_json::to_value(new.0).unwrap_or(Value::Null));
    let section = |name: &str, key: &str| compare_entries(&o[name], &n[name], key);
    let mut header = field_changes(&o, &n);
    let sections = ["rules", "revocations", "tools", "mcp_servers", "issuers", "approvers", "$schema"];
    header.retain(|f| !sections.contains(&f.field.as_str()));
    Diff {
        old: Side { file: old_name.to_string(), revision: old.0.revision },
        new: Side { file: new_name.to_string(), revision: new.0.revision },
        access: compare_access(old, new, now),
        rules: section("rules", "id"),
        exceptions: compare_exceptions(old.0, new.0),
        revocations: compare_revocations(old.0, new.0),
        tools: section("tools", "id"),
        mcp_servers: section("mcp_servers", "name"),
        issuers: section("issuers", "id"),
        approvers: section("approvers", "id"),
        header,
    }
}

/// A JSON value on one line, cut to a readable length.
fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "(none)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 100 {
        format!("{}…", s.chars().take(99).collect::<String>())
    } else {
        s
    }
}

fn rules_text(rules: &[String]) -> String {
    if rules.is_empty() {
        "no rule".to_string()
    } else {
        rules.join("; ")
    }
}

/// The text form.
pub fn render_text(d: &Diff) -> String {
    let mut o = String::new();
    macro_rules! line {
        () => { o.push('\n') };
        ($($t:tt)*) => {{ let _ = writeln!(o, $($t)*); }};
    }
    line!(
        "# Policy diff: {} (revision {}) -> {} (revision {})",
        d.old.file,
        d.old.revision,
        d.new.file,
        d.new.revision
    );
    if d.is_empty() {
        line!();
        line!("no differences");
        return o;
    }
    if !d.access.is_empty() {
        line!();
        line!("## Access");
        line!();
        for a in &d.access {
            let agents = if a.agents == "*" { "every agent (*)" } else { &a.agents };
            line!("- {}: {} {} {}", a.change.label(), agents, a.sensitivity, a.tool);
            line!("  - was: {}", rules_text(&a.old_rules));
            line!("  - now: {}", rules_text(&a.new_rules));
        }
    }
    let entries = |o: &mut String, title: &str, list: &[EntryChange]| {
        if list.is_empty() {
            return;
        }
        let _ = writeln!(o, "\n## {title}\n");
        for e in list {
            match e.change {
                EntryKind::Added => {
                    let _ = writeln!(o, "- added {}", e.id);
                }
                EntryKind::Removed => {
                    let _ = writeln!(o, "- removed {}", e.id);
                }
                EntryKind::Changed => {
                    let names: Vec<&str> = e.fields.iter().map(|f| f.field.as_str()).collect();
                    let _ = writeln!(o, "- changed {}: {}", e.id, names.join(", "));
                    for f in &e.fields {
                        let _ = writeln!(o, "  - {}: {} -> {}", f.field, short(&f.old), short(&f.new));
                    }
                }
            }
        }
    };
    entries(&mut o, "Rules", &d.rules);
    if !d.exceptions.is_empty() {
        line!();
        line!("## Exceptions");
        line!();
        for e in &d.exceptions {
            let until = |s: &Option<String>| s.clone().unwrap_or_else(|| "(no expiry)".to_string());
            match e.change {
                ExceptionKind::Added => {
                    line!("- added {} (ticket {}) until {}", e.rule, e.ticket, until(&e.new_expires_at))
                }
                ExceptionKind::Removed => line!("- removed {} (ticket {})", e.rule, e.ticket),
                ExceptionKind::Extended | ExceptionKind::Shortened => line!(
                    "- {} {} (ticket {}): {} -> {}",
                    if e.change == ExceptionKind::Extended { "extended" } else { "shortened" },
                    e.rule,
                    e.ticket,
                    until(&e.old_expires_at),
                    until(&e.new_expires_at)
                ),
                ExceptionKind::Changed => line!("- changed {} (ticket {})", e.rule, e.ticket),
            }
        }
    }
    if !d.revocations.is_empty() {
        line!();
        line!("## Revocations");
        line!();
        for r in &d.revocations {
            if r.revoked {
                line!("- revoked {} {}", r.kind, r.id);
            } else {
                line!("- LIFTED {} {} (no longer revoked)", r.kind, r.id);
            }
        }
    }
    entries(&mut o, "Tools", &d.tools);
    entries(&mut o, "MCP servers", &d.mcp_servers);
    entries(&mut o, "Issuers", &d.issuers);
    entries(&mut o, "Approvers", &d.approvers);
    if !d.header.is_empty() {
        line!();
        line!("## Header");
        line!();
        for f in &d.header {
            line!("- {}: {} -> {}", f.field, short(&f.old), short(&f.new));
        }
    }
    o
}

pub fn run(args: &Args) -> Result<Status> {
    let now = files::now(args.now.as_deref())?;
    let Some(old) = args.source.load(&args.old)? else { return Ok(Status::Failed) };
    let Some(new) = args.source.load(&args.new)? else { return Ok(Status::Failed) };
    let diff = compare(
        &args.old.display().to_string(),
        (&old.bundle, &old.compiled),
        &args.new.display().to_string(),
        (&new.bundle, &new.compiled),
        now,
    );
    match args.format {
        Format::Text => print!("{}", render_text(&diff)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&diff)?),
    }
    Ok(if args.exit_code && !diff.is_empty() { Status::Failed } else { Status::Ok })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::time::parse_rfc3339;

    fn finance() -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/finance-agent.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn diff(old: &Value, new: &Value) -> Diff {
        let checked = |v: &Value| crate::lint::check("x.json", &v.to_string()).unwrap_or_else(|d| panic!("{d:?}"));
        let (o, n) = (checked(old), checked(new));
        let now = parse_rfc3339("2026-11-28T10:00:00Z").unwrap();
        compare("old.json", (&o.bundle, &o.compiled), "new.json", (&n.bundle, &n.compiled), now)
    }

    fn rule_mut<'a>(b: &'a mut Value, id: &str) -> &'a mut Value {
        b["rules"].as_array_mut().unwrap().iter_mut().find(|r| r["id"] == id).unwrap()
    }

    #[test]
    fn the_same_bundle_has_no_differences() {
        let d = diff(&finance(), &finance());
        assert!(d.is_empty(), "{d:?}");
        assert!(render_text(&d).ends_with("no differences\n"));
    }

    #[test]
    fn a_widened_rule_is_a_gain_and_names_its_changed_fields() {
        let old = finance();
        let mut new = old.clone();
        new["revision"] = 18.into();
        // finance-read now also covers the ledger's admin tools.
        let read = rule_mut(&mut new, "finance-read");
        read["tools"] = serde_json::json!(["payments.*", "billing.*", "ledger.*"]);
        read["sensitivities"] = serde_json::json!(["read", "admin"]);
        let d = diff(&old, &new);
        let gained: Vec<(&str, &str)> = d
            .access
            .iter()
            .filter(|a| a.change == AccessKind::Gained)
            .map(|a| (a.agents.as_str(), a.tool.as_str()))
            .collect();
        assert!(gained.contains(&("spiffe://acme.example/agents/finance/*", "ledger.export")), "{gained:?}");
        assert!(d.access.iter().all(|a| a.tool == "ledger.export"), "{:?}", d.access);
        assert_eq!(d.rules.len(), 1);
        assert_eq!(d.rules[0].id, "finance-read");
        assert_eq!(d.rules[0].change, EntryKind::Changed);
        assert_eq!(d.rules[0].fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["sensitivities", "tools"]);
        assert_eq!(d.header.len(), 1);
        assert_eq!(d.header[0].field, "revision");
        let text = render_text(&d);
        assert!(text.contains("- GAINED: spiffe://acme.example/agents/finance/* admin ledger.export"), "{text}");
        assert!(text.contains("  - was: no rule"), "{text}");
        assert!(text.contains("- changed finance-read: sensitivities, tools"), "{text}");
        assert!(text.contains("- revision: 17 -> 18"), "{text}");
    }

    #[test]
    fn a_removed_rule_is_a_loss_and_a_step_up_turned_allow_says_so() {
        let old = finance();
        let mut lost = old.clone();
        lost["rules"].as_array_mut().unwrap().retain(|r| r["id"] != "finance-read");
        let d = diff(&old, &lost);
        assert!(d.access.iter().any(|a| a.change == AccessKind::Lost && a.tool == "payments.charges.read"));
        assert!(d.rules.iter().any(|r| r.id == "finance-read" && r.change == EntryKind::Removed));

        let mut relaxed = old.clone();
        let r = rule_mut(&mut relaxed, "finance-refunds-step-up");
        r["effect"] = "allow".into();
        r.as_object_mut().unwrap().remove("step_up");
        let d = diff(&old, &relaxed);
        let a = d.access.iter().find(|a| a.tool == "payments.refunds.create").unwrap();
        assert_eq!(a.change, AccessKind::StepUpRemoved, "{a:?}");
        assert_eq!((a.old_reach, a.new_reach), (Reach::StepUp, Reach::Allow));
        let fields: Vec<&str> = d.rules[0].fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["effect", "step_up"]);
    }

    #[test]
    fn exceptions_revocations_and_trust_changes_are_listed() {
        let old = finance();
        let mut new = old.clone();
        rule_mut(&mut new, "q4-close-void-invoices")["expires_at"] = "2026-12-20T00:00:00Z".into();
        new["revocations"]["agents"] = serde_json::json!(["spiffe://acme.example/agents/finance/rogue"]);
        new["approvers"][0]["max_approval_age_seconds"] = 900.into();
        let d = diff(&old, &new);
        assert_eq!(d.exceptions.len(), 1);
        assert_eq!(d.exceptions[0].change, ExceptionKind::Shortened);
        assert_eq!(d.exceptions[0].new_expires_at.as_deref(), Some("2026-12-20T00:00:00Z"));
        assert_eq!(d.revocations.len(), 1);
        assert!(d.revocations[0].revoked);
        assert_eq!(d.approvers[0].fields[0].field, "max_approval_age_seconds");
        // Lifting the revocation again is called out.
        let back = diff(&new, &old);
        assert!(!back.revocations[0].revoked);
        assert_eq!(back.exceptions[0].change, ExceptionKind::Extended);
        let text = render_text(&back);
        assert!(
            text.contains("- LIFTED agents spiffe://acme.example/agents/finance/rogue (no longer revoked)"),
            "{text}"
        );
        assert!(text.contains("- extended q4-close-void-invoices (ticket FIN-2026-Q4-17): 2026-12-20T00:00:00Z -> 2026-12-24T00:00:00Z"), "{text}");
    }

    #[test]
    fn a_shadow_rule_gives_no_reach() {
        let old = finance();
        let mut new = old.clone();
        let mut rule = rule_mut(&mut new, "finance-read").clone();
        rule["id"] = "try-export".into();
        rule["tools"] = serde_json::json!(["ledger.export"]);
        rule["shadow"] = true.into();
        rule.as_object_mut().unwrap().remove("sensitivities");
        new["rules"].as_array_mut().unwrap().push(rule);
        let d = diff(&old, &new);
        let a = d.access.iter().find(|a| a.tool == "ledger.export").unwrap();
        assert_eq!(a.change, AccessKind::Changed, "a shadow rule is listed but reaches nothing: {a:?}");
        assert_eq!(a.new_reach, Reach::None);
    }
}
