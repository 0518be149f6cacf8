//! A plugin: N worker VMs of one module sharing process-wide tables, their start-up, and the
//! host event loop (ticks, http-call completions and timeouts, queue notifications). `flow` runs a worker's
//! streams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults};

use crate::abi::{Headers, LogLevel, Status};
use crate::clock::Clock;
use crate::engine::{CompiledModule, EPOCH_TICK};
use crate::http_call::{CallResult, HttpResponse, TIMEOUT_BODY};
use crate::log::LogEntry;
use crate::shared::{lock, Event, Inbox, SharedState};
use crate::state::{CallResponseView, Deferred, Phase, Settings, VmState};
use crate::stream::{Exchange, HttpRequest, StreamId, StreamSnapshot, Upstream};

mod flow;

/// How the plugin is configured (Envoy's `PluginConfig` plus the host's own knobs).
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// Bytes `on_configure` reads (Envoy passes a `StringValue` JSON as is).
    pub plugin_configuration: Vec<u8>,
    /// Bytes `on_vm_start` reads.
    pub vm_configuration: Vec<u8>,
    /// Number of worker VMs (Envoy `--concurrency`).
    pub workers: usize,
    /// Also run Envoy's two main-thread VMs (off by default): Envoy starts the module twice more on its main thread
    /// (`on_vm_start` and `on_configure` both times, before the workers'); one of them keeps its tick timer and its
    /// http calls, so a filter that polls from `on_tick` polls once more per period than it has workers. These VMs
    /// never get a stream. Their log lines carry VM numbers `workers` (the one without ticks) and `workers + 1`.
    pub main_thread_vms: bool,
    pub root_id: String,
    pub vm_id: String,
    pub plugin_name: String,
    /// Envoy ≥ 1.35 option: body callbacks arrive while headers are paused.
    pub allow_on_headers_stop_iteration: bool,
    /// FAIL_OPEN: after a VM failure its streams skip the filter; otherwise they get 503.
    pub fail_open: bool,
    /// Envoy's buffer limit for a paused request body (413 past it). Default 1 MiB.
    pub request_body_buffer_limit: usize,
    /// The same for a paused response body (500 past it). Default 1 MiB.
    pub response_body_buffer_limit: usize,
    /// Cluster name → loopback address, for `proxy_http_call`.
    pub clusters: BTreeMap<String, SocketAddr>,
    pub clock: Clock,
    /// Envoy's `wasm` logger level: lower levels are dropped; `proxy_get_log_level` returns it.
    pub log_level: LogLevel,
    /// `vm_config.environment_variables` (WASI environ); empty by default as in Envoy.
    pub environment: Vec<(String, String)>,
    /// Linear-memory cap per VM (Envoy: 1 GiB).
    pub memory_limit: usize,
    /// Longest a single guest callback may run before the epoch deadline traps it.
    pub callback_deadline: Duration,
    /// How long `send` waits (real time) for pending http calls before reporting a hang.
    pub send_wait: Duration,
    /// The process-wide tables to start with (`None`: new ones). Passing another plugin's
    /// ([`Plugin::shared`]) models what Envoy does when it reloads a VM or replaces a plugin in the same
    /// process: shared data (per vm_id) and stats outlive the VMs.
    pub shared: Option<Arc<SharedState>>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            plugin_configuration: Vec::new(),
            vm_configuration: Vec::new(),
            workers: 1,
            main_thread_vms: false,
            root_id: String::new(),
            vm_id: String::new(),
            plugin_name: "plugin".into(),
            allow_on_headers_stop_iteration: false,
            fail_open: false,
            request_body_buffer_limit: 1 << 20,
            response_body_buffer_limit: 1 << 20,
            clusters: BTreeMap::new(),
            clock: Clock::manual_default(),
            log_level: LogLevel::Info,
            environment: Vec::new(),
            memory_limit: 1 << 30,
            callback_deadline: Duration::from_secs(10),
            send_wait: Duration::from_secs(5),
            shared: None,
        }
    }
}

