//! The plugin's worker VMs for the live gateway: one thread per VM (as Envoy runs one VM per worker thread), each
//! owning its [`Worker`], taking requests from its queue and turning its VM's real-time event loop (ticks, http-call
//! responses) between requests; and, as in Envoy, the main thread's two VMs, which only turn their event loop.
//! Shared data, queues and metrics stay process-wide inside the host library.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use warden_host::{
    Clock, CompiledModule, Exchange, HttpRequest, LogEntry, Plugin, PluginConfig, StartError, Upstream, Worker,
};

use crate::args::{PluginOptions, BUILD_WASM};

/// Receives every log line the VMs write (the filter's decision records included), in order.
pub type LogSink = Arc<dyn Fn(&LogEntry) + Send + Sync>;

/// How often a VM thread turns its event loop when no request arrives.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Loads `warden.wasm` (compiled once per process), with the build command in the error when it is missing.
pub fn load_module(path: &Path) -> Result<CompiledModule> {
    if !path.is_file() {
        return Err(anyhow!("no filter at {}: build it with `{BUILD_WASM}` (or pass --wasm PATH)", path.display()));
    }
    CompiledModule::load_cached(path).with_context(|| format!("cannot load {}", path.display()))
}

/// The host configuration for these options.
pub fn plugin_config(opts: &PluginOptions, configuration: Vec<u8>, clock: Clock) -> PluginConfig {
    let mut config = PluginConfig::new(configuration)
        .workers(opts.workers)
        .clock(clock)
        .fail_open(opts.fail_open)
        .allow_on_headers_stop_iteration(opts.allow_on_headers_stop_iteration)
        .main_thread_vms(true);
    config.plugin_name = "warden".into();
    config.root_id = "warden".into();
    config.vm_id = "warden".into();
    for (name, addr) in &opts.clusters {
        config = config.cluster(name, *addr);
    }
    config
}

/// Starts the plugin; a refusal carries the filter's own log lines (which say what is wrong with the configuration).
pub fn start_plugin(module: &CompiledModule, config: PluginConfig) -> Result<Plugin> {
    Plugin::start(module, config).map_err(start_error)
}

fn start_error(e: StartError) -> anyhow::Error {
    let mut msg = format!("the plugin did not start: {e}");
    for l in e.logs() {
        msg.push_str(&format!("\n  [{}] {}", level_name(l), l.message));
    }
    anyhow!(msg)
}

/// `info`, `error`, … for a log line.
pub fn level_name(l: &LogEntry) -> String {
    format!("{:?}", l.level).to_ascii_lowercase()
}

struct Job {
    request: HttpRequest,
    upstream: Box<dyn Upstream + Send>,
    reply: mpsc::Sender<Exchange>,
}

/// One worker VM on its own thread.
struct Lane {
    jobs: mpsc::Sender<Job>,
    /// Requests queued or running on this VM.
    load: Arc<AtomicUsize>,
}

/// The running VMs. Cheap to share (`Arc<VmPool>`); dropping it stops the VM threads.
pub struct VmPool {
    lanes: Vec<Lane>,
    next: AtomicUsize,
    /// Dropping these stops the main-thread VMs' threads.
    _main: Vec<mpsc::Sender<()>>,
}

impl VmPool {
    /// Starts `opts.workers` VMs on a real clock, one thread each (as Envoy runs one VM per worker thread). Returns
    /// once every VM accepted its configuration.
    pub fn start(opts: &PluginOptions, configuration: Vec<u8>, sink: LogSink) -> Result<VmPool> {
        let module = load_module(&opts.wasm)?;
        let plugin = start_plugin(&module, plugin_config(opts, configuration, Clock::real()))?;
        let (workers, main_vms) = plugin.into_vms();
        let mut main = Vec::new();
        for vm in main_vms {
            let (stop, stop_rx) = mpsc::channel::<()>();
            let vm_sink = sink.clone();
            std::thread::Builder::new()
                .name(format!("warden-main-vm{}", vm.index()))
                .spawn(move || run_main_vm(vm, stop_rx, vm_sink))
                .context("cannot start a VM thread")?;
            main.push(stop);
        }
        let mut lanes = Vec::new();
        for worker in workers {
            let (jobs, jobs_rx) = mpsc::channel::<Job>();
            let load = Arc::new(AtomicUsize::new(0));
            let lane_sink = sink.clone();
            std::thread::Builder::new()
                .name(format!("warden-vm{}", worker.index()))
                .spawn(move || run_worker(worker, jobs_rx, lane_sink))
                .context("cannot start a VM thread")?;
            lanes.push(Lane { jobs, load });
        }
        Ok(VmPool { lanes, next: AtomicUsize::new(0), _main: main })
    }

    pub fn workers(&self) -> usize {
        self.lanes.len()
    }

    /// Runs one request through the filter (and `upstream` when the filter lets it through) on the least busy VM
    /// (round-robin among equals).
    pub fn run(&self, request: HttpRequest, upstream: Box<dyn Upstream + Send>) -> Result<Exchange> {
        let n = self.lanes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let lane = (0..n)
            .map(|i| &self.lanes[(start + i) % n])
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
            .ok_or_else(|| anyhow!("no VMs"))?;
        lane.load.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = mpsc::channel();
        let sent = lane.jobs.send(Job { request, upstream, reply });
        let result = match sent {
            Ok(()) => rx.recv().map_err(|_| anyhow!("the VM thread dropped the request")),
            Err(_) => Err(anyhow!("the VM thread has stopped")),
        };
        lane.load.fetch_sub(1, Ordering::Relaxed);
        result
    }
}

fn run_worker(mut worker: Worker, jobs: mpsc::Receiver<Job>, sink: LogSink) {
    drain_logs(&mut worker, &sink);
    loop {
        match jobs.recv_timeout(POLL_EVERY) {
            Ok(mut job) => {
                let exchange = worker.send(job.request, job.upstream.as_mut());
                drain_logs(&mut worker, &sink);
                let _ = job.reply.send(exchange);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Ticks and http-call responses of this VM.
        worker.poll(Duration::ZERO);
        drain_logs(&mut worker, &sink);
    }
}

/// A main-thread VM: no requests, only its ticks and http-call responses, until the pool is dropped.
fn run_main_vm(mut vm: Worker, stop: mpsc::Receiver<()>, sink: LogSink) {
    loop {
        drain_logs(&mut vm, &sink);
        match stop.recv_timeout(POLL_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => vm.poll(Duration::ZERO),
            _ => return,
        }
    }
}

/// Hands the lines this VM wrote since the last call to the sink, and forgets them.
fn drain_logs(worker: &mut Worker, sink: &LogSink) {
    for l in worker.take_logs() {
        sink(&l);
    }
}
