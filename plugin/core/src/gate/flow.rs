//! One request through the gate: [`Flow`], a sans-IO state machine from the request headers to the decision record,
//! and for `tools/list` to the rewritten response.
//!
//! The host calls an entry point per event and carries out the [`Step`] it returns; the flow keeps what it needs
//! between events. In order, the first that applies decides a request at its headers:
//!
//! | condition | status | reason |
//! |---|---|---|
//! | no active bundle | 503 | `no_active_bundle` |
//! | now > bundle `expires_at` + `bundle_grace_seconds` | 503 | `bundle_expired` |
//! | `:method`, `:path` or `:authority` missing, repeated or not UTF-8 | 400 | `bad_request` |
//! | `:path` refused by path normalization | 400 | the path error's code |
//! | a public route, or a protected resource's metadata document the gateway serves | continue / 200 | `public_route` / `resource_metadata` |
//! | identity: token header repeated, absent, unusable, refused; Transaction Token refused | 401 | `token_*`, `identity_missing`, `txn_token_*` |
//! | otherwise `decide` on the HTTP route's tool | 403 (deny, step-up) or continue | the decision's reason |
//! | `unknown_tool: allow` decided it, but the path misses a route or an MCP server's path only by spelling | 400 | `route_near_miss` |
//!
//! Then, for a caller past identity, revocations and task expiry:
//! - **MCP** (the request reaches an MCP server of the bundle): `GET`/`DELETE` get the server's life-cycle effect;
//!   other methods but `POST` are refused (405); a `POST` must be `application/json` (415) and have a body; with
//!   `Mcp-Method` the headers alone are decided first ([`crate::mcp::decide_headers`]) and a call they deny is
//!   refused before any of it reaches the upstream. Otherwise the body decides: the headers are edited now and held
//!   (`allow_on_headers_stop_iteration`) or let go (without it Envoy would withhold the body from a filter paused at
//!   headers); body chunks are buffered up to `max_body_bytes` (413); the whole body is parsed strictly, checked
//!   against the MCP headers and decided whole ([`crate::mcp::decide_body`]). Refusals are JSON-RPC errors carrying
//!   the request's `id`. An allowed `tools/list` has its response filtered ([`crate::mcp::list`]).
//! - **Step-up** (plain HTTP): the approval binds the request (method, host, path and query, content type) and the
//!   SHA-256 of its body, so a step-up call with a body is held like an MCP body (enforce mode only) until it is
//!   complete. With `allow_on_headers_stop_iteration` the headers are held too. Without it the headers would go
//!   upstream while the body is read, so the head is decided first, on the approval's `head_digest`
//!   ([`approval::HttpBinding::head_digest`]): no approval, a refused one or one without a matching head claim is
//!   answered at once and nothing reaches the upstream; a head that passes is let go, and the whole approval
//!   (body included) is checked again at the end of the body before it is claimed.
//!
//! A verified approval is single-use: the flow hands the host a [`Claim`] and is called back with its outcome. Shadow
//! mode lets every request through and records what would have happened.
//!
//! **Limits** come last: a call the decision allows (by a rule, an exception or an approval) whose tool has limits
//! ([`crate::limits`]) is charged to them by one more [`Claim`] (every call of an MCP batch, a budget with its
//! argument); an exceeded limit turns the allow into a refusal (429 `rate_limited` / `budget_exhausted`, with
//! `Retry-After`), a counter that cannot be read or written into 503 `limit_store_unavailable`, and a budget's
//! argument that cannot be counted into `invalid_arguments`. A refused call is never charged. An approval is spent
//! before the limits are checked: a call refused by a limit needs a new approval.

use serde_json::Value;

use crate::approval::used::used_id;
use crate::approval::{self, ApprovalFailure, CallBinding, VerifiedApproval};
use crate::args::arguments_digest;
use crate::compile::{CompiledBundle, PublicTarget};
use crate::config::{GateConfig, Mode};
use crate::decide::{self, decide};
use crate::decision::{Decision, Outcome, Reason, RequestRefusal};
use crate::facts::{Agent, Facts, Identity, Peer, TokenFailure, TxnFailure};
use crate::gate::outcome::{
    ApprovalRecord, ApproverRef, Counters, ExceptionRecord, Governance, LimitRecord, McpRecord, ShadowRecord,
    StepUpInfo,
};
use crate::gate::record::{decision_label, RecordFields};
use crate::gate::reply::{self, ArgumentFailure, LocalReply, McpLine, Refusal, RequestLine, RpcRequests, Shape};
use crate::gate::step::{Credentials, Edit, Next, ResponseEdits, ResponseNext, Step};
use crate::gate::store::{Claim, ClaimOutcome, ClaimRefused};
use crate::gate::view::{is_json, Field, Presented, RequestView, TokenHeader};
use crate::identity::{self, token_in};
use crate::limits::{self, BadAmount, Caller, Charge};
use crate::mcp::list::{
    filter_tools_list, list_failure, list_framing, Lens, ListFailure, ListFraming, SseFilter, Unfilterable,
    LIST_DEADLINE_SECS,
};
use crate::mcp::{self, McpBody, McpErrorKind, McpKind, McpMessage, McpServerIdx, McpTarget};
use crate::path;
use crate::pins::{PinFailure, PinMemory};
use crate::token_cache::TokenCache;
use crate::vocab::ToolIdx;

/// The request headers event: the request as scanned, its connection, and what the host knows of it.
#[derive(Debug)]
pub struct Request<'v, 'h, 'c> {
    pub view: &'v RequestView<'h>,
    /// The connection's mTLS peer (sender binding), read only where a token check needs it.
    pub peer: &'v Peer<'v>,
    pub credentials: Credentials<'c>,
    /// The decision id (UUID text) replies, records and identity headers carry.
    pub decision_id: String,
    /// Host time when the headers arrived, nanoseconds since the epoch (the record's timestamp; the decision's
    /// clock is its seconds).
    pub time_ns: u64,
    /// The headers end the request (no body follows).
    pub end_of_stream: bool,
}

/// What the flow waits for.
#[derive(Debug)]
enum State {
    /// Decided and recorded: later events pass through.
    Decided,
    /// An MCP request whose body decides.
    McpBody { server: McpServerIdx, header_method: Option<String>, header_name: Option<String> },
    /// A plain HTTP step-up call waiting for the body its approval binds to.
    StepUpBody,
    /// A verified approval being claimed; then the request ends as `then` says.
    Claiming { approval: VerifiedApproval, then: Then },
    /// An allowed call being charged to its limits; then the request ends as `then` says.
    Limiting { charges: Vec<Charge>, then: Then },
    /// A request on an MCP route refused before its body, with the headers held: the reply waits for the body so
    /// that it can answer with the request's `id` (nothing reaches the upstream meanwhile).
    Refusing { server: McpServerIdx },
    /// An allowed `tools/list` whose response is filtered.
    Listing { server: McpServerIdx, id: Value, framing: Option<ListFraming>, started: bool, read: Box<ListRead> },
    /// The filtered answer of a `tools/list` went out: the rest of the response is not the client's.
    Released,
}

/// How much of a filtered `tools/list` response was read, and the event-stream reader.
#[derive(Debug, Default)]
struct ListRead {
    /// Bytes of the buffered body handed to [`Flow::on_response_body_bytes`] so far.
    bytes: usize,
    sse: SseFilter,
}

