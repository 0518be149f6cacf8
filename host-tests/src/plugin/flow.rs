//! HTTP streams as Envoy runs them through one Wasm filter, on the worker that owns the stream: request and response
//! flows with pause/resume, body buffering with a limit, deferred local replies that pass through the filter's
//! response callbacks, and the `on_log`/`on_done`/`on_delete` ending; the step-by-step stream API of a worker.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::Worker;
use crate::abi::{header_value, Action, Headers};
use crate::state::{Deferred, Flow, StreamData, StreamInfo};
use crate::stream::{
    body_pieces, next_id, CallbackRecord, Exchange, FlowState, ForwardedRequest, HttpRequest, LocalReply, Outcome,
    StreamId, StreamSnapshot, Upstream, UpstreamResponse,
};

const CB_NAMES: [[&str; 3]; 2] = [
    ["proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers"],
    ["proxy_on_response_headers", "proxy_on_response_body", "proxy_on_response_trailers"],
];

/// The flow machinery, run on the worker that owns the stream.
impl Worker {
    pub(crate) fn st(&mut self, ctx: u32) -> Option<&mut StreamData> {
        self.store.data_mut().streams.get_mut(&ctx)
    }

    fn allow_stop_iteration(&self) -> bool {
        self.settings.allow_on_headers_stop_iteration
    }

    /// Calls a header/body/trailer callback; a trap fails the stream per the failure policy.
    fn filter_cb(&mut self, ctx: u32, d: usize, kind: usize, a: i32, b: i32) -> Action {
        let was_failed = self.failed.is_some();
        let Some(st) = self.st(ctx) else {
            return Action::Continue;
        };
        // A stream that meets a VM failed since it started fails as it would had its own callback trapped:
        // 503 (fail closed), or the filter is skipped from now on (fail open). A local reply already under way
        // (that 503, or one sent before the trap) passes the failed VM.
        if st.bypass || (was_failed && st.local_reply.is_some()) {
            return Action::Continue;
        }
        let name = CB_NAMES[d][kind];
        let c = ctx as i32;
        let r = if was_failed {
            Err(())
        } else {
            match (d, kind) {
                (0, 0) => self.call(name, |f| f.request_headers.as_ref(), ctx, (c, a, b)),
                (0, 1) => self.call(name, |f| f.request_body.as_ref(), ctx, (c, a, b)),
                (0, _) => self.call(name, |f| f.request_trailers.as_ref(), ctx, (c, a)),
                (_, 0) => self.call(name, |f| f.response_headers.as_ref(), ctx, (c, a, b)),
                (_, 1) => self.call(name, |f| f.response_body.as_ref(), ctx, (c, a, b)),
                (_, _) => self.call(name, |f| f.response_trailers.as_ref(), ctx, (c, a)),
            }
        };
        let fail_open = self.settings.fail_open;
        let Some(st) = self.st(ctx) else {
            return Action::Continue;
        };
        match r {
            Ok(v) => {
                let action = v.map(Action::from_raw).unwrap_or(Action::Continue);
                st.callbacks.push(CallbackRecord { callback: name, action: Some(action) });
                action
            }
            Err(()) => {
                if !was_failed {
                    st.callbacks.push(CallbackRecord { callback: name, action: None });
                    st.trapped = true;
                }
                if fail_open {
                    st.bypass = true;
                    Action::Continue
                } else {
                    self.store.data_mut().deferred.push(Deferred::LocalReply {
                        context: ctx,
                        reply: LocalReply::host(503, "", "wasm_fail_stream"),
                    });
                    Action::Pause
                }
            }
        }
    }

    /// After a local reply or close in the same callback, any return value counts as stop.
    fn stop_override(&self, ctx: u32, action: Action) -> Action {
        let stop = self.store.data().deferred.iter().any(
            |a| matches!(a, Deferred::LocalReply { context, .. } | Deferred::Close { context } if *context == ctx),
        );
        if stop {
            Action::Pause
        } else {
            action
        }
    }

