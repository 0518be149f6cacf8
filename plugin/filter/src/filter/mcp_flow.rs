//! The MCP request flow of the HTTP context: header phase, body buffering and the body decision (see
//! [`crate::mcp`] for the pure parts and `README.md` "MCP servers" for what operators see).
//!
//! Header phase, for a request to an MCP server of the bundle whose caller passed identity, revocation and task
//! checks: `GET`/`DELETE` get the server's life-cycle effect at once; other methods but `POST` are refused; a `POST`
//! must be `application/json` and have a body. With `Mcp-Method` (MCP 2026-07-28) the headers alone are decided
//! first, and a call they deny is refused before any of it reaches the upstream. Otherwise, or when they allow it,
//! the body decides: with `allow_on_headers_stop_iteration` the headers are held (`Pause`) until then; without it
//! they continue now (Envoy would withhold the body from a filter paused at headers) and only the body is held.
//! Body phase: chunks are buffered (`Pause`) up to `max_body_bytes` (over it: 413); at the end the body is parsed
//! strictly, checked against the MCP headers, and decided as a whole.

use std::rc::Rc;

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Action;
use warden_core::args::arguments_digest;
use warden_core::decide;
use warden_core::facts::{Agent, Facts, Identity};
use warden_core::mcp::{self as core_mcp, McpBody, McpServerIdx};

use super::{unix_secs, Shared, StepUpCheck, WardenHttp};
use crate::active::Active;
use crate::approval::{Presented, StepUpInfo};
use crate::config::Mode;
use crate::evaluate::{Evaluation, ExceptionRecord, Governance, RequestHeaders, ShadowRecord, Verdict};
use crate::mcp::{self, HeaderValue, McpRecord};
use crate::reply;

/// An MCP request waiting for its body.
pub(crate) struct McpFlow {
    active: Rc<Active>,
    server: McpServerIdx,
    agent: Agent,
    decision_id: String,
    start_ns: u64,
    method: String,
    host: String,
    path: String,
    rewrite_path: Option<String>,
    header_method: Option<String>,
    header_name: Option<String>,
    /// The step-up approval the request presented.
    presented: Presented,
    /// Client-supplied `x-warden-*` header names (removed before the request goes upstream).
    reserved: Vec<String>,
    /// Set once decided: later callbacks pass through.
    done: bool,
    /// An allowed `tools/list` whose response is filtered.
    list: Option<ListState>,
}

/// The response to an allowed `tools/list` being filtered.
struct ListState {
    /// The request id the answer must carry.
    id: serde_json::Value,
    /// `None`: the response cannot be filtered (content type, encoding): it is replaced by an error.
    framing: Option<mcp::ListFraming>,
    /// Response headers seen (the replacement passes through the response callbacks only once).
    started: bool,
}

/// What the header phase hands to [`WardenHttp::mcp_request_headers`].
pub(super) struct HeaderPhase<'a, 'h> {
    pub(super) headers: &'h [(String, Vec<u8>)],
    pub(super) request: &'a RequestHeaders<'h>,
    pub(super) ev: &'a Evaluation<'a>,
    pub(super) decision_id: &'a str,
    pub(super) start_ns: u64,
    pub(super) end_of_stream: bool,
}

/// Whether a verdict came from the rules or the tool default, i.e. the caller passed the identity, revocation and
/// task checks and the request's shape was readable.
fn passed_gate(v: &Verdict) -> bool {
    use warden_core::decision::Reason as R;
    matches!(
        v.reason_kind,
        R::AllowedByRule
            | R::AllowedByException
            | R::DeniedByRule
            | R::StepUpRequired
            | R::NoMatchingRule
            | R::UnknownTool
            | R::InvalidArguments
            | R::McpLifecycle
    )
}

fn owned(v: HeaderValue<'_>) -> Option<String> {
    match v {
        HeaderValue::One(s) => Some(s.to_string()),
        HeaderValue::Absent | HeaderValue::Ambiguous => None,
    }
}