/// How a request that waited for a claim ends.
#[derive(Debug)]
enum Then {
    /// At the header phase: the headers may still be edited.
    Headers,
    /// A held HTTP body: the headers were edited when it was held.
    HttpBody,
    /// An MCP body: JSON-RPC replies for these requests; `list` is the id of a `tools/list` to filter if allowed.
    Mcp { server: McpServerIdx, requests: RpcRequests, list: Option<Value> },
}

/// One request through the gate (see the module documentation). Pass every event the same bundle the headers were
/// decided with.
#[derive(Debug)]
pub struct Flow {
    decision_id: String,
    time_ns: u64,
    now: i64,
    method: String,
    host: String,
    /// The normalized path without query; the raw path (query cut off) when it could not be normalized.
    path: String,
    /// The new `:path` when normalization changed it.
    rewrite: Option<String>,
    /// Header names removed before the request goes upstream.
    reserved: Vec<String>,
    identity: Identity,
    tool: Option<ToolIdx>,
    decision: Decision,
    /// Revision of the deciding bundle; `None` while no bundle is active.
    revision: Option<u64>,
    gov: Governance,
    mcp: Option<McpRecord>,
    /// The MCP message that decided (for explanations).
    call: Option<McpMessage>,
    /// What a step-up reply says, while the call still needs an approval.
    step_up: Option<StepUpInfo>,
    presented: Presented,
    /// `arguments` or `request`: what a step-up's digest was taken over.
    digest_of: &'static str,
    /// A plain HTTP step-up call: what its approval binds (the body's digest filled in when it is read).
    binding: Option<approval::HttpBinding>,
    /// The binding's [`approval::HttpBinding::head_digest`].
    head_digest: Option<String>,
    approval_counter: Option<Result<(), &'static str>>,
    /// The MCP server the request's route goes to: every refusal on it is a JSON-RPC error.
    server: Option<McpServerIdx>,
    /// A body follows the headers.
    body_follows: bool,
    /// A plain-words detail for the reply (what the body parser found).
    detail: Option<String>,
    /// The argument condition an `invalid_arguments` refusal failed.
    argument: Option<ArgumentFailure>,
    /// What an MCP body's calls charge to their limits, worked out when the body is decided (the body is not kept).
    charges: Option<Result<Vec<Charge>, BadAmount>>,
    /// The limits were checked (a request is charged at most once).
    limits_checked: bool,
    /// The HTTP route's tool id, for `x-warden-tool` (with `forward_identity_headers`).
    forward_tool: Option<Box<str>>,
    state: State,
}

impl Flow {
    /// The request headers: decides what can be decided now (see the module documentation).
    pub fn on_request_headers(
        config: &GateConfig,
        bundle: Option<&CompiledBundle>,
        req: Request<'_, '_, '_>,
    ) -> (Flow, Step) {
        let view = req.view;
        let raw_path = view.path.or_empty();
        let normalized = view.path.value().map(path::normalize);
        let now = i64::try_from(req.time_ns / 1_000_000_000).unwrap_or(i64::MAX);
        let mut flow = Flow {
            decision_id: req.decision_id,
            time_ns: req.time_ns,
            now,
            method: view.method.or_empty().to_string(),
            host: view.authority.or_empty().to_string(),
            path: match &normalized {
                Some(Ok(n)) => n.path.clone(),
                _ => raw_path.split('?').next().unwrap_or_default().to_string(),
            },
            rewrite: match &normalized {
                Some(Ok(n)) if !n.is_request_path(raw_path) => Some(n.request_path()),
                _ => None,
            },
            reserved: view.reserved.iter().map(|r| r.to_string()).collect(),
            identity: Identity::Missing,
            tool: None,
            decision: Decision::refusal(Reason::NoActiveBundle, 0),
            revision: None,
            gov: Governance::default(),
            mcp: None,
            call: None,
            step_up: None,
            presented: Presented::Absent,
            digest_of: "request",
            binding: None,
            head_digest: None,
            approval_counter: None,
            server: None,
            body_follows: !req.end_of_stream,
            detail: None,
            argument: None,
            charges: None,
            limits_checked: false,
            forward_tool: None,
            state: State::Decided,
        };
        let Some(bundle) = bundle else {
            let step = flow.finish(config, None, Then::Headers);
            return (flow, step);
        };
        flow.revision = Some(bundle.revision);
        if matches!(normalized, Some(Ok(_))) {
            flow.server = bundle.resolve_mcp_server(&flow.host, &flow.path);
        }
        let grace = i64::try_from(config.bundle_grace_seconds).unwrap_or(i64::MAX);
        let refused = if now > bundle.expires_at.saturating_add(grace) {
            Some(Reason::BundleExpired)
        } else {
            match (view.method, view.authority, normalized) {
                (Field::Present(_), Field::Present(_), Some(Ok(_))) => None,
                (Field::Present(_), Field::Present(_), Some(Err(e))) => Some(Reason::BadPath(e)),
                _ => Some(Reason::BadRequest),
            }
        };
        if let Some(reason) = refused {
            flow.decision = Decision::refusal(reason, bundle.revision);
            let step = flow.finish(config, Some(bundle), Then::Headers);
            return (flow, step);
        }

        // A public route needs no identity: no token is read, and none is forwarded.
        if let Some(target) =
            bundle.resolve_public(&flow.host, &flow.method, &flow.path, view.cors_preflight(req.end_of_stream))
        {
            flow.decision = decide::public(bundle, target);
            let step = match target {
                PublicTarget::Metadata(i) => {
                    let document = bundle.resource_document(i).unwrap_or("{}");
                    Step {
                        edit_headers: false,
                        record: true,
                        next: Next::Reply(reply::resource_metadata(document, &flow.decision_id)),
                    }
                }
                PublicTarget::Route(_) => flow.finish(config, Some(bundle), Then::Headers),
            };
            return (flow, step);
        }

        flow.identity = match req.credentials {
            Credentials::Given(identity) => identity,
            Credentials::Tokens(cache) => verify_tokens(bundle, config, view, req.peer, cache, now),
        };
        let tool = bundle.resolve_http(&flow.host, &flow.method, &flow.path);
        let facts = Facts { environment: config.environment.clone(), identity: flow.identity, tool };
        flow.decision = decide(bundle, &facts, now);
        flow.gov.shadow = decide::shadow(bundle, &facts, None, now).map(|d| ShadowRecord::from_decision(&d));
        flow.gov.exception = ExceptionRecord::for_decision(bundle, &flow.decision);
        flow.identity = facts.identity;
        flow.tool = tool;
        if config.forward_identity_headers {
            flow.forward_tool = tool.map(|t| bundle.tool_id(t).into());
        }

        let verified = matches!(flow.identity, Identity::Verified(_));
        if flow.decision.reason == Reason::UnknownTool
            && flow.decision.outcome == Outcome::Allow
            && bundle.resolve_mcp_server(&flow.host, &flow.path).is_none()
        {
            // `unknown_tool: allow` lets through what reaches no route, but not a near miss of one: its tool may
            // answer it as that route.
            let tool = bundle.near_miss_tool(&flow.host, &flow.method, &flow.path);
            if tool.is_some() || bundle.near_miss_mcp_server(&flow.host, &flow.path).is_some() {
                flow.tool = tool;
                flow.decision = Decision::refusal(Reason::Request(RequestRefusal::RouteNearMiss), bundle.revision);
                let step = flow.finish(config, Some(bundle), Then::Headers);
                return (flow, step);
            }
        }
        if verified {
            flow.presented = Presented::from_header(view.approval);
        }
        if verified && flow.decision.reason.passed_identity() {
            if let Some(server) = flow.server {
                let step = flow.mcp_headers(config, bundle, view, server, req.end_of_stream);
                return (flow, step);
            }
        }
        if verified && flow.decision.outcome == Outcome::StepUp {
            // The approval binds the request as it goes upstream: method, host, path and query, content type, body.
            let target = view.path.value().map(path::normalize).and_then(Result::ok).map(|n| n.request_path());
            let binding = approval::HttpBinding {
                method: flow.method.clone(),
                host: flow.host.to_ascii_lowercase(),
                path: target.unwrap_or_else(|| flow.path.clone()),
                content_type: view.content_type.or_empty().to_string(),
                body_sha256: req.end_of_stream.then(|| approval::body_digest(b"")),
            };
            flow.head_digest = Some(binding.head_digest());
            flow.binding = Some(binding);
            if !req.end_of_stream && config.mode == Mode::Enforce {
                // The approval binds the body: hold the request until it is complete. An encoded body is not the
                // bytes the approver saw: refused before anything goes upstream.
                if view.encoded_body() {
                    flow.decision =
                        Decision::refusal(Reason::Request(RequestRefusal::StepUpContentEncoding), bundle.revision);
                    let step = flow.finish(config, Some(bundle), Then::Headers);
                    return (flow, step);
                }
                if !config.allow_on_headers_stop_iteration {
                    // The headers go upstream when they continue: the head is decided on the approval now.
                    if let Some(step) = flow.settle_head(config, bundle) {
                        return (flow, step);
                    }
                }
                flow.state = State::StepUpBody;
                let next = if config.allow_on_headers_stop_iteration { Next::Pause } else { Next::Continue };
                return (flow, Step { edit_headers: true, record: false, next });
            }
            if req.end_of_stream {
                let digest = flow.binding.as_ref().and_then(approval::HttpBinding::digest);
                let step = flow.settle(config, bundle, digest, "request", Then::Headers);
                return (flow, step);
            }
        }
        let step = flow.finish(config, Some(bundle), Then::Headers);
        (flow, step)
    }