    /// Runs the actions hostcalls deferred until the guest returned.
    pub(crate) fn run_deferred(&mut self) {
        loop {
            let actions = std::mem::take(&mut self.store.data_mut().deferred);
            if actions.is_empty() {
                return;
            }
            for a in actions {
                match a {
                    Deferred::Continue { context, response } => self.resume(context, response as usize),
                    Deferred::Close { context } => {
                        if let Some(st) = self.st(context) {
                            if st.reset.is_none() {
                                st.reset = Some("wasm_close_stream".into());
                            }
                        }
                    }
                    Deferred::LocalReply { context, reply } => self.apply_local_reply(context, reply),
                }
            }
        }
    }

    fn release_headers(&mut self, ctx: u32, d: usize) {
        if let Some(st) = self.st(ctx) {
            if !st.flows[d].headers_forwarded {
                st.flows[d].headers_forwarded = true;
                st.flows[d].forwarded_headers = Some(st.maps[2 * d].clone());
                st.live[2 * d] = false;
            }
        }
    }

    fn release_body(&mut self, ctx: u32, d: usize) {
        if let Some(st) = self.st(ctx) {
            let body = std::mem::take(&mut st.bodies[d]);
            st.flows[d].forwarded_body.extend(body);
            st.body_live[d] = false;
        }
    }

    fn complete(&mut self, ctx: u32, d: usize) {
        self.release_headers(ctx, d);
        self.release_body(ctx, d);
        if let Some(st) = self.st(ctx) {
            st.flows[d].forwarded_trailers = st.maps[2 * d + 1].clone();
            st.live[2 * d + 1] = false;
            st.flows[d].state = FlowState::Done;
            st.flows[d].complete = true;
        }
    }

    /// Headers arrive for direction `d` (0 request, 1 response).
    pub(crate) fn flow_headers(&mut self, ctx: u32, d: usize, eos: bool) {
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || st.flows[d].state != FlowState::NotStarted {
            return;
        }
        st.flows[d].end_received = eos;
        st.flows[d].state = FlowState::Streaming;
        st.live[2 * d] = true;
        let n = st.maps[2 * d].len() as i32;
        if d == 0 && st.fail_closed {
            let reply = LocalReply::host(503, "", "wasm_fail_stream");
            self.apply_local_reply(ctx, reply);
            return;
        }
        let action = self.filter_cb(ctx, d, 0, n, eos as i32);
        let action = self.stop_override(ctx, action);
        match action {
            Action::Continue => self.continue_after_headers(ctx, d),
            Action::Pause => {
                if let Some(st) = self.st(ctx) {
                    st.flows[d].state = FlowState::HeadersPaused;
                }
            }
        }
        self.run_deferred();
    }

