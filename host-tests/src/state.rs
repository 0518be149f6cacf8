//! The host state in a VM's wasmtime `Store` that the hostcalls read and write and the event loop drives: per VM
//! (`VmState`: contexts, tick, pending http calls, metric ids, deferred actions, logs, import counts) and per
//! stream (`StreamData`: header maps, bodies, both flows, the local reply, filter state).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wasmtime::{Func, Memory, StoreLimits, TypedFunc};

use crate::abi::{Headers, LogLevel, MetricType};
use crate::clock::Clock;
use crate::http_call::HttpResponse;
use crate::log::LogEntry;
use crate::shared::SharedState;
use crate::stream::{CallbackRecord, FlowState, ForwardedRequest, LocalReply, StopPoint, StreamSnapshot, TlsInfo};

/// Hashes the small integer keys of a VM's tables (context ids, http-call tokens, metric ids) with one
/// multiplication: the std default (SipHash) costs more than the lookup itself, and the stream table is looked up
/// dozens of times per request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A table keyed by a VM-local integer id.
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Plugin-level settings every VM reads.
#[derive(Debug)]
pub(crate) struct Settings {
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub plugin_configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub environment: Vec<(String, String)>,
    pub clusters: BTreeMap<String, SocketAddr>,
    pub log_level: LogLevel,
    pub allow_on_headers_stop_iteration: bool,
    pub fail_open: bool,
    pub request_body_buffer_limit: usize,
    pub response_body_buffer_limit: usize,
}

/// An action a hostcall asked for, run after the current guest call returns.
#[derive(Clone, Debug)]
pub(crate) enum Deferred {
    Continue { context: u32, response: bool },
    Close { context: u32 },
    LocalReply { context: u32, reply: LocalReply },
}

#[derive(Clone, Debug)]
pub(crate) struct TickTimer {
    pub period: Duration,
    /// Due time on the clock's monotonic scale.
    pub due: Duration,
}

#[derive(Clone, Debug)]
pub(crate) struct PendingCall {
    /// Monotonic deadline; None when the call has no timeout.
    pub deadline: Option<Duration>,
}

/// The http-call response visible during `proxy_on_http_call_response`.
#[derive(Clone, Debug)]
pub(crate) enum CallResponseView {
    Ok(HttpResponse),
    Failed,
}

/// Which callback the VM is in (for buffers and maps with a lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    /// `_initialize` and the allocator: only logging, clocks, random and environ are allowed.
    Initialize,
    VmStart,
    Configure,
    Other,
}

pub(crate) struct VmState {
    pub index: usize,
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    /// The guest allocator, behind an `Arc` so that `return_bytes` can hold it while calling it with the store
    /// (cloning a `TypedFunc` itself copies its registered `FuncType`, several reference counts).
    pub allocate: Option<Arc<TypedFunc<i32, i32>>>,
    pub settings: Arc<Settings>,
    pub shared: Arc<SharedState>,
    pub clock: Clock,
    pub log_seq: Arc<AtomicU64>,
    pub logs: Vec<LogEntry>,
    pub phase: Phase,
    pub current_context: u32,
    pub effective_context: u32,
    pub root_context: u32,
    pub next_context: u32,
    pub streams: IdMap<StreamData>,
    pub tick: Option<TickTimer>,
    pub last_http_token: u32,
    pub http_calls: IdMap<PendingCall>,
    pub call_response: Option<CallResponseView>,
    pub status: (u32, String),
    pub metric_ids: IdMap<(MetricType, String)>,
    pub next_metric: [u32; 3],
    pub deferred: Vec<Deferred>,
    /// Counts of the guest's calls of each import, kept only for a module from [`crate::CompiledModule::counting`].
    pub host_calls: HostCalls,
}

impl VmState {
    pub(crate) fn new(
        index: usize,
        limits: StoreLimits,
        settings: Arc<Settings>,
        shared: Arc<SharedState>,
        clock: Clock,
        log_seq: Arc<AtomicU64>,
    ) -> VmState {
        VmState {
            index,
            limits,
            memory: None,
            allocate: None,
            settings,
            shared,
            clock,
            log_seq,
            logs: Vec::new(),
            phase: Phase::Idle,
            current_context: 0,
            effective_context: 0,
            root_context: 1,
            next_context: 2,
            streams: IdMap::default(),
            tick: None,
            last_http_token: 0,
            http_calls: IdMap::default(),
            call_response: None,
            status: (0, String::new()),
            metric_ids: IdMap::default(),
            next_metric: [0, 1, 2],
            deferred: Vec::new(),
            host_calls: Default::default(),
        }
    }

    pub(crate) fn log(&mut self, level: LogLevel, from_host: bool, message: String) {
        if !from_host && level < self.settings.log_level {
            return;
        }
        let seq = self.log_seq.fetch_add(1, Ordering::Relaxed);
        self.logs.push(LogEntry { seq, level, vm: self.index, context_id: self.effective_context, from_host, message });
    }

    /// The stream the effective context names, if it is a stream.
    pub(crate) fn stream(&self) -> Option<&StreamData> {
        self.streams.get(&self.effective_context)
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective_context)
    }

    pub(crate) fn context_exists(&self, id: u32) -> bool {
        id == self.root_context || self.streams.contains_key(&id)
    }
}

/// Per-VM counts of the guest's calls of each import (for a module from [`crate::CompiledModule::counting`]; empty and
/// untouched otherwise). Read with [`crate::Worker::host_calls`].
#[derive(Default)]
pub(crate) struct HostCalls {
    names: Option<Arc<[String]>>,
    counts: Vec<u64>,
    /// The real import of each index in this VM's store, looked up on its first call.
    funcs: Vec<Option<Func>>,
}

