//! The proxy-wasm contexts: the root context configures and holds the active bundle; an HTTP context per request
//! gathers the request's headers, evaluates, and continues or answers with a local reply.
//!
//! Everything that can be decided without the host lives in [`crate::active`], [`crate::evaluate`],
//! [`crate::reply`] and [`crate::record`]; this module only moves bytes between them and the host.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::active::{self, Active};
use crate::config::{Config, Mode};
use crate::evaluate::{evaluate, scan};
use crate::ids::IdGen;
use crate::record::{self, RecordContext};
use crate::reply;

/// The filter-state key the decision record is written to (Envoy: `%FILTER_STATE(wasm.warden_decision:PLAIN)%`).
pub const DECISION_PROPERTY: &str = "warden_decision";

/// What the root context shares with its HTTP contexts (read-only on the request path).
#[derive(Clone)]
struct Shared {
    config: Rc<Config>,
    active: Option<Rc<Active>>,
    ids: Rc<IdGen>,
}

/// The root context: one per VM (per worker thread).
#[derive(Default)]
pub struct WardenRoot {
    shared: Option<Shared>,
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn unix_secs(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX)
}

impl Context for WardenRoot {}

impl RootContext for WardenRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let now = unix_secs(unix_nanos(self.get_current_time()));
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let loaded = match active::load(&bytes, now) {
            Ok(loaded) => loaded,
            Err(e) => {
                log(LogLevel::Error, &format!("warden: plugin configuration: {e}"));
                return false;
            }
        };
        let ids = match &self.shared {
            Some(shared) => Rc::clone(&shared.ids),
            None => match IdGen::from_entropy() {
                Ok(ids) => Rc::new(ids),
                Err(e) => {
                    log(LogLevel::Critical, &format!("warden: cannot seed decision ids from host randomness: {e}"));
                    return false;
                }
            },
        };
        let config = loaded.config;
        match &loaded.active {
            Some(a) => log(
                LogLevel::Info,
                &format!(
                    "warden: configured: environment `{}`, mode {}, bundle revision {} from `{}` (key `{}`, sha256 \
                     {}, expires {})",
                    config.environment,
                    config.mode.as_str(),
                    a.bundle.revision,
                    a.bundle.authority,
                    a.key_id,
                    a.digest,
                    warden_core::time::format_rfc3339(a.bundle.expires_at),
                ),
            ),
            None => log(
                LogLevel::Warn,
                &format!(
                    "warden: configured: environment `{}`, mode {}, no bundle: every request is answered 503 \
                     no_active_bundle",
                    config.environment,
                    config.mode.as_str()
                ),
            ),
        }
        self.shared = Some(Shared { config: Rc::new(config), active: loaded.active.map(Rc::new), ids });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK traps on it.
        Some(Box::new(WardenHttp { shared: self.shared.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The HTTP context: one per request.
pub struct WardenHttp {
    /// `None` only if the host creates a stream before a successful `on_configure` (it does not): fail closed.
    shared: Option<Shared>,
}

impl Context for WardenHttp {}

impl HttpContext for WardenHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = &self.shared else {
            self.send_http_response(
                503,
                vec![("content-type", "application/json"), ("cache-control", "no-store")],
                Some(br#"{"decision":"deny","reason":"no_active_bundle","rule":"default","revision":null}"#),
            );
            return Action::Pause;
        };
        let config = &shared.config;
        let start_ns = unix_nanos(self.get_current_time());
        let headers = self.get_http_request_headers_bytes();
        let request = scan(&headers, &config.token_header);
        let ev = evaluate(shared.active.as_deref(), config, &request, unix_secs(start_ns));
        let decision_id = shared.ids.next_id();
        let let_through = ev.verdict.allows() || config.mode == Mode::Shadow;

        if let_through {
            for name in &request.reserved {
                self.set_http_request_header(name, None);
            }
            if let Some(path) = &ev.rewrite_path {
                self.set_http_request_header(":path", Some(path));
            }
            if config.forward_identity_headers {
                self.add_http_request_header("x-warden-decision-id", &decision_id);
                if let Some(agent) = &ev.agent {
                    if header_safe(&agent.id) {
                        self.add_http_request_header("x-warden-agent", &agent.id);
                    }
                    if let Some(task) = agent.task.as_ref().filter(|t| header_safe(&t.id)) {
                        self.add_http_request_header("x-warden-task", &task.id);
                    }
                }
            }
        }

        let latency_ns = unix_nanos(self.get_current_time()).saturating_sub(start_ns);
        let ctx = RecordContext {
            decision_id: &decision_id,
            time_ns: start_ns,
            environment: &config.environment,
            mode: config.mode,
            latency_ns,
        };
        let line = record::build(&ev, &ctx);
        if config.log_decisions {
            log(LogLevel::Info, &line);
        }
        let _ = hostcalls::set_property(vec![DECISION_PROPERTY], Some(line.as_bytes()));

        if let_through {
            return Action::Continue;
        }
        let reply = reply::build(&ev.verdict, &decision_id);
        self.send_http_response(u32::from(reply.status), reply.header_pairs(), Some(&reply.body));
        Action::Pause
    }
}

/// Visible ASCII and spaces only: a value that cannot smuggle a header line or confuse the upstream's parser.
/// An identity that fails this is not forwarded (the upstream sees no identity header, never a mangled one).
fn header_safe(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|c| (0x20..0x7f).contains(&c))
}