    /// The header phase of an MCP request (see the module documentation).
    fn mcp_headers(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        view: &RequestView<'_>,
        server: McpServerIdx,
        end_of_stream: bool,
    ) -> Step {
        // The HTTP route's decision does not count for an MCP endpoint: the message decides.
        self.tool = None;
        self.forward_tool = None;
        self.gov = Governance::default();
        let header_method = view.mcp_method.value().map(str::to_string);
        let header_name = view.mcp_name.value().map(str::to_string);
        let refusal = |r: RequestRefusal| Decision::refusal(Reason::Request(r), bundle.revision);
        let early = match self.method.as_str() {
            // A protocol switch (WebSocket, h2c) would carry JSON-RPC past the body decision.
            _ if view.upgrade => Some(refusal(RequestRefusal::McpUpgrade)),
            // The stream GET and the session DELETE carry no body: one would go upstream undecided.
            "GET" | "DELETE" if !end_of_stream => Some(refusal(RequestRefusal::McpUnexpectedBody)),
            "GET" | "DELETE" => {
                Some(decide::mcp::decide_lifecycle(bundle, &self.facts(config, None), server, self.now))
            }
            "POST" => match check_mcp_headers(view) {
                Err(r) => Some(refusal(r)),
                Ok(()) if end_of_stream => Some(refusal(RequestRefusal::McpBody(McpErrorKind::NotJson))),
                Ok(()) => match &header_method {
                    None => None,
                    Some(m) => {
                        let facts = self.facts(config, None);
                        // What this VM saw listed is only consulted on the body (a `Deny` here must hold whatever
                        // it says): the headers see the bundle's pins alone.
                        let listed = PinMemory::default();
                        let name = header_name.as_deref();
                        match decide::mcp::decide_headers(bundle, &facts, server, m, name, &listed, self.now) {
                            None => Some(refusal(RequestRefusal::McpHeaderMismatch)),
                            Some(d) if d.outcome == Outcome::Deny => Some(d),
                            Some(_) => None,
                        }
                    }
                },
            },
            _ => Some(refusal(RequestRefusal::McpMethodNotAllowed)),
        };
        if let Some(d) = early {
            self.decision = d;
            if let Some(msg) =
                header_method.as_deref().and_then(|m| decide::mcp::header_message(m, header_name.as_deref()))
            {
                if let McpTarget::Tool(t) = bundle.resolve_mcp(server, &msg) {
                    self.tool = Some(t);
                }
            }
            self.mcp = Some(McpRecord {
                server: bundle.mcp_server_name(server).to_string(),
                method: header_method,
                name: header_name,
                ..McpRecord::default()
            });
            return self.finish(config, Some(bundle), Then::Headers);
        }
        self.state = State::McpBody { server, header_method, header_name };
        let next = if config.allow_on_headers_stop_iteration { Next::Pause } else { Next::Continue };
        Step { edit_headers: true, record: false, next }
    }

    /// A request body chunk; `size` is everything buffered so far.
    pub fn on_request_body(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        size: usize,
        end_of_stream: bool,
    ) -> Step {
        let limit = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
        match &self.state {
            State::McpBody { server, .. } => {
                let server = *server;
                if size > limit {
                    return self.mcp_refusal(config, bundle, server, RequestRefusal::McpBodyTooLarge);
                }
            }
            State::StepUpBody => {
                if size > limit {
                    return self.http_body_refusal(config, bundle, RequestRefusal::BodyTooLarge);
                }
            }
            State::Refusing { .. } => {
                if size > limit {
                    // Too large to look for the id in: answered without it.
                    self.state = State::Decided;
                    return Step::wait(Next::Reply(self.reply(Some(bundle), Shape::JsonRpc(RpcRequests::Unread))));
                }
            }
            _ => return Step::wait(Next::Continue),
        }
        Step::wait(if end_of_stream { Next::ReadBody } else { Next::Pause })
    }

    /// The whole request body, as [`Next::ReadBody`] asked; `None` when the host did not hand it over. `listed` is
    /// what this VM last saw the pinned tools of MCP servers listed as (the [`PinMemory`] the host keeps per VM).
    pub fn on_request_body_bytes(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        body: Option<&[u8]>,
        listed: &PinMemory,
    ) -> Step {
        match std::mem::replace(&mut self.state, State::Decided) {
            State::McpBody { server, header_method, header_name } => {
                let head = (header_method, header_name);
                self.mcp_body(config, bundle, server, head, body.unwrap_or_default(), listed)
            }
            State::StepUpBody => match body {
                // A body the host does not hand over cannot be bound to: refused, never checked as if it were empty.
                None => self.http_body_refusal(config, bundle, RequestRefusal::BodyUnreadable),
                Some(b) => {
                    let digest = self.binding.as_mut().and_then(|binding| {
                        binding.body_sha256 = Some(approval::body_digest(b));
                        binding.digest()
                    });
                    self.settle(config, bundle, digest, "request", Then::HttpBody)
                }
            },
            State::Refusing { server } => {
                let requests = requests_in(body.unwrap_or_default(), bundle.mcp_batches(server));
                Step::wait(Next::Reply(self.reply(Some(bundle), Shape::JsonRpc(requests))))
            }
            other => {
                self.state = other;
                Step::wait(Next::Continue)
            }
        }
    }