impl WardenHttp {
    /// The header phase of an MCP request. `None`: not an MCP request (the caller goes on as for HTTP routes).
    pub(super) fn mcp_request_headers(&mut self, shared: &Shared, phase: HeaderPhase<'_, '_>) -> Option<Action> {
        let HeaderPhase { headers, request, ev, decision_id, start_ns, end_of_stream } = phase;
        let active = shared.active.as_ref()?;
        let server = active.bundle.resolve_mcp_server(ev.host, &ev.path)?;
        let agent = ev.agent.clone().filter(|_| passed_gate(&ev.verdict))?;
        let config = &shared.config;
        let now = unix_secs(start_ns);
        let facts =
            Facts { environment: config.environment.clone(), identity: Identity::Verified(agent.clone()), tool: None };
        let h = mcp::scan(headers);
        let mut flow = McpFlow {
            active: Rc::clone(active),
            server,
            agent,
            decision_id: decision_id.to_string(),
            start_ns,
            method: ev.method.to_string(),
            host: ev.host.to_string(),
            path: ev.path.clone(),
            rewrite_path: ev.rewrite_path.clone(),
            header_method: owned(h.method),
            header_name: owned(h.name),
            presented: Presented::from_header(request.approval),
            reserved: request.reserved.iter().map(|r| r.to_string()).collect(),
            done: false,
            list: None,
        };
        let revision = Some(active.bundle.revision);

        // Decided at the header phase, or refused for its shape.
        let early: Option<Verdict> = match ev.method {
            "GET" | "DELETE" => Some(mcp::verdict(core_mcp::decide_lifecycle(&active.bundle, &facts, server, now))),
            "POST" => match mcp::check_headers(&h) {
                Err((status, code)) => Some(mcp::refusal(status, code, revision)),
                Ok(()) if end_of_stream => Some(mcp::refusal(400, "mcp_not_json", revision)),
                Ok(()) => match &flow.header_method {
                    None => None,
                    Some(m) => match core_mcp::decide_headers(
                        &active.bundle,
                        &facts,
                        server,
                        m,
                        flow.header_name.as_deref(),
                        now,
                    ) {
                        None => Some(mcp::refusal(400, "mcp_header_mismatch", revision)),
                        Some(d) if d.outcome == warden_core::decision::Outcome::Deny => Some(mcp::verdict(d)),
                        Some(_) => None,
                    },
                },
            },
            _ => Some(mcp::refusal(405, "mcp_method_not_allowed", revision)),
        };
        let enforce = config.mode == Mode::Enforce;
        if let Some(v) = early {
            let let_through = v.allows() || !enforce;
            if let_through {
                self.prepare_mcp_upstream(shared, &flow);
            }
            flow.done = true;
            let mcp_record = McpRecord {
                server: active.bundle.mcp_server_name(server).to_string(),
                method: flow.header_method.clone().unwrap_or_else(|| flow.method.clone()),
                name: flow.header_name.clone(),
                messages: 0,
                batch: false,
            };
            self.mcp_finish(shared, &flow, Finish::refusal(v), None, &mcp_record);
            self.mcp = Some(flow);
            return Some(if let_through { Action::Continue } else { Action::Pause });
        }

        // The body decides.
        self.prepare_mcp_upstream(shared, &flow);
        self.mcp = Some(flow);
        Some(if config.allow_on_headers_stop_iteration { Action::Pause } else { Action::Continue })
    }

    /// Header changes for a request that (may) go upstream (see [`WardenHttp::prepare_upstream`]).
    fn prepare_mcp_upstream(&self, shared: &Shared, flow: &McpFlow) {
        let reserved: Vec<&str> = flow.reserved.iter().map(String::as_str).collect();
        self.prepare_upstream(shared, &reserved, flow.rewrite_path.as_deref(), &flow.decision_id, Some(&flow.agent));
    }