impl PluginConfig {
    /// A config with this plugin configuration (JSON bytes) and defaults elsewhere.
    pub fn new(plugin_configuration: impl Into<Vec<u8>>) -> PluginConfig {
        PluginConfig { plugin_configuration: plugin_configuration.into(), ..PluginConfig::default() }
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn main_thread_vms(mut self, yes: bool) -> Self {
        self.main_thread_vms = yes;
        self
    }

    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.insert(name.into(), addr);
        self
    }

    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn fail_open(mut self, yes: bool) -> Self {
        self.fail_open = yes;
        self
    }

    pub fn allow_on_headers_stop_iteration(mut self, yes: bool) -> Self {
        self.allow_on_headers_stop_iteration = yes;
        self
    }

    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Starts on these process-wide tables (see [`PluginConfig::shared`]).
    pub fn shared_state(mut self, shared: Arc<SharedState>) -> Self {
        self.shared = Some(shared);
        self
    }
}

/// Why a plugin did not start. Carries the logs captured so far, so a test can assert the
/// reason the filter logged.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("plugin needs at least one worker")]
    NoWorkers,
    #[error("VM {vm}: cannot instantiate the module: {message}")]
    Instantiate { vm: usize, message: String },
    #[error("VM {vm}: the module does not export {export}")]
    MissingExport { vm: usize, export: &'static str },
    #[error("VM {vm}: {callback} returned false: plugin refused (Envoy: Unable to create Wasm HTTP filter)")]
    Refused { vm: usize, callback: &'static str, logs: Vec<LogEntry> },
    #[error("VM {vm}: {callback} trapped: {message}")]
    Trapped { vm: usize, callback: &'static str, message: String, logs: Vec<LogEntry> },
}

impl StartError {
    /// Log lines captured before the failure.
    pub fn logs(&self) -> &[LogEntry] {
        match self {
            StartError::Refused { logs, .. } | StartError::Trapped { logs, .. } => logs,
            _ => &[],
        }
    }

    /// Whether any captured log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(needle))
    }
}

/// Errors of the stream API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("no worker {0}")]
    NoWorker(usize),
    #[error("no live stream {0:?}")]
    NoStream(StreamId),
}

type HttpCallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The module's callbacks, looked up once when the VM is created. A `TypedFunc` is never cloned on the request
/// path (a clone copies its registered `FuncType`: several atomic reference counts up and down again); `call`
/// borrows it from here.
pub(crate) struct Funcs {
    pub initialize: Option<TypedFunc<(), ()>>,
    pub context_create: Option<TypedFunc<(i32, i32), ()>>,
    pub vm_start: Option<TypedFunc<(i32, i32), i32>>,
    pub configure: Option<TypedFunc<(i32, i32), i32>>,
    pub tick: Option<TypedFunc<i32, ()>>,
    pub queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub done: Option<TypedFunc<i32, i32>>,
    pub log: Option<TypedFunc<i32, ()>>,
    pub delete: Option<TypedFunc<i32, ()>>,
    pub request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub http_call_response: Option<HttpCallResponseFn>,
}

/// One worker VM: its own store, instance, root context, tick timer and streams.
pub struct Worker {
    pub(crate) index: usize,
    pub(crate) store: Store<VmState>,
    pub(crate) funcs: Funcs,
    pub(crate) failed: Option<String>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) send_wait: Duration,
    deadline_ticks: u64,
}