    /// Request trailers: a body still to be decided is refused (its end is only known here, and MCP requests have
    /// no trailers).
    pub fn on_request_trailers(&mut self, config: &GateConfig, bundle: &CompiledBundle) -> Step {
        match &self.state {
            State::McpBody { server, .. } => {
                let server = *server;
                self.mcp_refusal(config, bundle, server, RequestRefusal::McpTrailers)
            }
            State::StepUpBody => self.http_body_refusal(config, bundle, RequestRefusal::StepUpTrailers),
            State::Refusing { .. } => {
                self.state = State::Decided;
                Step::wait(Next::Reply(self.reply(Some(bundle), Shape::JsonRpc(RpcRequests::Unread))))
            }
            _ => Step::wait(Next::Continue),
        }
    }

    /// The outcome of the [`Next::Claim`] this flow asked for.
    pub fn on_claimed(&mut self, config: &GateConfig, bundle: &CompiledBundle, outcome: ClaimOutcome) -> Step {
        let (approval, then) = match std::mem::replace(&mut self.state, State::Decided) {
            State::Claiming { approval, then } => (approval, then),
            State::Limiting { charges, then } => return self.limited(config, bundle, &charges, outcome, then),
            other => {
                self.state = other;
                return Step::wait(Next::Continue);
            }
        };
        let result = match outcome {
            ClaimOutcome::Claimed => Ok(&approval),
            ClaimOutcome::Refused(ClaimRefused::Replayed) => Err(ApprovalFailure::Replayed),
            ClaimOutcome::Refused(ClaimRefused::Unavailable | ClaimRefused::Limited { .. })
            | ClaimOutcome::StoreFailed => Err(ApprovalFailure::StoreUnavailable),
        };
        match result {
            Ok(a) => {
                self.approval_counter = Some(Ok(()));
                self.gov.approval = Some(ApprovalRecord::new(a));
                self.step_up = None;
            }
            Err(f) => {
                self.approval_counter = Some(Err(f.code()));
                self.step_up = Some(self.step_up_info(config, bundle));
            }
        }
        self.decision = self.decision.clone().with_approval(result);
        self.finish(config, Some(bundle), then)
    }

    /// Whether the response is rewritten: then the host reads the response's `:status`, `content-type` and
    /// `content-encoding` and calls [`Flow::on_response_headers`].
    pub fn filters_response(&self) -> bool {
        matches!(self.state, State::Listing { started: false, .. })
    }

    /// The response headers of a filtered `tools/list`: the edits to make (the body changes length; an unreadable
    /// response is replaced by a JSON error). An error status carries no tool list: nothing is filtered.
    pub fn on_response_headers(
        &mut self,
        status: Option<&str>,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> ResponseEdits {
        let State::Listing { framing, started, .. } = &mut self.state else { return Vec::new() };
        if *started {
            return Vec::new();
        }
        *started = true;
        // Every 2xx (and a response without a status) goes through the filter, so an unusual success status cannot
        // carry an unfiltered list.
        if status.is_some_and(|s| !s.starts_with('2')) {
            self.state = State::Decided;
            return Vec::new();
        }
        *framing = list_framing(content_type, content_encoding);
        let mut edits = vec![("content-length", None)];
        if framing.is_none() {
            edits.push(("content-encoding", None));
            edits.push(("content-type", Some("application/json")));
        }
        edits
    }

    /// A response body chunk; `body_size` is what the host holds buffered (all of it while the flow pauses).
    pub fn on_response_body(&self, config: &GateConfig, body_size: usize, end_of_stream: bool) -> ResponseNext {
        match &self.state {
            State::Released => ResponseNext::Discard,
            State::Listing { started: true, framing: Some(ListFraming::Sse), read, .. } => {
                ResponseNext::Read { from: read.bytes }
            }
            State::Listing { started: true, read, .. }
                if end_of_stream || body_size as u64 > config.max_list_response_bytes =>
            {
                ResponseNext::Read { from: read.bytes }
            }
            State::Listing { started: true, .. } => ResponseNext::Pause,
            _ => ResponseNext::Continue,
        }
    }

    /// Response trailers: the body is complete (an answer not read yet is read now, as at the end of the stream).
    pub fn on_response_trailers(&self) -> ResponseNext {
        match &self.state {
            State::Listing { started: true, read, .. } => ResponseNext::Read { from: read.bytes },
            _ => ResponseNext::Continue,
        }
    }

    /// The bytes of a filtered `tools/list` response from the `from` of [`ResponseNext::Read`] to `body_size` (the
    /// end of what is buffered); `now` is the host's time in seconds. `Some(body)`: replace the whole buffered body
    /// with it and let it go — the filtered answer (with, for an event stream, the events before it), or a JSON-RPC
    /// error when the response cannot be filtered, is over `max_list_response_bytes` or missed its deadline
    /// ([`LIST_DEADLINE_SECS`] from the request); anything after it is discarded. `None`: keep buffering.
    ///
    /// A filtered answer teaches `listed` (this VM's [`PinMemory`]) what the server's pinned tools were listed as;
    /// when it lost tools to the pins, [`Flow::record_again`] says so.
    #[allow(clippy::too_many_arguments)] // the host's event, as it comes
    pub fn on_response_body_bytes(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        bytes: &[u8],
        body_size: usize,
        end_of_stream: bool,
        now: i64,
        listed: &mut PinMemory,
    ) -> Option<Vec<u8>> {
        let facts = self.facts(config, None);
        let (request_time, bound) = (self.now, config.max_list_response_bytes);
        let over = body_size as u64 > bound;
        let State::Listing { server, id, framing, read, .. } = &mut self.state else {
            return match self.state {
                State::Released => Some(Vec::new()),
                _ => Some(bytes.to_vec()),
            };
        };
        read.bytes = read.bytes.saturating_add(bytes.len());
        let server = *server;
        let visible = |name: &str| decide::mcp::tool_visibility(bundle, &facts, server, name, request_time);
        let lens = Lens { visible: &visible, pins: bundle.mcp_pins(server) };
        let outcome = match *framing {
            None => Err(ListFailure::Unfilterable),
            Some(ListFraming::Json) if over => Err(ListFailure::TooLarge),
            Some(ListFraming::Json) if !end_of_stream => return None,
            // Read whole: nothing was handed over before the end.
            Some(ListFraming::Json) => {
                filter_tools_list(ListFraming::Json, bytes, id, lens).map_err(|Unfilterable| ListFailure::Unfilterable)
            }
            Some(ListFraming::Sse) => match read.sse.push(bytes, id, lens) {
                Ok(Some(out)) => Ok(out),
                Err(Unfilterable) => Err(ListFailure::Unfilterable),
                Ok(None) if end_of_stream => Err(ListFailure::Unfilterable),
                Ok(None) if over => Err(ListFailure::TooLarge),
                Ok(None) if now.saturating_sub(request_time) > LIST_DEADLINE_SECS => Err(ListFailure::Deadline),
                Ok(None) => return None,
            },
        };
        let body = match outcome {
            Ok((body, report)) => {
                listed.learn(bundle.mcp_server_name(server), &report);
                if let Some(m) = self.mcp.as_mut() {
                    m.tools_removed = report.removed;
                }
                body
            }
            Err(why) => list_failure(*framing, id, &self.decision_id, why),
        };
        self.state = State::Released;
        Some(body)
    }

    /// After [`Flow::on_response_body_bytes`] released a `tools/list` answer that lost tools to its server's pins:
    /// the host writes the decision record again ([`Flow::record`], the same decision id, now with
    /// `mcp.tools_removed`), as a warning, and replaces the one in filter state; the counters are not bumped again.
    pub fn record_again(&self) -> bool {
        matches!(self.state, State::Released) && self.mcp.as_ref().is_some_and(|m| !m.tools_removed.is_empty())
    }

    /// Calls `f` with every edit of the request headers, when a [`Step`] says `edit_headers`: the reserved headers
    /// removed, the normalized path, and with `forward_identity_headers` the decision id, the verified identity (an
    /// id with characters outside visible ASCII is not forwarded) and the HTTP route's tool (`x-warden-tool`; not on
    /// MCP routes, whose tool is only known from the body, after the headers were edited). Client copies of every
    /// `x-warden-*` header are removed first, so filters after Warden (Envoy's rate-limit filters) can key on them.
    pub fn for_each_header_edit(&self, config: &GateConfig, mut f: impl FnMut(Edit<'_>)) {
        for name in &self.reserved {
            f(Edit::Remove(name));
        }
        if let Some(path) = &self.rewrite {
            f(Edit::Path(path));
        }
        if config.forward_identity_headers {
            f(Edit::Add("x-warden-decision-id", &self.decision_id));
            if let Identity::Verified(agent) = &self.identity {
                if header_safe(&agent.id) {
                    f(Edit::Add("x-warden-agent", &agent.id));
                }
                if let Some(task) = agent.task.as_ref().filter(|t| header_safe(&t.id)) {
                    f(Edit::Add("x-warden-task", &task.id));
                }
            }
            if let Some(tool) = &self.forward_tool {
                f(Edit::Add("x-warden-tool", tool));
            }
        }
    }

    /// The decision record's fields, when a [`Step`] says `record`; the host adds its VM id and its clock now
    /// (nanoseconds since the epoch: the latency is the time since the headers arrived).
    pub fn record<'a>(
        &'a self,
        config: &'a GateConfig,
        bundle: Option<&'a CompiledBundle>,
        vm: &'a str,
        now_ns: u64,
    ) -> RecordFields<'a> {
        let latency_ns = now_ns.saturating_sub(self.time_ns);
        RecordFields {
            decision_id: &self.decision_id,
            time_ns: self.time_ns,
            environment: &config.environment,
            vm,
            mode: config.mode,
            latency_ns,
            agent: self.agent(),
            tool: self.tool.zip(bundle).map(|(t, b)| b.tool_id(t)),
            method: &self.method,
            path: &self.path,
            host: &self.host,
            decision: &self.decision,
            revision: self.revision,
            governance: &self.gov,
            mcp: self.mcp.as_ref(),
        }
    }