    /// A body chunk of an MCP request: buffer until the end, then decide.
    pub(super) fn mcp_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some(flow) = self.mcp.take() else { return Action::Continue };
        if flow.done {
            self.mcp = Some(flow);
            return Action::Continue;
        }
        let revision = Some(flow.active.bundle.revision);
        let server_name = flow.active.bundle.mcp_server_name(flow.server).to_string();
        let mut rec = McpRecord { server: server_name, method: String::new(), name: None, messages: 0, batch: false };
        let limit = usize::try_from(shared.config.max_body_bytes).unwrap_or(usize::MAX);
        let mut list = None;
        let action = if body_size > limit {
            self.mcp_finish(
                &shared,
                &flow,
                Finish::refusal(mcp::refusal(413, "mcp_body_too_large", revision)),
                None,
                &rec,
            )
        } else if !end_of_stream {
            self.mcp = Some(flow);
            return Action::Pause;
        } else {
            let bytes =
                if body_size == 0 { Vec::new() } else { self.get_http_request_body(0, body_size).unwrap_or_default() };
            let batches = flow.active.bundle.mcp_batches(flow.server);
            match core_mcp::parse_body(&bytes, batches) {
                Err(e) => {
                    self.mcp_finish(&shared, &flow, Finish::refusal(mcp::parse_refusal(&e, revision)), None, &rec)
                }
                Ok(body) => {
                    rec.messages = body.messages.len();
                    rec.batch = body.batch;
                    let h = mcp::McpHeaders {
                        content_type: HeaderValue::Absent,
                        method: flow.header_method.as_deref().map_or(HeaderValue::Absent, HeaderValue::One),
                        name: flow.header_name.as_deref().map_or(HeaderValue::Absent, HeaderValue::One),
                    };
                    match mcp::headers_agree(&h, &body) {
                        Err(code) => self.mcp_finish(
                            &shared,
                            &flow,
                            Finish::refusal(mcp::refusal(400, code, revision)),
                            Some(&body),
                            &rec,
                        ),
                        Ok(()) => {
                            let facts = Facts {
                                environment: shared.config.environment.clone(),
                                identity: Identity::Verified(flow.agent.clone()),
                                tool: None,
                            };
                            let now = unix_secs(flow.start_ns);
                            let bd = core_mcp::decide_body(&flow.active.bundle, &facts, flow.server, &body, now);
                            let msg = body.messages.get(bd.message);
                            rec.method = msg.map(|m| m.method().to_string()).unwrap_or_default();
                            rec.name = msg.and_then(|m| m.name()).map(str::to_string);
                            let bundle = &flow.active.bundle;
                            let tool_idx = msg.and_then(|m| match bundle.resolve_mcp(flow.server, m) {
                                core_mcp::McpTarget::Tool(t) => Some(t),
                                _ => None,
                            });
                            let tool = tool_idx.map(|t| bundle.tool_id(t));
                            let args = msg.and_then(|m| m.arguments());
                            let mut gov = Governance::default();
                            let mut v = mcp::verdict(bd.decision);
                            let mut step_up = None;
                            if let Some(t) = tool_idx {
                                let facts = Facts { tool: Some(t), ..facts };
                                gov.shadow =
                                    decide::shadow(bundle, &facts, args, now).map(|d| ShadowRecord::from_decision(&d));
                                // The digest (canonical JSON and SHA-256 of the arguments) is taken only for a
                                // step-up, whose approval binds to it: on every call it would cost more than the
                                // rest of the decision.
                                if bundle.logs_arguments(t) {
                                    gov.arguments = args.cloned();
                                }
                            }
                            gov.exception = ExceptionRecord::for_verdict(bundle, &v);
                            if v.is_step_up() {
                                let check = StepUpCheck {
                                    bundle,
                                    agent: &flow.agent,
                                    tool,
                                    digest: arguments_digest(args),
                                    digest_of: "arguments",
                                    presented: &flow.presented,
                                    decision_id: &flow.decision_id,
                                    now,
                                };
                                let (settled, info) = self.settle_step_up(&shared, v, check, &mut gov);
                                v = settled;
                                step_up = info;
                            }
                            if let (Some(m), false) = (body.messages.first(), body.batch) {
                                if v.allows() && m.method() == "tools/list" {
                                    if let Some(id) = &m.id {
                                        list = Some(ListState { id: id.clone(), framing: None, started: false });
                                    }
                                }
                            }
                            let finish = Finish { verdict: v, gov, step_up, tool };
                            self.mcp_finish(&shared, &flow, finish, Some(&body), &rec)
                        }
                    }
                }
            }
        };
        self.mcp = Some(McpFlow { done: true, list, ..flow });
        action
    }

    /// Response headers of an allowed `tools/list`: find the framing, or prepare to replace the body with an error
    /// (fail closed); the body changes length, so `content-length` goes.
    pub(super) fn mcp_response_headers(&mut self) -> Action {
        let header = |name: &str| -> Option<String> {
            self.get_http_response_header_bytes(name).and_then(|b| String::from_utf8(b).ok())
        };
        let status = header(":status");
        let content_type = header("content-type");
        let encoding = header("content-encoding");
        let Some(list) = self.mcp.as_mut().and_then(|f| f.list.as_mut()) else { return Action::Continue };
        if list.started {
            return Action::Continue;
        }
        list.started = true;
        if status.as_deref().is_some_and(|s| !s.starts_with('2')) {
            // An HTTP error of the server carries no tool list: nothing to filter. Every 2xx (and a response without
            // a status) goes through the filter, so an unusual success status cannot carry an unfiltered list.
            if let Some(f) = self.mcp.as_mut() {
                f.list = None;
            }
            return Action::Continue;
        }
        list.framing = mcp::list_framing(content_type.as_deref(), encoding.as_deref());
        let failed = list.framing.is_none();
        self.set_http_response_header("content-length", None);
        if failed {
            self.set_http_response_header("content-encoding", None);
            self.set_http_response_header("content-type", Some("application/json"));
        }
        Action::Continue
    }

    /// The body of an allowed `tools/list` response: buffered to the end, then rewritten so the agent sees only the
    /// tools it may call (step-up tools marked); anything unreadable is replaced by a JSON-RPC error.
    pub(super) fn mcp_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some(flow) = self.mcp.as_ref() else { return Action::Continue };
        let Some(list) = flow.list.as_ref().filter(|l| l.started) else { return Action::Continue };
        if !end_of_stream {
            return Action::Pause;
        }
        let body =
            if body_size == 0 { Vec::new() } else { self.get_http_response_body(0, body_size).unwrap_or_default() };
        let facts = Facts {
            environment: shared.config.environment.clone(),
            identity: Identity::Verified(flow.agent.clone()),
            tool: None,
        };
        let now = unix_secs(flow.start_ns);
        let visible = |name: &str| core_mcp::tool_visibility(&flow.active.bundle, &facts, flow.server, name, now);
        let out = match list.framing {
            Some(framing) => mcp::filter_tools_list(framing, &body, &list.id, &visible)
                .unwrap_or_else(|mcp::Unfilterable| mcp::list_failure(Some(framing), &list.id, &flow.decision_id)),
            None => mcp::list_failure(None, &list.id, &flow.decision_id),
        };
        self.set_http_response_body(0, body_size, &out);
        if let Some(f) = self.mcp.as_mut() {
            f.list = None;
        }
        Action::Continue
    }

    /// Trailers after an MCP body that was not decided yet: refused (the body decision needs the end of the body,
    /// and MCP requests have no trailers).
    pub(super) fn mcp_request_trailers(&mut self) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some(flow) = self.mcp.take() else { return Action::Continue };
        if flow.done {
            self.mcp = Some(flow);
            return Action::Continue;
        }
        let rec =
            McpRecord { server: flow.active.bundle.mcp_server_name(flow.server).to_string(), ..McpRecord::default() };
        let v = mcp::refusal(400, "mcp_trailers", Some(flow.active.bundle.revision));
        let action = self.mcp_finish(&shared, &flow, Finish::refusal(v), None, &rec);
        self.mcp = Some(McpFlow { done: true, ..flow });
        action
    }

    /// Records the decision and acts on it: `Continue` for a request that goes on, else a local reply and `Pause`.
    fn mcp_finish(
        &self,
        shared: &Shared,
        flow: &McpFlow,
        finish: Finish<'_>,
        body: Option<&McpBody>,
        rec: &McpRecord,
    ) -> Action {
        let config = &shared.config;
        let let_through = finish.verdict.allows() || config.mode == Mode::Shadow;
        let ev = Evaluation {
            verdict: finish.verdict,
            agent: Some(flow.agent.clone()),
            tool: finish.tool,
            method: &flow.method,
            host: &flow.host,
            path: flow.path.clone(),
            rewrite_path: flow.rewrite_path.clone(),
            tool_idx: None,
            gov: finish.gov,
        };
        self.write_record(shared, &ev, &flow.decision_id, flow.start_ns, Some(rec));
        if let_through {
            return Action::Continue;
        }
        let step_up = finish.step_up.as_ref().filter(|_| ev.verdict.is_step_up());
        let reply = mcp::error_reply(&ev.verdict, &flow.decision_id, body, step_up)
            .unwrap_or_else(|| reply::build(&ev.verdict, &flow.decision_id, step_up));
        self.send_http_response(u32::from(reply.status), reply.header_pairs(), Some(&reply.body));
        Action::Pause
    }
}

/// How an MCP request ends: the verdict, what the record says beyond it, the step-up reply's `approval` object, and
/// the tool the deciding message reached.
struct Finish<'a> {
    verdict: Verdict,
    gov: Governance,
    step_up: Option<StepUpInfo>,
    tool: Option<&'a str>,
}

impl Finish<'_> {
    /// A refusal of the request's shape, or a decision at the header phase: nothing beyond the verdict.
    fn refusal(verdict: Verdict) -> Finish<'static> {
        Finish { verdict, gov: Governance::default(), step_up: None, tool: None }
    }
}