impl HostCalls {
    /// Counts a call of import `idx` (of `names`); the real function when it was looked up already.
    pub(crate) fn count(&mut self, idx: usize, names: &Arc<[String]>) -> Option<Func> {
        if self.names.is_none() {
            self.names = Some(names.clone());
            self.counts = vec![0; names.len()];
            self.funcs = vec![None; names.len()];
        }
        self.counts[idx] += 1;
        self.funcs[idx]
    }

    /// Remembers the real import of index `idx`, looked up on its first call.
    pub(crate) fn remember(&mut self, idx: usize, f: Func) {
        self.funcs[idx] = Some(f);
    }

    /// `module.name` → calls so far, for every import called at least once.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        let Some(names) = &self.names else { return BTreeMap::new() };
        names.iter().zip(&self.counts).filter(|(_, c)| **c > 0).map(|(n, c)| (n.clone(), *c)).collect()
    }

    pub(crate) fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
    }
}

/// One direction (request or response) of a stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flow {
    pub state: FlowState,
    pub headers_forwarded: bool,
    pub end_received: bool,
    pub held: Vec<u8>,
    pub held_end: bool,
    pub held_trailers: Option<Headers>,
    pub forwarded_headers: Option<Headers>,
    pub forwarded_body: Vec<u8>,
    pub forwarded_trailers: Headers,
    pub complete: bool,
}

/// Stream facts for properties.
#[derive(Clone, Debug)]
pub(crate) struct StreamInfo {
    pub source_address: SocketAddr,
    pub destination_address: SocketAddr,
    pub tls: Option<TlsInfo>,
    pub metadata: serde_json::Value,
    pub protocol: String,
    pub start_time: SystemTime,
    pub connection_id: u64,
}

/// Per-stream host state (in the VM's store).
#[derive(Debug)]
pub(crate) struct StreamData {
    pub info: StreamInfo,
    /// Request headers, request trailers, response headers, response trailers.
    pub maps: [Headers; 4],
    pub live: [bool; 4],
    pub bodies: [Vec<u8>; 2],
    pub body_live: [bool; 2],
    pub access_log: bool,
    pub filter_state: BTreeMap<String, Vec<u8>>,
    pub flows: [Flow; 2],
    pub local_reply: Option<LocalReply>,
    pub reset: Option<String>,
    pub bypass: bool,
    pub fail_closed: bool,
    pub trapped: bool,
    pub callbacks: Vec<CallbackRecord>,
    pub log_seq_start: u64,
    pub upstream_called: bool,
    /// What the upstream was given, moved out of the request flow (`flows[0].forwarded_*`) when the upstream is
    /// called: the flow is complete then and does not change any more. `forwarded()` reads it from here after.
    pub upstream_request: Option<ForwardedRequest>,
    pub created: bool,
}

impl StreamData {
    pub(crate) fn code_details(&self) -> &str {
        match &self.local_reply {
            Some(r) => &r.details,
            None => "via_upstream",
        }
    }

    pub(crate) fn terminated(&self, d: usize) -> bool {
        self.reset.is_some() || (d == 0 && self.local_reply.is_some())
    }
}

impl StreamData {
    pub(crate) fn new(info: StreamInfo, request_headers: Headers, log_seq_start: u64) -> Self {
        StreamData {
            info,
            maps: [request_headers, Vec::new(), Vec::new(), Vec::new()],
            live: [false; 4],
            bodies: [Vec::new(), Vec::new()],
            body_live: [false; 2],
            access_log: false,
            filter_state: BTreeMap::new(),
            flows: [Flow::default(), Flow::default()],
            local_reply: None,
            reset: None,
            bypass: false,
            fail_closed: false,
            trapped: false,
            callbacks: Vec::new(),
            log_seq_start,
            upstream_called: false,
            upstream_request: None,
            created: false,
        }
    }

    pub(crate) fn forwarded(&self) -> Option<ForwardedRequest> {
        if let Some(r) = &self.upstream_request {
            return Some(r.clone());
        }
        let f = &self.flows[0];
        f.forwarded_headers.as_ref().map(|h| ForwardedRequest {
            headers: h.clone(),
            body: f.forwarded_body.clone(),
            trailers: f.forwarded_trailers.clone(),
            complete: f.complete,
        })
    }

    pub(crate) fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            request_state: self.flows[0].state,
            response_state: self.flows[1].state,
            request_headers_forwarded: self.flows[0].headers_forwarded,
            request_complete: self.flows[0].complete,
            response_complete: self.flows[1].complete,
            forwarded: self.forwarded(),
            local_reply: self.local_reply.clone(),
            reset: self.reset.clone(),
            callbacks: self.callbacks.clone(),
            held_request_bytes: self.flows[0].held.len(),
        }
    }

    pub(crate) fn stop_point(&self) -> StopPoint {
        let point = |d: usize| {
            let f = &self.flows[d];
            let (h, b, t) = if d == 0 {
                (StopPoint::RequestHeaders, StopPoint::RequestBody, StopPoint::RequestTrailers)
            } else {
                (StopPoint::ResponseHeaders, StopPoint::ResponseBody, StopPoint::ResponseTrailers)
            };
            match f.state {
                FlowState::NotStarted | FlowState::HeadersPaused => h,
                FlowState::TrailersPaused => t,
                _ => b,
            }
        };
        if self.local_reply.is_none() && !self.flows[0].complete {
            point(0)
        } else if self.flows[1].state == FlowState::NotStarted {
            StopPoint::Upstream
        } else {
            point(1)
        }
    }
}