    /// The counters the recorded request bumps.
    pub fn counters(&self, config: &GateConfig) -> Counters {
        Counters {
            decision: decision_label(&self.decision, config.mode),
            reason: self.decision.reason.code(),
            shadow: self.gov.shadow.as_ref().map(|s| s.decision),
            exception_used: self.gov.exception.is_some(),
            approval: self.approval_counter,
            limit: self.gov.limit.as_ref().filter(|_| self.decision.reason.is_limit()).map(|l| l.id.as_str().into()),
        }
    }

    /// The decision (final once recorded).
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The caller's identity as established.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The verified agent, if any.
    pub fn agent(&self) -> Option<&Agent> {
        match &self.identity {
            Identity::Verified(a) => Some(a),
            Identity::Missing | Identity::Invalid(_) => None,
        }
    }

    /// The tool the request reached (the deciding message's, for MCP).
    pub fn tool(&self) -> Option<ToolIdx> {
        self.tool
    }

    /// The MCP message that decided, if the body was read.
    pub fn call(&self) -> Option<&McpMessage> {
        self.call.as_ref()
    }

    /// What the step-up reply states, while the call needs an approval.
    pub fn step_up(&self) -> Option<&StepUpInfo> {
        self.step_up.as_ref()
    }

    /// The record's facts beyond the decision.
    pub fn governance(&self) -> &Governance {
        &self.gov
    }

    /// The normalized path (or the raw path without query, when it was refused).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the request goes on in enforce mode or shadow mode.
    fn lets_through(&self, config: &GateConfig) -> bool {
        self.decision.outcome == Outcome::Allow || config.mode == Mode::Shadow
    }

    fn facts(&self, config: &GateConfig, tool: Option<ToolIdx>) -> Facts {
        Facts { environment: config.environment.clone(), identity: self.identity.clone(), tool }
    }

    /// The reply for the decision in `shape`: every refusal is rendered here, by [`reply::build`].
    fn reply(&self, bundle: Option<&CompiledBundle>, shape: Shape) -> LocalReply {
        let rule = self.decision.rule_id();
        let (owner, rule_reference) = match bundle.map(|b| b.rule_contact(rule)) {
            Some((owner, reference)) => (Some(owner), reference),
            None => (None, None),
        };
        let mcp = match (&self.mcp, self.server, bundle) {
            (Some(m), _, _) => {
                Some(McpLine { server: &m.server, method: m.method.as_deref(), name: m.name.as_deref() })
            }
            (None, Some(s), Some(b)) => Some(McpLine { server: b.mcp_server_name(s), method: None, name: None }),
            _ => None,
        };
        let detail = match (self.decision.reason, bundle) {
            (Reason::IdentityInvalid(f), Some(b)) => reply::token_detail(b, f),
            _ => self.detail.clone(),
        };
        let refusal = Refusal {
            decision: &self.decision,
            revision: self.revision,
            decision_id: &self.decision_id,
            step_up: self.step_up.as_ref(),
            tool: self.tool.zip(bundle).map(|(t, b)| b.tool_id(t)),
            agent: self.agent().map(|a| a.id.as_str()),
            request: RequestLine { method: &self.method, host: &self.host, path: &self.path },
            mcp,
            owner,
            rule_reference,
            argument: self.argument.clone(),
            detail,
            resource_metadata: bundle.and_then(|b| b.resource_metadata_url(self.server, &self.host)),
            limit: self.gov.limit.as_ref(),
        };
        reply::build(&refusal, &shape)
    }