impl Worker {
    /// Calls a guest export. Ok(None) when the module lacks it; Err(()) when the VM is failed or
    /// the call trapped (which fails the VM and logs Envoy's `Function: … failed` line).
    /// `pick` chooses the callback from the VM's [`Funcs`] (borrowed, not cloned).
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        pick: impl FnOnce(&Funcs) -> Option<&TypedFunc<P, R>>,
        ctx: u32,
        params: P,
    ) -> Result<Option<R>, ()> {
        if self.failed.is_some() {
            return Err(());
        }
        let Some(f) = pick(&self.funcs) else { return Ok(None) };
        let s = self.store.data_mut();
        let (prev_current, prev_effective) = (s.current_context, s.effective_context);
        s.current_context = ctx;
        s.effective_context = ctx;
        self.store.set_epoch_deadline(self.deadline_ticks);
        let r = f.call(&mut self.store, params);
        let s = self.store.data_mut();
        s.current_context = prev_current;
        s.effective_context = prev_effective;
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let msg = format!("Function: {name} failed: {e:#}");
                let s = self.store.data_mut();
                s.log(LogLevel::Error, true, msg.clone());
                // What the trapping callback queued for its own context is lost (Envoy answers that stream 503,
                // not the queued reply), but a resume it queued for another stream (from the root context's
                // `on_http_call_response`, a tick …) is still carried out, as Envoy's posted continue is: that
                // stream goes on and meets the failed VM at its next callback.
                s.deferred.retain(|a| matches!(a, Deferred::Continue { context, .. } if *context != ctx));
                self.failed = Some(msg);
                Err(())
            }
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// The failure message when a trap killed this VM.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Size of this VM's linear memory in bytes (it only grows; Envoy caps it at 1 GiB).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory.map(|m| m.data_size(&self.store)).unwrap_or(0)
    }

    /// The guest's calls of each import (`env.proxy_get_header_map_value`, `wasi_snapshot_preview1.random_get`,
    /// …) on this VM since it started or since [`Worker::reset_host_calls`]; only imports called at least once.
    /// Empty unless the module came from [`CompiledModule::counting`].
    pub fn host_calls(&self) -> BTreeMap<String, u64> {
        self.store.data().host_calls.snapshot()
    }

    /// Sets this VM's [`Worker::host_calls`] back to zero.
    pub fn reset_host_calls(&mut self) {
        self.store.data_mut().host_calls.reset();
    }

    /// Outstanding `proxy_http_call`s.
    pub fn pending_http_calls(&self) -> usize {
        self.store.data().http_calls.len()
    }

    /// The root context's tick period, if a timer is set.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick.as_ref().map(|t| t.period)
    }

    /// Context ids of live streams.
    pub fn live_streams(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.store.data().streams.keys().copied().collect();
        v.sort();
        v
    }

    pub(crate) fn has_events(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// One turn of a real-time event loop for this worker alone (when workers run on their own
    /// threads, see [`Plugin::into_workers`]): delivers arrived events and due ticks/timeouts,
    /// waiting up to `max_wait`.
    pub fn poll(&mut self, max_wait: Duration) {
        self.wait_and_deliver(max_wait);
        let now = self.store.data().clock.monotonic();
        self.fire_due(now);
    }

    /// The process-wide tables this worker shares with the others.
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// Delivers every event that arrived for this VM. Returns how many were delivered.
    pub fn run_pending(&mut self) -> usize {
        let events = self.inbox.take();
        let n = events.len();
        for e in events {
            self.deliver(e);
        }
        n
    }

    /// Waits (real time) up to `max` for an event for this VM, then delivers what arrived.
    pub(crate) fn wait_and_deliver(&mut self, max: Duration) {
        let end = Instant::now() + max;
        loop {
            let seen = self.shared.notifier.generation();
            if self.run_pending() > 0 {
                return;
            }
            if !self.store.data().clock.is_manual() && self.fire_due(self.store.data().clock.monotonic()) {
                return;
            }
            let now = Instant::now();
            if now >= end {
                return;
            }
            let mut wait = end - now;
            if let Some(due) = self.next_due() {
                if !self.store.data().clock.is_manual() {
                    let now_mono = self.store.data().clock.monotonic();
                    wait = wait.min(due.saturating_sub(now_mono));
                }
            }
            self.shared.notifier.wait(seen, wait.max(Duration::from_millis(1)));
        }
    }

    fn deliver(&mut self, e: Event) {
        match e {
            Event::HttpCallDone { token, result } => {
                if self.store.data_mut().http_calls.remove(&token).is_some() {
                    self.deliver_call(token, result);
                }
            }
            Event::QueueReady { root_context, queue } => {
                let args = (root_context as i32, queue as i32);
                let _ = self.call("proxy_on_queue_ready", |f| f.queue_ready.as_ref(), root_context, args);
                self.run_deferred();
            }
        }
    }

    fn deliver_call(&mut self, token: u32, result: CallResult) {
        let root = self.store.data().root_context;
        let (view, args) = match result {
            CallResult::Response(r) => {
                let args = (r.headers.len() as i32, r.body.len() as i32, r.trailers.len() as i32);
                self.store.data_mut().status = (Status::Ok as u32, String::new());
                (CallResponseView::Ok(r), args)
            }
            CallResult::Reset => {
                self.store.data_mut().status = (Status::BrokenConnection as u32, "reset".into());
                (CallResponseView::Failed, (0, 0, 0))
            }
        };
        self.store.data_mut().call_response = Some(view);
        let args = (root as i32, token as i32, args.0, args.1, args.2);
        let _ = self.call("proxy_on_http_call_response", |f| f.http_call_response.as_ref(), root, args);
        self.store.data_mut().call_response = None;
        self.run_deferred();
    }

    /// The earliest tick or call deadline on the monotonic scale.
    pub(crate) fn next_due(&self) -> Option<Duration> {
        if self.failed.is_some() {
            return None;
        }
        let s = self.store.data();
        let tick = s.tick.as_ref().map(|t| t.due);
        let call = s.http_calls.values().filter_map(|c| c.deadline).min();
        match (tick, call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires timeouts and the tick due at or before `now`. Returns whether anything fired.
    pub(crate) fn fire_due(&mut self, now: Duration) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let mut fired = false;
        let mut expired: Vec<u32> = self
            .store
            .data()
            .http_calls
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        expired.sort();
        for token in expired {
            self.store.data_mut().http_calls.remove(&token);
            self.deliver_call(token, CallResult::Response(HttpResponse::synthesized(504, TIMEOUT_BODY)));
            fired = true;
        }
        let due = self.store.data().tick.as_ref().is_some_and(|t| t.due <= now);
        if due && self.failed.is_none() {
            let s = self.store.data_mut();
            let root = s.root_context;
            if let Some(t) = s.tick.as_mut() {
                t.due = now + t.period;
            }
            let _ = self.call("proxy_on_tick", |f| f.tick.as_ref(), root, root as i32);
            self.run_deferred();
            fired = true;
        }
        fired
    }

    /// Log lines of this VM.
    pub fn logs(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    /// Returns and clears this VM's captured log lines (a long-running gateway drains them so they do not pile up).
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.store.data_mut().logs)
    }
}