    fn continue_after_headers(&mut self, ctx: u32, d: usize) {
        self.release_headers(ctx, d);
        let Some(st) = self.st(ctx) else { return };
        st.flows[d].state = FlowState::Streaming;
        let f = &mut st.flows[d];
        if !f.held.is_empty() || f.held_end {
            let data = std::mem::take(&mut f.held);
            let end = std::mem::take(&mut f.held_end);
            self.deliver_data(ctx, d, data, end);
        }
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) {
            return;
        }
        if let Some(t) = st.flows[d].held_trailers.take() {
            self.deliver_trailers(ctx, d, t);
        } else if st.flows[d].end_received && st.flows[d].state == FlowState::Streaming {
            self.complete(ctx, d);
        }
    }

    /// A body chunk arrives.
    pub(crate) fn flow_data(&mut self, ctx: u32, d: usize, chunk: Vec<u8>, eos: bool) {
        let allow = self.allow_stop_iteration();
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || matches!(st.flows[d].state, FlowState::NotStarted | FlowState::Done) {
            return;
        }
        let f = &mut st.flows[d];
        f.end_received |= eos;
        if f.state == FlowState::HeadersPaused && !allow {
            f.held.extend(chunk);
            f.held_end |= eos;
            return;
        }
        self.deliver_data(ctx, d, chunk, eos);
    }

    fn deliver_data(&mut self, ctx: u32, d: usize, chunk: Vec<u8>, eos: bool) {
        let limit =
            if d == 0 { self.settings.request_body_buffer_limit } else { self.settings.response_body_buffer_limit };
        let Some(st) = self.st(ctx) else { return };
        if st.flows[d].state == FlowState::BodyPaused && st.bodies[d].len() + chunk.len() > limit {
            let reply = if d == 0 {
                LocalReply::host(413, "Payload Too Large", "request_payload_too_large")
            } else {
                LocalReply::host(500, "Internal Server Error", "response_payload_too_large")
            };
            self.apply_local_reply(ctx, reply);
            return;
        }
        st.bodies[d].extend(chunk);
        st.body_live[d] = true;
        if eos {
            st.live[2 * d + 1] = true;
        }
        let size = st.bodies[d].len() as i32;
        let action = self.filter_cb(ctx, d, 1, size, eos as i32);
        let action = self.stop_override(ctx, action);
        match action {
            Action::Continue => {
                if eos {
                    self.complete(ctx, d);
                } else {
                    self.release_headers(ctx, d);
                    self.release_body(ctx, d);
                    if let Some(st) = self.st(ctx) {
                        st.flows[d].state = FlowState::Streaming;
                    }
                }
            }
            Action::Pause => {
                if let Some(st) = self.st(ctx) {
                    st.flows[d].state = FlowState::BodyPaused;
                }
            }
        }
        self.run_deferred();
    }

    /// Trailers arrive (the end of the direction).
    pub(crate) fn flow_trailers(&mut self, ctx: u32, d: usize, trailers: Headers) {
        let allow = self.allow_stop_iteration();
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || matches!(st.flows[d].state, FlowState::NotStarted | FlowState::Done) {
            return;
        }
        let trailers: Headers = trailers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let f = &mut st.flows[d];
        f.end_received = true;
        if f.state == FlowState::HeadersPaused && !allow {
            f.held_trailers = Some(trailers);
            return;
        }
        self.deliver_trailers(ctx, d, trailers);
    }

    fn deliver_trailers(&mut self, ctx: u32, d: usize, trailers: Headers) {
        let Some(st) = self.st(ctx) else { return };
        st.maps[2 * d + 1] = trailers;
        st.live[2 * d + 1] = true;
        let n = st.maps[2 * d + 1].len() as i32;
        let action = self.filter_cb(ctx, d, 2, n, 0);
        let action = self.stop_override(ctx, action);
        match action {
            Action::Continue => self.complete(ctx, d),
            Action::Pause => {
                if let Some(st) = self.st(ctx) {
                    st.flows[d].state = FlowState::TrailersPaused;
                }
            }
        }
        self.run_deferred();
    }

    /// `proxy_continue_stream` for direction `d`, run after the guest returned.
    pub(crate) fn resume(&mut self, ctx: u32, d: usize) {
        let Some(st) = self.st(ctx) else { return };
        if st.terminated(d) || st.flows[d].complete {
            return;
        }
        match st.flows[d].state {
            FlowState::HeadersPaused => self.continue_after_headers(ctx, d),
            FlowState::BodyPaused => {
                self.release_headers(ctx, d);
                self.release_body(ctx, d);
                let Some(st) = self.st(ctx) else { return };
                st.flows[d].state = FlowState::Streaming;
                if let Some(t) = st.flows[d].held_trailers.take() {
                    self.deliver_trailers(ctx, d, t);
                } else if st.flows[d].end_received {
                    self.complete(ctx, d);
                }
            }
            FlowState::TrailersPaused => self.complete(ctx, d),
            _ => {}
        }
    }

    /// Sends a local reply (deferred from `proxy_send_local_response`, or made by the host).
    pub(crate) fn apply_local_reply(&mut self, ctx: u32, reply: LocalReply) {
        let Some(st) = self.st(ctx) else { return };
        if st.local_reply.is_some() || st.reset.is_some() {
            return;
        }
        let headers = reply.header_map();
        let body = reply.body.clone();
        st.local_reply = Some(reply);
        st.flows[0].state = FlowState::Done;
        st.live[0] = false;
        st.live[1] = false;
        st.body_live[0] = false;
        if st.flows[1].headers_forwarded {
            st.reset = Some("local reply after response headers were sent".into());
            return;
        }
        if st.flows[1].state != FlowState::NotStarted {
            // The response is in progress in this filter: the local reply replaces it as is.
            st.flows[1] = Flow {
                state: FlowState::Done,
                headers_forwarded: true,
                end_received: true,
                forwarded_headers: Some(headers),
                forwarded_body: body,
                complete: true,
                ..Flow::default()
            };
            st.live[2] = false;
            st.live[3] = false;
            st.body_live[1] = false;
            return;
        }
        st.maps[2] = headers;
        self.flow_headers(ctx, 1, body.is_empty());
        if !body.is_empty() {
            self.flow_data(ctx, 1, body, true);
        }
    }

    // ---- the public stream API of a worker ----

    /// Creates a stream context (`proxy_on_context_create(id, root)`); nothing is sent yet.
    pub fn open_stream(&mut self, req: &HttpRequest) -> StreamId {
        self.open_stream_with(req, req.header_map())
    }

    fn open_stream_with(&mut self, req: &HttpRequest, header_map: Headers) -> StreamId {
        let s = self.store.data_mut();
        let ctx = s.next_context;
        s.next_context += 1;
        let info = StreamInfo {
            source_address: req.source_address,
            destination_address: req.destination_address,
            tls: req.tls.clone(),
            metadata: req.metadata.clone(),
            protocol: req.protocol.clone(),
            start_time: s.clock.now(),
            connection_id: req.connection_id.unwrap_or_else(next_id),
        };
        let seq = s.log_seq.load(Ordering::Relaxed);
        let mut data = StreamData::new(info, header_map, seq);
        if self.failed.is_some() {
            if self.settings.fail_open {
                data.bypass = true;
            } else {
                data.fail_closed = true;
            }
        }
        let root = s.root_context;
        s.streams.insert(ctx, data);
        if self.failed.is_none() {
            if self
                .call("proxy_on_context_create", |f| f.context_create.as_ref(), ctx, (ctx as i32, root as i32))
                .is_err()
            {
                let fail_open = self.settings.fail_open;
                if let Some(st) = self.st(ctx) {
                    st.trapped = true;
                    if fail_open {
                        st.bypass = true;
                    } else {
                        st.fail_closed = true;
                    }
                }
            } else if let Some(st) = self.st(ctx) {
                st.created = true;
            }
        }
        StreamId { worker: self.index, context_id: ctx }
    }

    pub fn request_headers(&mut self, ctx: u32, end_of_stream: bool) {
        self.flow_headers(ctx, 0, end_of_stream);
    }

    pub fn request_body(&mut self, ctx: u32, chunk: &[u8], end_of_stream: bool) {
        self.flow_data(ctx, 0, chunk.to_vec(), end_of_stream);
    }

    pub fn request_trailers(&mut self, ctx: u32, trailers: Headers) {
        self.flow_trailers(ctx, 0, trailers);
    }

    /// Upstream response headers (`:status` is put first; keys lowercased).
    pub fn response_headers(&mut self, ctx: u32, status: u16, headers: &Headers, eos: bool) {
        self.response_headers_owned(ctx, status, headers.clone(), eos);
    }

    fn response_headers_owned(&mut self, ctx: u32, status: u16, headers: Headers, eos: bool) {
        let Some(st) = self.st(ctx) else { return };
        if st.local_reply.is_some() || st.reset.is_some() {
            return;
        }
        let mut map: Headers = Vec::with_capacity(headers.len() + 1);
        map.push((":status".into(), status.to_string()));
        map.extend(headers.into_iter().map(|(mut k, v)| {
            k.make_ascii_lowercase();
            (k, v)
        }));
        st.maps[2] = map;
        self.flow_headers(ctx, 1, eos);
    }

    pub fn response_body(&mut self, ctx: u32, chunk: &[u8], end_of_stream: bool) {
        self.flow_data(ctx, 1, chunk.to_vec(), end_of_stream);
    }

    pub fn response_trailers(&mut self, ctx: u32, trailers: Headers) {
        self.flow_trailers(ctx, 1, trailers);
    }

    pub fn stream_snapshot(&self, ctx: u32) -> Option<StreamSnapshot> {
        self.store.data().streams.get(&ctx).map(StreamData::snapshot)
    }

    /// Feeds an upstream response through the response flow.
    fn feed_response(&mut self, ctx: u32, resp: UpstreamResponse) {
        let UpstreamResponse { status, mut headers, body, body_chunks, trailers } = resp;
        let has = |h: &Headers, k: &str| h.iter().any(|(hk, _)| hk.eq_ignore_ascii_case(k));
        if !body.is_empty() && !has(&headers, "content-length") && !has(&headers, "transfer-encoding") {
            headers.push(("content-length".into(), body.len().to_string()));
        }
        let eos = body.is_empty() && trailers.is_empty();
        self.response_headers_owned(ctx, status, headers, eos);
        let pieces = match body_chunks {
            Some(sizes) => body_pieces(&body, Some(&sizes)),
            None if body.is_empty() => Vec::new(),
            None => vec![body],
        };
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            self.flow_data(ctx, 1, p, i + 1 == n && trailers.is_empty());
        }
        if !trailers.is_empty() {
            self.response_trailers(ctx, trailers);
        }
    }

    /// Runs a whole request through the filter and the upstream; see [`crate::Plugin::send`].
    pub fn send(&mut self, mut req: HttpRequest, upstream: &mut dyn Upstream) -> Exchange {
        let map = req.take_parts().header_map();
        let id = self.open_stream_with(&req, map);
        let ctx = id.context_id;
        let body = std::mem::take(&mut req.body);
        let pieces = match req.body_chunks.take() {
            Some(sizes) => body_pieces(&body, Some(&sizes)),
            None if body.is_empty() => Vec::new(),
            None => vec![body],
        };
        let eos = pieces.is_empty() && req.trailers.is_empty();
        self.request_headers(ctx, eos);
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            self.flow_data(ctx, 0, p, i + 1 == n && req.trailers.is_empty());
        }
        if !req.trailers.is_empty() {
            self.request_trailers(ctx, req.trailers);
        }
        self.drive(ctx, upstream);
        self.finish_stream(ctx)
    }

    /// Moves a stream forward until it completes or cannot progress: calls the upstream once the
    /// request is through, and waits (real time) for pending http calls of this VM: on a real clock until the
    /// last of their own timeouts has passed (each ends as a response or a 504, as in Envoy), and at least
    /// `PluginConfig::send_wait` (the only bound for a call without a timeout, or on a manual clock, whose
    /// timeouts pass only when the test advances it).
    fn drive(&mut self, ctx: u32, upstream: &mut dyn Upstream) {
        let wait_until = std::time::Instant::now() + self.send_wait.max(self.until_call_deadlines());
        loop {
            let Some(st) = self.st(ctx) else { return };
            if st.reset.is_some() || st.flows[1].complete {
                return;
            }
            if st.local_reply.is_none() && st.flows[0].complete && !st.upstream_called {
                st.upstream_called = true;
                let f = &mut st.flows[0];
                let fwd = f.forwarded_headers.take().map(|headers| ForwardedRequest {
                    headers,
                    body: std::mem::take(&mut f.forwarded_body),
                    trailers: std::mem::take(&mut f.forwarded_trailers),
                    complete: f.complete,
                });
                let resp = match &fwd {
                    Some(r) => upstream.respond(r),
                    None => upstream.respond(&ForwardedRequest::default()),
                };
                st.upstream_request = fwd;
                self.feed_response(ctx, resp);
                continue;
            }
            if self.store.data().http_calls.is_empty() && !self.has_events() {
                return;
            }
            let now = std::time::Instant::now();
            if now >= wait_until {
                return;
            }
            self.wait_and_deliver(wait_until - now);
        }
    }

    /// On a real clock, how long until the last timeout of this VM's pending http calls has passed (plus a
    /// moment for its 504 to be delivered); zero on a manual clock or without timed calls.
    fn until_call_deadlines(&self) -> std::time::Duration {
        let s = self.store.data();
        if s.clock.is_manual() {
            return std::time::Duration::ZERO;
        }
        let now = s.clock.monotonic();
        s.http_calls
            .values()
            .filter_map(|c| c.deadline)
            .max()
            .map(|d| d.saturating_sub(now) + std::time::Duration::from_millis(100))
            .unwrap_or_default()
    }

    /// Ends a stream: `on_log`, `on_done`, `on_delete`, then reports what happened.
    pub fn finish_stream(&mut self, ctx: u32) -> Exchange {
        let created = self.st(ctx).map(|s| s.created).unwrap_or(false);
        if created && self.failed.is_none() {
            if let Some(st) = self.st(ctx) {
                st.access_log = true;
                st.live = [true, false, st.flows[1].state != FlowState::NotStarted, !st.maps[3].is_empty()];
            }
            let _ = self.call("proxy_on_log", |f| f.log.as_ref(), ctx, ctx as i32);
            if let Some(st) = self.st(ctx) {
                st.access_log = false;
                st.live = [false; 4];
            }
            let _ = self.call("proxy_on_done", |f| f.done.as_ref(), ctx, ctx as i32);
            let _ = self.call("proxy_on_delete", |f| f.delete.as_ref(), ctx, ctx as i32);
            // Actions deferred from the end callbacks have no stream left to act on.
            self.store.data_mut().deferred.retain(|a| {
                !matches!(a, Deferred::Continue { context, .. } | Deferred::Close { context } | Deferred::LocalReply { context, .. } if *context == ctx)
            });
        }
        let index = self.index;
        let s = self.store.data_mut();
        let st = s.streams.remove(&ctx);
        let Some(st) = st else {
            return Exchange {
                outcome: Outcome::Reset { details: "unknown stream".into() },
                worker: index,
                context_id: ctx,
                status: None,
                headers: Vec::new(),
                body: Vec::new(),
                trailers: Vec::new(),
                local_reply: None,
                forwarded: None,
                upstream_called: false,
                filter_state: BTreeMap::new(),
                logs: Vec::new(),
                callbacks: Vec::new(),
                trapped: false,
                filter_skipped: false,
            };
        };
        let logs = s.logs.iter().filter(|l| l.seq >= st.log_seq_start).cloned().collect();
        // The stream is gone from the VM: its parts move into the exchange.
        let mut st = st;
        let outcome = match st.reset.take() {
            Some(details) => Outcome::Reset { details },
            None if st.flows[1].complete => Outcome::Completed,
            None => Outcome::Hung { at: st.stop_point() },
        };
        let forwarded = match st.upstream_request.take() {
            Some(f) => Some(f),
            None => {
                let f = &mut st.flows[0];
                f.forwarded_headers.take().map(|headers| ForwardedRequest {
                    headers,
                    body: std::mem::take(&mut f.forwarded_body),
                    trailers: std::mem::take(&mut f.forwarded_trailers),
                    complete: f.complete,
                })
            }
        };
        let resp = &mut st.flows[1];
        let mut sent = resp.forwarded_headers.take().unwrap_or_default();
        let status = header_value(&sent, ":status").and_then(|v| v.parse().ok());
        sent.retain(|(k, _)| k != ":status");
        Exchange {
            outcome,
            worker: index,
            context_id: ctx,
            status,
            headers: sent,
            body: std::mem::take(&mut resp.forwarded_body),
            trailers: std::mem::take(&mut resp.forwarded_trailers),
            local_reply: st.local_reply.take(),
            forwarded,
            upstream_called: st.upstream_called,
            filter_state: std::mem::take(&mut st.filter_state),
            logs,
            callbacks: std::mem::take(&mut st.callbacks),
            trapped: st.trapped,
            filter_skipped: st.bypass,
        }
    }
}