    /// Records and acts on the final decision. A refusal on an MCP route is a JSON-RPC error; one decided before the
    /// body, with the headers held and a body to come, waits for the body to answer with its `id`.
    fn finish(&mut self, config: &GateConfig, bundle: Option<&CompiledBundle>, then: Then) -> Step {
        self.state = State::Decided;
        if let Some(b) = bundle.filter(|b| !self.limits_checked && !b.limits().is_empty()) {
            if self.decision.outcome == Outcome::Allow {
                self.limits_checked = true;
                let charges = match self.charges.take() {
                    Some(c) => c,
                    None => self.charges_for(config, b, self.tool.map(|t| (t, None))),
                };
                match charges {
                    Ok(charges) if charges.is_empty() => {}
                    Ok(charges) => {
                        let claim = Claim::Limits { charges: charges.clone(), now: self.now };
                        self.state = State::Limiting { charges, then };
                        return Step::wait(Next::Claim(claim));
                    }
                    Err(BadAmount { limit }) => {
                        let l = b.limits().get(limit);
                        self.decision = Decision {
                            outcome: Outcome::Deny,
                            reason: Reason::InvalidArguments,
                            ..self.decision.clone()
                        };
                        self.argument = l.and_then(|l| match &l.kind {
                            limits::Kind::Budget { argument, .. } => Some(ArgumentFailure {
                                pointer: argument.to_string(),
                                condition: format!(
                                    "{argument} counted by budget {}: a number from 0 with at most 6 decimal places",
                                    l.id
                                ),
                            }),
                            limits::Kind::Calls { .. } => None,
                        });
                    }
                }
            }
        }
        let through = self.lets_through(config);
        let edit_headers = through && matches!(then, Then::Headers);
        let next = if through {
            Next::Continue
        } else {
            match (&then, self.server) {
                (Then::Mcp { requests, .. }, _) => Next::Reply(self.reply(bundle, Shape::JsonRpc(requests.clone()))),
                (Then::Headers, Some(server))
                    if self.body_follows && self.method == "POST" && config.allow_on_headers_stop_iteration =>
                {
                    self.state = State::Refusing { server };
                    Next::Pause
                }
                (Then::Headers | Then::HttpBody, Some(_)) => {
                    Next::Reply(self.reply(bundle, Shape::JsonRpc(RpcRequests::Unread)))
                }
                (Then::Headers | Then::HttpBody, None) => Next::Reply(self.reply(bundle, Shape::Http)),
            }
        };
        if let Then::Mcp { server, list: Some(id), .. } = then {
            if self.decision.outcome == Outcome::Allow {
                self.state = State::Listing { server, id, framing: None, started: false, read: Box::default() };
            }
        }
        Step { edit_headers, record: true, next }
    }

    /// What these calls (tool, arguments) charge to their tools' limits.
    fn charges_for<'a>(
        &self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        calls: impl IntoIterator<Item = (ToolIdx, Option<&'a Value>)>,
    ) -> Result<Vec<Charge>, BadAmount> {
        let agent = self.agent();
        let mut out = Vec::new();
        for (t, args) in calls {
            let caller = Caller {
                agent: agent.map_or("", |a| a.id.as_str()),
                task: agent.and_then(|a| a.task.as_ref()).map(|t| t.id.as_str()),
                tool: bundle.tool_id(t),
                environment: &config.environment,
            };
            for (i, l) in bundle.limits().of_tool(t.0) {
                out.push(limits::charge(i, l, t.0, &caller, args, self.now)?);
            }
        }
        Ok(out)
    }

    /// The outcome of charging an allowed call to its limits: allowed as decided, or refused by the limit.
    fn limited(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        charges: &[Charge],
        outcome: ClaimOutcome,
        then: Then,
    ) -> Step {
        let (index, used) = match outcome {
            ClaimOutcome::Claimed => return self.finish(config, Some(bundle), then),
            ClaimOutcome::Refused(ClaimRefused::Limited { charge, used }) => (charge, Some(used)),
            ClaimOutcome::Refused(ClaimRefused::Replayed | ClaimRefused::Unavailable) | ClaimOutcome::StoreFailed => {
                (0, None)
            }
        };
        let (Some(c), Some(l)) = (charges.get(index), charges.get(index).and_then(|c| bundle.limits().get(c.limit)))
        else {
            self.decision =
                Decision { outcome: Outcome::Deny, reason: Reason::LimitStoreUnavailable, ..self.decision.clone() };
            return self.finish(config, Some(bundle), then);
        };
        let same = |x: &&Charge| x.entry == c.entry;
        let requested: u64 = charges.iter().filter(same).map(|x| x.amount).sum();
        let earlier: u64 = charges.get(..index).unwrap_or_default().iter().filter(same).map(|x| x.amount).sum();
        let before = used.map(|u| u.saturating_sub(earlier));
        let units = |n: u64| match l.kind {
            limits::Kind::Calls { .. } => Value::from(n),
            limits::Kind::Budget { .. } => limits::units_value(n),
        };
        let agent = self.agent();
        let caller = Caller {
            agent: agent.map_or("", |a| a.id.as_str()),
            task: agent.and_then(|a| a.task.as_ref()).map(|t| t.id.as_str()),
            tool: bundle.tool_id(ToolIdx(c.tool)),
            environment: &config.environment,
        };
        let key = l.per.iter().map(|k| (k.as_str().to_string(), Value::from(caller.part(*k)))).collect();
        self.gov.limit = Some(LimitRecord {
            id: l.id.to_string(),
            kind: l.kind.as_str(),
            key,
            window_seconds: l.window,
            max: units(c.max),
            requested: units(requested),
            remaining: before.map(|b| units(c.max.saturating_sub(b))),
            argument: match &l.kind {
                limits::Kind::Budget { argument, .. } => Some(argument.to_string()),
                limits::Kind::Calls { .. } => None,
            },
            resets_at: crate::time::format_rfc3339(c.window_end),
            retry_after_seconds: c.window_end.saturating_sub(self.now).max(1),
            owner: l.owner.as_deref().unwrap_or(&bundle.owner).to_string(),
        });
        let reason = match (used, &l.kind) {
            (None, _) => Reason::LimitStoreUnavailable,
            (Some(_), limits::Kind::Calls { .. }) => Reason::RateLimited,
            (Some(_), limits::Kind::Budget { .. }) => Reason::BudgetExhausted,
        };
        self.decision = Decision { outcome: Outcome::Deny, reason, ..self.decision.clone() };
        self.finish(config, Some(bundle), then)
    }

    /// An MCP request refused for its shape before its body decided.
    fn mcp_refusal(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        server: McpServerIdx,
        r: RequestRefusal,
    ) -> Step {
        self.decision = Decision::refusal(Reason::Request(r), bundle.revision);
        self.mcp = Some(McpRecord { server: bundle.mcp_server_name(server).to_string(), ..McpRecord::default() });
        self.finish(config, Some(bundle), Then::Mcp { server, requests: RpcRequests::Unread, list: None })
    }

    /// A held HTTP step-up body refused for its shape.
    fn http_body_refusal(&mut self, config: &GateConfig, bundle: &CompiledBundle, r: RequestRefusal) -> Step {
        self.decision = Decision::refusal(Reason::Request(r), bundle.revision);
        self.finish(config, Some(bundle), Then::HttpBody)
    }