/// A started plugin: N worker VMs (and, with [`PluginConfig::main_thread_vms`], Envoy's two main-thread VMs).
pub struct Plugin {
    workers: Vec<Worker>,
    /// The main thread's VMs (none unless [`PluginConfig::main_thread_vms`]): they tick and make calls, never
    /// get a stream.
    main: Vec<Worker>,
    shared: Arc<SharedState>,
    clock: Clock,
    next_worker: usize,
}

impl Plugin {
    /// Creates the worker VMs; each runs `_initialize`, `proxy_on_context_create(1, 0)`,
    /// `proxy_on_vm_start` and `proxy_on_configure`. A false or a trap refuses the plugin.
    pub fn start(module: &CompiledModule, config: PluginConfig) -> Result<Plugin, StartError> {
        if config.workers == 0 {
            return Err(StartError::NoWorkers);
        }
        let settings = Arc::new(Settings {
            plugin_name: config.plugin_name.clone(),
            root_id: config.root_id.clone(),
            vm_id: config.vm_id.clone(),
            plugin_configuration: config.plugin_configuration.clone(),
            vm_configuration: config.vm_configuration.clone(),
            environment: config.environment.clone(),
            clusters: config.clusters.clone(),
            log_level: config.log_level,
            allow_on_headers_stop_iteration: config.allow_on_headers_stop_iteration,
            fail_open: config.fail_open,
            request_body_buffer_limit: config.request_body_buffer_limit,
            response_body_buffer_limit: config.response_body_buffer_limit,
        });
        let shared = config.shared.clone().unwrap_or_default();
        let log_seq = Arc::new(AtomicU64::new(0));
        let n_main = if config.main_thread_vms { 2 } else { 0 };
        let inboxes: Vec<Arc<Inbox>> = (0..config.workers + n_main).map(|_| Arc::default()).collect();
        *lock(&shared.inboxes) = inboxes.clone();
        let deadline_ticks = (config.callback_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        let mut vms = Vec::with_capacity(config.workers + n_main);
        // Envoy starts the main thread's VMs first, then the workers'; the workers keep the numbers 0..N.
        let order: Vec<usize> = (config.workers..config.workers + n_main).chain(0..config.workers).collect();
        for index in order {
            let inbox = inboxes[index].clone();
            let limits = StoreLimitsBuilder::new().memory_size(config.memory_limit).instances(1).memories(1).build();
            let state =
                VmState::new(index, limits, settings.clone(), shared.clone(), config.clock.clone(), log_seq.clone());
            let mut store = Store::new(module.engine(), state);
            store.limiter(|s| &mut s.limits);
            store.epoch_deadline_trap();
            store.set_epoch_deadline(deadline_ticks);
            let instance = module
                .pre()
                .instantiate(&mut store)
                .map_err(|e| StartError::Instantiate { vm: index, message: format!("{e:#}") })?;
            let memory = instance
                .get_memory(&mut store, "memory")
                .ok_or(StartError::MissingExport { vm: index, export: "memory" })?;
            macro_rules! func {
                ($name:literal) => {
                    instance.get_typed_func(&mut store, $name).ok()
                };
            }
            let allocate: Option<TypedFunc<i32, i32>> = func!("proxy_on_memory_allocate");
            let allocate = allocate
                .or_else(|| func!("malloc"))
                .ok_or(StartError::MissingExport { vm: index, export: "proxy_on_memory_allocate" })?;
            store.data_mut().memory = Some(memory);
            store.data_mut().allocate = Some(Arc::new(allocate));
            let initialize: Option<TypedFunc<(), ()>> = func!("_initialize");
            let funcs = Funcs {
                initialize,
                context_create: func!("proxy_on_context_create"),
                vm_start: func!("proxy_on_vm_start"),
                configure: func!("proxy_on_configure"),
                tick: func!("proxy_on_tick"),
                queue_ready: func!("proxy_on_queue_ready"),
                done: func!("proxy_on_done"),
                log: func!("proxy_on_log"),
                delete: func!("proxy_on_delete"),
                request_headers: func!("proxy_on_request_headers"),
                request_body: func!("proxy_on_request_body"),
                request_trailers: func!("proxy_on_request_trailers"),
                response_headers: func!("proxy_on_response_headers"),
                response_body: func!("proxy_on_response_body"),
                response_trailers: func!("proxy_on_response_trailers"),
                http_call_response: func!("proxy_on_http_call_response"),
            };
            let mut w = Worker {
                index,
                store,
                funcs,
                failed: None,
                settings: settings.clone(),
                inbox,
                shared: shared.clone(),
                send_wait: config.send_wait,
                deadline_ticks,
            };
            w.boot(&config)?;
            if index == config.workers {
                // The first main-thread VM keeps no timer (Envoy 1.40 ticks one main-thread root context).
                w.store.data_mut().tick = None;
            }
            vms.push(w);
        }
        let main: Vec<Worker> = vms.drain(..n_main).collect();
        Ok(Plugin { workers: vms, main, shared, clock: config.clock, next_worker: 0 })
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    pub fn worker(&self, index: usize) -> Option<&Worker> {
        self.workers.get(index)
    }

    pub fn worker_mut(&mut self, index: usize) -> Option<&mut Worker> {
        self.workers.get_mut(index)
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The next worker in round-robin order.
    pub fn next_worker(&mut self) -> usize {
        let w = self.next_worker % self.workers.len();
        self.next_worker = self.next_worker.wrapping_add(1);
        w
    }

    /// Runs a request through the filter on `worker` and, if the filter lets it through,
    /// through `upstream`; then the response back through the filter. Waits (real time, up to
    /// `send_wait`) for this VM's outstanding http calls; a stream still paused after that is
    /// reported as `Outcome::Hung`.
    ///
    /// Panics if `worker` is out of range (see [`Plugin::try_send`]).
    pub fn send(&mut self, worker: usize, request: HttpRequest, upstream: &mut dyn Upstream) -> Exchange {
        let n = self.workers.len();
        match self.try_send(worker, request, upstream) {
            Ok(x) => x,
            Err(_) => panic!("send: worker {worker} out of range (plugin has {n})"),
        }
    }

    pub fn try_send(
        &mut self,
        worker: usize,
        request: HttpRequest,
        upstream: &mut dyn Upstream,
    ) -> Result<Exchange, HostError> {
        let w = self.workers.get_mut(worker).ok_or(HostError::NoWorker(worker))?;
        Ok(w.send(request, upstream))
    }

    /// `send` on the next worker in round-robin order.
    pub fn send_round_robin(&mut self, request: HttpRequest, upstream: &mut dyn Upstream) -> Exchange {
        let w = self.next_worker();
        self.send(w, request, upstream)
    }

    // ---- step-by-step streams ----

    fn worker_for(&mut self, id: StreamId) -> Result<&mut Worker, HostError> {
        let w = self.workers.get_mut(id.worker).ok_or(HostError::NoWorker(id.worker))?;
        if !w.store.data().streams.contains_key(&id.context_id) {
            return Err(HostError::NoStream(id));
        }
        Ok(w)
    }

    /// Creates a stream context on `worker`; nothing is sent yet.
    pub fn open_stream(&mut self, worker: usize, request: &HttpRequest) -> Result<StreamId, HostError> {
        let w = self.workers.get_mut(worker).ok_or(HostError::NoWorker(worker))?;
        Ok(w.open_stream(request))
    }

    pub fn request_headers(&mut self, id: StreamId, end_of_stream: bool) -> Result<(), HostError> {
        self.worker_for(id)?.request_headers(id.context_id, end_of_stream);
        Ok(())
    }

    pub fn request_body(&mut self, id: StreamId, chunk: &[u8], end_of_stream: bool) -> Result<(), HostError> {
        self.worker_for(id)?.request_body(id.context_id, chunk, end_of_stream);
        Ok(())
    }

    pub fn request_trailers(&mut self, id: StreamId, trailers: Headers) -> Result<(), HostError> {
        self.worker_for(id)?.request_trailers(id.context_id, trailers);
        Ok(())
    }

    pub fn response_headers(
        &mut self,
        id: StreamId,
        status: u16,
        headers: &Headers,
        end_of_stream: bool,
    ) -> Result<(), HostError> {
        self.worker_for(id)?.response_headers(id.context_id, status, headers, end_of_stream);
        Ok(())
    }

    pub fn response_body(&mut self, id: StreamId, chunk: &[u8], end_of_stream: bool) -> Result<(), HostError> {
        self.worker_for(id)?.response_body(id.context_id, chunk, end_of_stream);
        Ok(())
    }

    pub fn response_trailers(&mut self, id: StreamId, trailers: Headers) -> Result<(), HostError> {
        self.worker_for(id)?.response_trailers(id.context_id, trailers);
        Ok(())
    }

    /// The state of a live stream.
    pub fn stream_state(&self, id: StreamId) -> Option<StreamSnapshot> {
        self.workers.get(id.worker)?.stream_snapshot(id.context_id)
    }

    /// Ends a stream (`on_log`, `on_done`, `on_delete`) and reports it.
    pub fn finish_stream(&mut self, id: StreamId) -> Result<Exchange, HostError> {
        Ok(self.worker_for(id)?.finish_stream(id.context_id))
    }

    // ---- the event loop ----

    /// Delivers http-call responses and queue notifications that already arrived, without moving
    /// time. Returns how many events were delivered.
    pub fn run_pending(&mut self) -> usize {
        self.workers.iter_mut().chain(self.main.iter_mut()).map(Worker::run_pending).sum()
    }

    /// Waits (real time, up to `max`) until no VM has an http call in flight, delivering
    /// responses as they arrive. Returns true when none is left pending. Calls waiting on a
    /// host-clock timeout stay pending until `advance` moves past it.
    pub fn settle(&mut self, max: Duration) -> bool {
        let end = Instant::now() + max;
        loop {
            let seen = self.shared.notifier.generation();
            self.run_pending();
            if self.all_vms().all(|w| w.pending_http_calls() == 0 || w.failed.is_some()) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            self.shared.notifier.wait(seen, end - now);
        }
    }

    /// Moves a manual clock forward by `d`, firing everything that falls due on the way in time
    /// order (ticks on every VM in worker order, http-call timeouts as 504), after delivering
    /// responses that already arrived. On a real clock it only delivers what is due now.
    pub fn advance(&mut self, d: Duration) {
        self.run_pending();
        if !self.clock.is_manual() {
            self.fire_due_now();
            return;
        }
        let target = self.clock.monotonic() + d;
        loop {
            let next = self.all_vms().filter_map(Worker::next_due).min();
            match next {
                Some(due) if due <= target => {
                    let now = self.clock.monotonic();
                    if due > now {
                        self.clock.advance(due - now);
                    }
                    for w in self.main.iter_mut().chain(self.workers.iter_mut()) {
                        w.fire_due(due);
                    }
                    self.run_pending();
                }
                _ => break,
            }
        }
        let now = self.clock.monotonic();
        if target > now {
            self.clock.advance(target - now);
        }
        self.run_pending();
    }

    fn fire_due_now(&mut self) -> bool {
        let now = self.clock.monotonic();
        let mut fired = false;
        for w in self.main.iter_mut().chain(self.workers.iter_mut()) {
            fired |= w.fire_due(now);
        }
        fired
    }

    /// One turn of the real-time event loop for the gateway: delivers arrived events and due
    /// ticks/timeouts, waiting up to `max_wait` for something to happen. Returns whether
    /// anything was delivered.
    pub fn poll(&mut self, max_wait: Duration) -> bool {
        let end = Instant::now() + max_wait;
        loop {
            let seen = self.shared.notifier.generation();
            let mut did = self.run_pending() > 0;
            did |= self.fire_due_now();
            if did {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            let mut wait = end - now;
            if let Some(due) = self.all_vms().filter_map(Worker::next_due).min() {
                wait = wait.min(due.saturating_sub(self.clock.monotonic()));
            }
            self.shared.notifier.wait(seen, wait.max(Duration::from_millis(1)));
        }
    }

    // ---- inspection ----

    /// A counter or gauge by name (process-wide across VMs).
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.shared.metric(name)
    }

    /// Samples recorded into a histogram.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.shared.histogram(name)
    }

    /// Shared data under the plugin's vm_id: (value, cas).
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let vm_id = self.workers.first().map(|w| w.settings.vm_id.clone()).unwrap_or_default();
        self.shared.get_data(&vm_id, key)
    }

    /// The process-wide tables (shared data, queues, metrics).
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// Every captured log line of every VM, in the order they were written.
    pub fn logs(&self) -> Vec<LogEntry> {
        let mut all: Vec<LogEntry> = self.all_vms().flat_map(|w| w.store.data().logs.iter().cloned()).collect();
        all.sort_by_key(|l| l.seq);
        all
    }

    /// Returns and clears the captured logs.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        let mut all: Vec<LogEntry> = Vec::new();
        for w in self.workers.iter_mut().chain(self.main.iter_mut()) {
            let logs = std::mem::take(&mut w.store.data_mut().logs);
            if all.is_empty() {
                all = logs;
            } else {
                all.extend(logs);
            }
        }
        if self.workers.len() + self.main.len() > 1 {
            all.sort_by_key(|l| l.seq);
        }
        all
    }

