//! Deciding MCP messages: one message, a whole body (a batch is allowed only whole), what the `Mcp-Method` /
//! `Mcp-Name` headers alone decide, the life-cycle effect, how a tool appears in `tools/list`, and the server's
//! pinned tool definitions on a `tools/call` ([`pin_refusal`]).

use serde_json::Value;

use crate::bundle::Effect;
use crate::compile::CompiledBundle;
use crate::decide::{decide, decide_gate, decide_listing, decide_with_args};
use crate::decision::{Decision, Outcome, Reason};
use crate::facts::Facts;
use crate::mcp::index::McpTarget;
use crate::mcp::list::Visibility;
use crate::mcp::parse::{check_method, check_uri, McpBody, McpKind, McpMessage};
use crate::pins::PinMemory;
use crate::vocab::McpServerIdx;

/// Decides one message. `facts.tool` is ignored: the message's target decides the tool. `listed` is what this VM
/// last saw the server's pinned tools listed as ([`pin_refusal`]).
pub fn decide_message(
    bundle: &CompiledBundle,
    facts: &Facts,
    s: McpServerIdx,
    msg: &McpMessage,
    listed: &PinMemory,
    now: i64,
) -> Decision {
    let d = decide_unpinned(bundle, facts, s, msg, now);
    pin_refusal(bundle, s, msg, listed, d)
}

/// A `tools/call` that would go through (allowed, or allowed with an approval) whose tool the server's pins refuse
/// ([`crate::pins::ServerPins::call_refusal`]) is refused for that (`tool_definition_changed`, `tool_not_pinned`);
/// any other decision (a refusal keeps its own reason) is returned unchanged.
pub fn pin_refusal(
    bundle: &CompiledBundle,
    s: McpServerIdx,
    msg: &McpMessage,
    listed: &PinMemory,
    d: Decision,
) -> Decision {
    let McpKind::ToolCall { name, .. } = &msg.kind else { return d };
    if d.outcome == Outcome::Deny {
        return d;
    }
    let Some(pins) = bundle.mcp_pins(s) else { return d };
    match pins.call_refusal(bundle.mcp_server_name(s), name, listed) {
        Some(f) => Decision::refusal(Reason::Pin(f), bundle.revision),
        None => d,
    }
}

fn decide_unpinned(bundle: &CompiledBundle, facts: &Facts, s: McpServerIdx, msg: &McpMessage, now: i64) -> Decision {
    match bundle.resolve_mcp(s, msg) {
        McpTarget::Tool(t) => {
            let facts = Facts { tool: Some(t), ..facts.clone() };
            decide_with_args(bundle, &facts, msg.arguments(), now)
        }
        McpTarget::Unknown => {
            let facts = Facts { tool: None, ..facts.clone() };
            decide(bundle, &facts, now)
        }
        McpTarget::Lifecycle => decide_lifecycle(bundle, facts, s, now),
    }
}

/// The server's `lifecycle` effect, after identity, revocations and task expiry. Also what a `GET` or `DELETE` on
/// the endpoint (the SSE stream and session end of older MCP revisions) gets.
pub fn decide_lifecycle(bundle: &CompiledBundle, facts: &Facts, s: McpServerIdx, now: i64) -> Decision {
    if let Err(d) = decide_gate(bundle, facts, now) {
        return d;
    }
    let lifecycle = bundle.mcp_lifecycle(s);
    let outcome = if lifecycle == Effect::Allow { Outcome::Allow } else { Outcome::Deny };
    Decision { outcome, reason: Reason::McpLifecycle, rule: None, revision: bundle.revision }
}