    /// The whole MCP body: parsed, checked against the MCP headers, decided.
    fn mcp_body(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        server: McpServerIdx,
        (header_method, header_name): (Option<String>, Option<String>),
        bytes: &[u8],
        listed: &PinMemory,
    ) -> Step {
        let mut rec = McpRecord { server: bundle.mcp_server_name(server).to_string(), ..McpRecord::default() };
        let mut body = match mcp::parse_body(bytes, bundle.mcp_batches(server)) {
            Ok(body) => body,
            Err(e) => {
                self.mcp = Some(rec);
                self.decision = Decision::refusal(Reason::Request(RequestRefusal::McpBody(e.kind())), bundle.revision);
                self.detail = Some(e.to_string());
                let requests = requests_in(bytes, bundle.mcp_batches(server));
                return self.finish(config, Some(bundle), Then::Mcp { server, requests, list: None });
            }
        };
        rec.messages = body.messages.len();
        rec.batch = body.batch;
        let requests =
            RpcRequests::Ids { ids: body.messages.iter().filter_map(|m| m.id.clone()).collect(), batch: body.batch };
        if !headers_agree(header_method.as_deref(), header_name.as_deref(), &body) {
            self.mcp = Some(rec);
            self.decision = Decision::refusal(Reason::Request(RequestRefusal::McpHeaderMismatch), bundle.revision);
            return self.finish(config, Some(bundle), Then::Mcp { server, requests, list: None });
        }
        let facts = self.facts(config, None);
        let bd = decide::mcp::decide_body(bundle, &facts, server, &body, listed, self.now);
        if !bundle.limits().is_empty() && bd.decision.outcome != Outcome::Deny {
            // Every call of the body counts, not only the deciding one (a batch of ten refunds is ten refunds).
            let calls = body.messages.iter().filter_map(|m| match bundle.resolve_mcp(server, m) {
                McpTarget::Tool(t) => Some((t, m.arguments())),
                McpTarget::Lifecycle | McpTarget::Unknown => None,
            });
            self.charges = Some(self.charges_for(config, bundle, calls));
        }
        let list = match (body.messages.first(), body.batch) {
            (Some(m), false) if m.method() == "tools/list" => m.id.clone(),
            _ => None,
        };
        let msg = if bd.message < body.messages.len() { Some(body.messages.swap_remove(bd.message)) } else { None };
        rec.method = msg.as_ref().map(McpMessage::method).filter(|m| !m.is_empty()).map(str::to_string);
        rec.name = msg.as_ref().and_then(|m| m.name()).map(str::to_string);
        self.mcp = Some(rec);
        self.tool = msg.as_ref().and_then(|m| match bundle.resolve_mcp(server, m) {
            McpTarget::Tool(t) => Some(t),
            McpTarget::Lifecycle | McpTarget::Unknown => None,
        });
        self.decision = bd.decision;
        if let (Reason::Pin(PinFailure::DefinitionChanged), Some(McpKind::ToolCall { name, .. })) =
            (self.decision.reason, msg.as_ref().map(|m| &m.kind))
        {
            let server_name = bundle.mcp_server_name(server);
            let pin = bundle.mcp_pins(server).and_then(|p| p.pin(name)).unwrap_or_default();
            self.detail = Some(match listed.seen(server_name, name) {
                Some(seen) => format!(" (pinned sha256 {pin}, last listed as {seen})"),
                None => format!(" (pinned sha256 {pin})"),
            });
        }
        let args = msg.as_ref().and_then(|m| m.arguments());
        if self.decision.reason == Reason::InvalidArguments {
            self.argument = bundle
                .failed_condition(self.decision.rule_id(), args)
                .map(|f| ArgumentFailure { pointer: f.argument, condition: f.condition });
        }
        if let Some(t) = self.tool {
            let facts = Facts { tool: Some(t), ..facts };
            self.gov.shadow = decide::shadow(bundle, &facts, args, self.now).map(|d| ShadowRecord::from_decision(&d));
            if bundle.logs_arguments(t) {
                self.gov.arguments = args.cloned();
            }
        }
        self.gov.exception = ExceptionRecord::for_decision(bundle, &self.decision);
        let then = Then::Mcp { server, requests, list };
        let step = if self.decision.outcome == Outcome::StepUp {
            // The digest (canonical JSON and SHA-256 of the arguments) is taken only for a step-up, whose approval
            // binds to it: on every call it would cost more than the rest of the decision.
            let digest = arguments_digest(args);
            self.call = msg;
            return self.settle(config, bundle, Some(digest), "arguments", then);
        } else {
            self.finish(config, Some(bundle), then)
        };
        self.call = msg;
        step
    }

    /// The header phase of a plain HTTP step-up call whose headers go upstream before its body is read: its
    /// approval is checked on the head (`head_digest`). `None`: the head passed, the body decides; otherwise the
    /// refusal (no approval, a refused one), answered before anything reaches the upstream.
    fn settle_head(&mut self, config: &GateConfig, bundle: &CompiledBundle) -> Option<Step> {
        self.digest_of = "request";
        let refused = match &self.presented {
            Presented::Absent => None,
            Presented::Refused(f) => Some(*f),
            Presented::Token(token) => {
                let call = self.call_binding(bundle);
                bundle.verify_approval(self.decision.rule_id(), token, &call, self.now).err()
            }
        };
        if matches!(self.presented, Presented::Token(_)) && refused.is_none() {
            return None;
        }
        self.step_up = Some(self.step_up_info(config, bundle));
        if let Some(f) = refused {
            self.approval_counter = Some(Err(f.code()));
            self.decision = self.decision.clone().with_approval(Err(f));
        }
        Some(self.finish(config, Some(bundle), Then::Headers))
    }

    /// Checks the approval of a step-up decision against the call (bound to `digest`; `None` only when a binding
    /// could not be made, which no approval matches): none presented or refused ends the request now; a verified one
    /// is claimed first (single use).
    fn settle(
        &mut self,
        config: &GateConfig,
        bundle: &CompiledBundle,
        digest: Option<String>,
        digest_of: &'static str,
        then: Then,
    ) -> Step {
        self.digest_of = digest_of;
        // Never `None` past the head: an absent digest would skip the body check.
        self.gov.arguments_digest = Some(digest.unwrap_or_default());
        let result = match &self.presented {
            Presented::Absent => None,
            Presented::Refused(f) => Some(Err(*f)),
            Presented::Token(token) => {
                let call = self.call_binding(bundle);
                Some(bundle.verify_approval(self.decision.rule_id(), token, &call, self.now))
            }
        };
        match result {
            None => {
                self.step_up = Some(self.step_up_info(config, bundle));
                self.finish(config, Some(bundle), then)
            }
            Some(Err(f)) => {
                self.approval_counter = Some(Err(f.code()));
                self.step_up = Some(self.step_up_info(config, bundle));
                self.decision = self.decision.clone().with_approval(Err(f));
                self.finish(config, Some(bundle), then)
            }
            Some(Ok(a)) => {
                let claim = Claim::UsedApproval { id: used_id(&a), expires_at: a.expires_at, now: self.now };
                self.state = State::Claiming { approval: a, then };
                Step::wait(Next::Claim(claim))
            }
        }
    }

    fn call_binding<'a>(&'a self, bundle: &'a CompiledBundle) -> CallBinding<'a> {
        let agent = self.agent();
        CallBinding {
            agent: agent.map_or("", |a| a.id.as_str()),
            task: agent.and_then(|a| a.task.as_ref()).map(|t| t.id.as_str()),
            tool: self.tool.map_or("", |t| bundle.tool_id(t)),
            arguments_digest: self.gov.arguments_digest.as_deref(),
            head_digest: self.head_digest.as_deref(),
        }
    }

    /// What the step-up reply tells the approval service.
    fn step_up_info(&self, config: &GateConfig, bundle: &CompiledBundle) -> StepUpInfo {
        let call = self.call_binding(bundle);
        let rule = self.decision.rule_id();
        let requirement = bundle.step_up_requirement(rule);
        StepUpInfo {
            agent: Some(call.agent.to_string()),
            task: call.task.map(str::to_string),
            tool: Some(call.tool.to_string()),
            arguments_digest: call.arguments_digest.map(str::to_string),
            head_digest: call.head_digest.map(str::to_string),
            digest_of: self.digest_of,
            binding: self.binding.clone().filter(|_| self.digest_of == "request"),
            decision_id: self.decision_id.clone(),
            rule: rule.to_string(),
            approvers: requirement
                .as_ref()
                .map(|r| {
                    r.approvers
                        .iter()
                        .map(|(id, iss)| ApproverRef { id: id.to_string(), iss: iss.to_string() })
                        .collect()
                })
                .unwrap_or_default(),
            max_age_seconds: requirement.map_or(0, |r| r.max_age_seconds),
            header: config.approval_header.clone(),
        }
    }
}