    /// Whether any captured log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.all_vms().any(|w| w.store.data().logs.iter().any(|l| l.message.contains(needle)))
    }

    /// Splits the plugin into its workers (each `Send`), e.g. to run one per thread as Envoy
    /// does. Shared data, queues and metrics stay shared through [`Worker::shared`]. The main-thread VMs, if any,
    /// are dropped: use [`Plugin::into_vms`] to keep them.
    pub fn into_workers(self) -> Vec<Worker> {
        self.workers
    }

    /// Splits the plugin into its workers and its main-thread VMs (empty unless
    /// [`PluginConfig::main_thread_vms`]), which need their event loop turned too ([`Worker::poll`]).
    pub fn into_vms(self) -> (Vec<Worker>, Vec<Worker>) {
        (self.workers, self.main)
    }

    /// The main-thread VMs ([`PluginConfig::main_thread_vms`]).
    pub fn main_thread_vms(&self) -> &[Worker] {
        &self.main
    }

    /// Every VM: the workers, then the main thread's.
    fn all_vms(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().chain(self.main.iter())
    }

    /// The failure message of a worker's VM, if a trap killed it.
    pub fn vm_failure(&self, worker: usize) -> Option<&str> {
        self.workers.get(worker)?.failure()
    }
}

type StartFn = fn(&Funcs) -> Option<&TypedFunc<(i32, i32), i32>>;

