//! The HTTP step-up flow: a plain HTTP request with a body that a step-up rule matched waits for its body, because
//! the approval (and the step-up reply) bind to the body's SHA-256.
//!
//! Header phase (enforce mode only; in shadow mode the request goes on and only a body-less call has its approval
//! checked): headers are prepared for the upstream and held (`Pause`, with `allow_on_headers_stop_iteration`) or
//! continue (without: Envoy would withhold the body from a filter paused at headers), exactly as for MCP requests.
//! Body phase: chunks are held up to `max_body_bytes` (over it: 413 `body_too_large`); at the end the digest is
//! taken, the approval checked and claimed, and the call goes on or gets the step-up reply.

use std::rc::Rc;

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Action;
use warden_core::approval::body_digest;
use warden_core::compile::ToolIdx;
use warden_core::facts::Agent;

use super::{unix_secs, Shared, StepUpCheck, WardenHttp};
use crate::active::Active;
use crate::approval::Presented;
use crate::evaluate::{Evaluation, Governance, RequestHeaders, Verdict};
use crate::mcp;

/// An HTTP step-up call waiting for its body.
pub(crate) struct StepUpFlow {
    active: Rc<Active>,
    agent: Agent,
    presented: Presented,
    decision_id: String,
    start_ns: u64,
    verdict: Verdict,
    tool_idx: Option<ToolIdx>,
    method: String,
    host: String,
    path: String,
    rewrite_path: Option<String>,
    gov: Governance,
}

impl WardenHttp {
    /// Holds a step-up call until its body is complete (see the module comment).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hold_for_body(
        &mut self,
        shared: &Shared,
        request: &RequestHeaders<'_>,
        ev: Evaluation<'_>,
        active: Rc<Active>,
        agent: Agent,
        presented: Presented,
        decision_id: String,
        start_ns: u64,
    ) -> Action {
        self.prepare_upstream(shared, &request.reserved, ev.rewrite_path.as_deref(), &decision_id, Some(&agent));
        self.step_up = Some(StepUpFlow {
            active,
            agent,
            presented,
            decision_id,
            start_ns,
            verdict: ev.verdict,
            tool_idx: ev.tool_idx,
            method: ev.method.to_string(),
            host: ev.host.to_string(),
            path: ev.path,
            rewrite_path: ev.rewrite_path,
            gov: ev.gov,
        });
        if shared.config.allow_on_headers_stop_iteration {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// A body chunk of a held step-up call: buffer until the end, then decide.
    pub(super) fn step_up_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let limit = usize::try_from(shared.config.max_body_bytes).unwrap_or(usize::MAX);
        if body_size > limit {
            let Some(flow) = self.step_up.take() else { return Action::Continue };
            let v = mcp::refusal(413, "body_too_large", Some(flow.active.bundle.revision));
            return self.finish_step_up(&shared, flow, Some(v), None);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let Some(flow) = self.step_up.take() else { return Action::Continue };
        // A body the host does not hand over cannot be bound to: refused, never checked as if it were empty.
        let body = if body_size == 0 { Some(Vec::new()) } else { self.get_http_request_body(0, body_size) };
        self.finish_step_up(&shared, flow, None, body.as_deref())
    }

    /// Trailers after a held body: refused (the approval binds to a complete body, and the end of the body is only
    /// known here when trailers follow it).
    pub(super) fn step_up_trailers(&mut self) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some(flow) = self.step_up.take() else { return Action::Continue };
        let v = mcp::refusal(400, "step_up_trailers", Some(flow.active.bundle.revision));
        self.finish_step_up(&shared, flow, Some(v), None)
    }

    /// Decides a held call: `refusal` overrides; otherwise the approval is checked against the body's digest (no
    /// body: it could not be read, refused).
    fn finish_step_up(
        &mut self,
        shared: &Shared,
        mut flow: StepUpFlow,
        refusal: Option<Verdict>,
        body: Option<&[u8]>,
    ) -> Action {
        let bundle = &flow.active.bundle;
        let tool = flow.tool_idx.map(|t| bundle.tool_id(t));
        let mut step_up = None;
        let verdict = match (refusal, body) {
            (Some(v), _) => v,
            (None, None) => mcp::refusal(400, "body_unreadable", Some(bundle.revision)),
            (None, Some(body)) => {
                let check = StepUpCheck {
                    bundle,
                    agent: &flow.agent,
                    tool,
                    digest: body_digest(body),
                    digest_of: "body",
                    presented: &flow.presented,
                    decision_id: &flow.decision_id,
                    now: unix_secs(flow.start_ns),
                };
                let (v, info) = self.settle_step_up(shared, flow.verdict.clone(), check, &mut flow.gov);
                step_up = info;
                v
            }
        };
        let ev = Evaluation {
            verdict,
            agent: Some(flow.agent.clone()),
            tool,
            method: &flow.method,
            host: &flow.host,
            path: flow.path.clone(),
            rewrite_path: flow.rewrite_path.clone(),
            tool_idx: flow.tool_idx,
            gov: flow.gov.clone(),
        };
        // The upstream headers were prepared at the header phase.
        self.conclude_prepared(shared, &ev, &flow.decision_id, flow.start_ns, step_up.as_ref())
    }
}