/// The identity from the token headers: the agent token, then the Transaction Token's task context.
fn verify_tokens(
    bundle: &CompiledBundle,
    config: &GateConfig,
    view: &RequestView<'_>,
    peer: &Peer<'_>,
    mut cache: Option<&mut TokenCache>,
    now: i64,
) -> Identity {
    let value = match view.token {
        TokenHeader::Absent => return Identity::Missing,
        TokenHeader::Repeated => return Identity::Invalid(TokenFailure::Ambiguous),
        TokenHeader::One(value) => value,
    };
    let Ok(value) = std::str::from_utf8(value) else { return Identity::Invalid(TokenFailure::Malformed) };
    let token = match token_in(value, &config.token_header) {
        Ok(token) => token,
        Err(failure) => return Identity::Invalid(failure),
    };
    let verified = match cache.as_deref_mut() {
        Some(c) => c.verify_with_peer(bundle, token, peer, now),
        None => identity::verify_with_peer(&bundle.issuers, token, peer, now),
    };
    match verified {
        Ok(agent) => with_txn_token(bundle, config, view.txn_token, agent, cache, now),
        Err(failure) => Identity::Invalid(failure),
    }
}

/// Adds the Transaction Token's task context to a verified agent. A Transaction Token that is repeated, unreadable
/// or refused makes the whole identity invalid (`txn_token_*`): task context is never silently dropped.
fn with_txn_token(
    bundle: &CompiledBundle,
    config: &GateConfig,
    header: TokenHeader<'_>,
    mut agent: Agent,
    cache: Option<&mut TokenCache>,
    now: i64,
) -> Identity {
    let invalid = |f: TxnFailure| Identity::Invalid(TokenFailure::Txn(f));
    let value = match header {
        TokenHeader::Absent => return Identity::Verified(agent),
        TokenHeader::Repeated => return invalid(TxnFailure::Ambiguous),
        TokenHeader::One(value) => value,
    };
    let Ok(value) = std::str::from_utf8(value) else { return invalid(TxnFailure::Malformed) };
    let Ok(token) = token_in(value, &config.txn_token_header) else { return invalid(TxnFailure::Malformed) };
    let task = match cache {
        Some(c) => c.verify_txn_token(bundle, token, &agent, now),
        None => identity::verify_txn_token(&bundle.issuers, token, &agent, now),
    };
    match task {
        Ok(task) => {
            agent.task = Some(task);
            Identity::Verified(agent)
        }
        Err(failure) => Identity::Invalid(failure),
    }
}

/// The requests a JSON-RPC error answers, from a body: each request's `id` as the strict parser read it, else as far
/// as it can still be read ([`mcp::readable_ids`]; an unreadable one answers with `null`), else one error with `null`.
fn requests_in(bytes: &[u8], batches: bool) -> RpcRequests {
    match mcp::parse_body(bytes, batches) {
        Ok(body) => {
            RpcRequests::Ids { ids: body.messages.into_iter().filter_map(|m| m.id).collect(), batch: body.batch }
        }
        Err(_) => match mcp::readable_ids(bytes) {
            Some((ids, batch)) => RpcRequests::Ids { ids: ids.into_iter().flatten().collect(), batch },
            None => RpcRequests::Unread,
        },
    }
}

/// Why the headers of an MCP `POST` are refused before the body is read.
fn check_mcp_headers(view: &RequestView<'_>) -> Result<(), RequestRefusal> {
    match view.content_type {
        Field::Present(ct) if is_json(ct) => {}
        Field::Unreadable => return Err(RequestRefusal::McpAmbiguousHeader),
        Field::Present(_) | Field::Missing => return Err(RequestRefusal::McpContentType),
    }
    if view.mcp_method == Field::Unreadable || view.mcp_name == Field::Unreadable {
        return Err(RequestRefusal::McpAmbiguousHeader);
    }
    // The body is decided as the bytes that are forwarded: an encoded one would be decided as raw bytes.
    if view.encoded_body() {
        return Err(RequestRefusal::McpContentEncoding);
    }
    if view.mcp_method == Field::Missing && view.mcp_name != Field::Missing {
        return Err(RequestRefusal::McpHeaderMismatch);
    }
    Ok(())
}

/// Whether `Mcp-Method` / `Mcp-Name`, when sent, say exactly what the body says. With `Mcp-Method`, the body must be
/// one message with that method; `Mcp-Name` must be present exactly when the message has a name (tool, prompt) or
/// URI (resource), and equal it.
fn headers_agree(method: Option<&str>, name: Option<&str>, body: &McpBody) -> bool {
    let Some(method) = method else { return name.is_none() };
    let [msg] = body.messages.as_slice() else { return false };
    !body.batch && msg.method() == method && name == msg.name()
}

/// Visible ASCII and spaces only: a value that cannot smuggle a header line or confuse the upstream's parser.
fn header_safe(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|c| (0x20..0x7f).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn header_checks() {
        let check = |pairs: &[(&str, &str)]| {
            let h = hdrs(pairs);
            check_mcp_headers(&RequestView::scan(&h, &GateConfig::new("prod"))).map_err(RequestRefusal::code)
        };
        assert_eq!(check(&[("content-type", "application/json")]), Ok(()));
        assert_eq!(check(&[("content-type", "text/plain")]), Err("mcp_content_type"));
        assert_eq!(check(&[]), Err("mcp_content_type"));
        assert_eq!(
            check(&[("content-type", "application/json"), ("content-type", "text/plain")]),
            Err("mcp_ambiguous_header")
        );
        assert_eq!(
            check(&[("content-type", "application/json"), ("mcp-method", "a"), ("mcp-method", "b")]),
            Err("mcp_ambiguous_header")
        );
        assert_eq!(check(&[("content-type", "application/json"), ("mcp-name", "x")]), Err("mcp_header_mismatch"));
    }

    #[test]
    fn headers_must_agree_with_the_body() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund"}}"#;
        let body = crate::mcp::parse_body(call, true).unwrap();
        let agree = |pairs: &[(&str, &str)]| {
            let h = hdrs(pairs);
            let v = RequestView::scan(&h, &GateConfig::new("prod"));
            if headers_agree(v.mcp_method.value(), v.mcp_name.value(), &body) {
                Ok(())
            } else {
                Err("mcp_header_mismatch")
            }
        };
        assert_eq!(agree(&[]), Ok(()));
        assert_eq!(agree(&[("mcp-method", "tools/call"), ("mcp-name", "refund")]), Ok(()));
        assert_eq!(agree(&[("mcp-method", "tools/call"), ("mcp-name", "lookup")]), Err("mcp_header_mismatch"));
        assert_eq!(agree(&[("mcp-method", "tools/call")]), Err("mcp_header_mismatch"));
        assert_eq!(agree(&[("mcp-method", "Tools/Call"), ("mcp-name", "refund")]), Err("mcp_header_mismatch"));
        assert_eq!(agree(&[("mcp-method", "ping")]), Err("mcp_header_mismatch"));
        let batch = crate::mcp::parse_body(&[b"[".as_slice(), call, b"]"].concat(), true).unwrap();
        assert!(!headers_agree(Some("tools/call"), Some("refund"), &batch));
    }
}