fn vm_start(f: &Funcs) -> Option<&TypedFunc<(i32, i32), i32>> {
    f.vm_start.as_ref()
}

fn configure(f: &Funcs) -> Option<&TypedFunc<(i32, i32), i32>> {
    f.configure.as_ref()
}

impl Worker {
    fn boot(&mut self, config: &PluginConfig) -> Result<(), StartError> {
        let vm = self.index;
        let trapped = |w: &Worker, callback: &'static str| StartError::Trapped {
            vm,
            callback,
            message: w.failed.clone().unwrap_or_default(),
            logs: w.store.data().logs.clone(),
        };
        self.store.data_mut().phase = Phase::Initialize;
        let r = self.call("_initialize", |f| f.initialize.as_ref(), 0, ());
        self.store.data_mut().phase = Phase::Other;
        if r.is_err() {
            return Err(trapped(self, "_initialize"));
        }
        let root = self.store.data().root_context;
        if self.call("proxy_on_context_create", |f| f.context_create.as_ref(), root, (root as i32, 0)).is_err() {
            return Err(trapped(self, "proxy_on_context_create"));
        }
        for (callback, f, len, phase) in [
            ("proxy_on_vm_start", vm_start as StartFn, config.vm_configuration.len(), Phase::VmStart),
            ("proxy_on_configure", configure as StartFn, config.plugin_configuration.len(), Phase::Configure),
        ] {
            self.store.data_mut().phase = phase;
            let r = self.call(callback, f, root, (root as i32, len as i32));
            self.store.data_mut().phase = Phase::Other;
            match r {
                Err(()) => return Err(trapped(self, callback)),
                Ok(Some(0)) => return Err(StartError::Refused { vm, callback, logs: self.store.data().logs.clone() }),
                Ok(_) => {}
            }
            self.run_deferred();
        }
        Ok(())
    }
}