/// The decision the `Mcp-Method` / `Mcp-Name` headers alone allow, before the body is read: argument conditions
/// are read as for `tools/list` (they may hold), so a `Deny` here is final whatever the arguments, while anything
/// else must still be confirmed on the body. `None` when the headers do not make a well-formed message (the body
/// decides, and must agree with them).
pub fn decide_headers(
    bundle: &CompiledBundle,
    facts: &Facts,
    s: McpServerIdx,
    method: &str,
    name: Option<&str>,
    listed: &PinMemory,
    now: i64,
) -> Option<Decision> {
    let msg = header_message(method, name)?;
    let d = match bundle.resolve_mcp(s, &msg) {
        McpTarget::Tool(t) => decide_listing(bundle, &Facts { tool: Some(t), ..facts.clone() }, now),
        McpTarget::Unknown => decide(bundle, &Facts { tool: None, ..facts.clone() }, now),
        McpTarget::Lifecycle => decide_lifecycle(bundle, facts, s, now),
    };
    Some(pin_refusal(bundle, s, &msg, listed, d))
}

/// The message `Mcp-Method` / `Mcp-Name` describe (`None`: they cannot describe one: an invalid method, a name
/// where the method takes none or none where it needs one). Its `id` is a placeholder.
pub fn header_message(method: &str, name: Option<&str>) -> Option<McpMessage> {
    check_method(method).ok()?;
    let kind = match (method, name) {
        ("tools/call", Some(n)) => McpKind::ToolCall { name: n.to_string(), arguments: None },
        ("resources/read", Some(u)) => {
            check_uri(u).ok()?;
            McpKind::ResourceRead { uri: u.to_string() }
        }
        ("prompts/get", Some(n)) => McpKind::PromptGet { name: n.to_string(), arguments: None },
        ("tools/call" | "resources/read" | "prompts/get", None) => return None,
        (m, None) => McpKind::Other { method: m.to_string() },
        (_, Some(_)) => return None,
    };
    Some(McpMessage { id: Some(Value::from(0)), kind })
}

/// The decision for a whole body and the message that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyDecision {
    pub decision: Decision,
    /// Index of the deciding message in the body: the first denied one, else the first needing step-up, else the
    /// first (every message allowed).
    pub message: usize,
}

/// Decides a body: allowed only if every message is allowed; otherwise the whole body is refused by its first denied
/// message, or, without denials, needs its one step-up call's approval. A batch with two or more step-up calls is
/// denied (`step_up_batch`, the rule of the first, the message of the second): one approval covers one call.
pub fn decide_body(
    bundle: &CompiledBundle,
    facts: &Facts,
    s: McpServerIdx,
    body: &McpBody,
    listed: &PinMemory,
    now: i64,
) -> BodyDecision {
    let mut first: Option<BodyDecision> = None;
    let mut step_up: Option<BodyDecision> = None;
    for (i, msg) in body.messages.iter().enumerate() {
        let d = decide_message(bundle, facts, s, msg, listed, now);
        match d.outcome {
            Outcome::Deny => return BodyDecision { decision: d, message: i },
            Outcome::StepUp => match &step_up {
                None => step_up = Some(BodyDecision { decision: d, message: i }),
                Some(first) => {
                    let decision = Decision {
                        outcome: Outcome::Deny,
                        reason: Reason::StepUpBatch,
                        rule: first.decision.rule.clone(),
                        revision: bundle.revision,
                    };
                    return BodyDecision { decision, message: i };
                }
            },
            Outcome::Allow => {
                if first.is_none() {
                    first = Some(BodyDecision { decision: d, message: i });
                }
            }
        }
    }
    match (step_up, first) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => BodyDecision {
            decision: Decision {
                outcome: Outcome::Deny,
                reason: Reason::BadRequest,
                rule: None,
                revision: bundle.revision,
            },
            message: 0,
        },
    }
}

/// Whether an agent sees a tool of a server in `tools/list`. Argument conditions are read optimistically (the agent
/// may be allowed for some arguments): an allow or step-up rule with conditions counts, a deny rule with conditions
/// does not hide the tool. Calls are still decided one by one.
pub fn tool_visibility(bundle: &CompiledBundle, facts: &Facts, s: McpServerIdx, name: &str, now: i64) -> Visibility {
    let tool = bundle.mcp_tool(s, name);
    let facts = Facts { tool, ..facts.clone() };
    let d = decide_listing(bundle, &facts, now);
    match d.outcome {
        Outcome::Allow => Visibility::Visible,
        Outcome::StepUp => Visibility::NeedsApproval,
        Outcome::Deny => Visibility::Hidden,
    }
}
