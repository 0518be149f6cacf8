//! The gateway: each HTTP/1.1 request becomes a stream through the filter on one of the worker VMs, and what the
//! filter lets through goes to the upstream over loopback; the answer (the upstream's or the filter's local reply)
//! goes back to the client.
//!
//! As in Envoy's HTTP/1 codec, `Host` becomes `:authority`, hop-by-hop headers stay with the connection, the peer is
//! the stream's `source.address`, and a stream the filter resets closes the connection without an answer.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use warden_host::{Exchange, HttpRequest, HttpUpstream, LogEntry, Outcome};

use crate::args::{PluginOptions, ServeOptions};
use crate::http::{Handler, Reply, Request, Response, Server};
use crate::vms::{level_name, load_module, LogSink, VmPool};

/// A running gateway.
pub struct Gateway {
    server: Server,
    pool: Arc<VmPool>,
}

impl Gateway {
    /// Starts the VMs (failing if the filter refuses its configuration), then listens.
    pub fn start(
        plugin: &PluginOptions,
        configuration: Vec<u8>,
        listen: SocketAddr,
        upstream: SocketAddr,
        sink: LogSink,
        access_log: bool,
    ) -> Result<Gateway> {
        let pool = Arc::new(VmPool::start(plugin, configuration, sink)?);
        let vms = pool.clone();
        let handler: Handler = Arc::new(move |req: Request| handle(&vms, upstream, req, access_log));
        let server = Server::start(listen, handler)?;
        Ok(Gateway { server, pool })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn workers(&self) -> usize {
        self.pool.workers()
    }
}

/// `warden-gateway serve`: runs until killed. Decision records go to stdout (one JSON line each), everything else
/// the filter logs and one access line per request go to stderr.
pub fn serve(opts: ServeOptions) -> Result<()> {
    // The filter first: a missing build is the likeliest mistake, and the message says how to fix it.
    load_module(&opts.plugin.wasm)?;
    let configuration = opts.plugin.config_bytes()?;
    let gateway = Gateway::start(&opts.plugin, configuration, opts.listen, opts.upstream, Arc::new(print_log), true)?;
    eprintln!(
        "warden-gateway: listening on http://{} -> upstream {} ({} worker VMs, {})",
        gateway.addr(),
        opts.upstream,
        gateway.workers(),
        opts.plugin.wasm.display()
    );
    loop {
        std::thread::park();
    }
}

/// Whether a log line is the filter's decision record (`{"type":"warden.decision",…}`).
pub fn decision_record(message: &str) -> Option<serde_json::Value> {
    if !message.starts_with('{') || !message.contains("warden.decision") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(message).ok()?;
    (v.get("type")? == "warden.decision").then_some(v)
}

fn print_log(l: &LogEntry) {
    if decision_record(&l.message).is_some() {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", l.message);
        let _ = out.flush();
    } else {
        eprintln!("[{} vm{}] {}", level_name(l), l.vm, l.message);
    }
}

fn handle(vms: &VmPool, upstream: SocketAddr, req: Request, access_log: bool) -> Reply {
    let hosts: Vec<&str> = req.headers.iter().filter(|(k, _)| k == "host").map(|(_, v)| v.as_str()).collect();
    let authority = match hosts.as_slice() {
        [h] if !h.is_empty() => h.to_string(),
        [] => return Reply::Respond(Response::new(400, "text/plain", "missing Host header\n")),
        _ => {
            return Reply::Respond(Response::new(400, "text/plain", "exactly one non-empty Host header is required\n"))
        }
    };
    let line = format!("{} {}", req.method, req.target);
    let mut request = HttpRequest::new(&req.method, &req.target).authority(&authority).source(req.peer);
    request.destination_address = req.local;
    request.connection_id = Some(req.connection);
    request.headers = req.headers.into_iter().filter(|(k, _)| k != "host").collect();
    // The body goes to the filter in the pieces Envoy's codec would hand over (so a paused body can reach the buffer
    // limit: 413), not as one chunk.
    request.body_chunks = warden_host::socket_pieces(req.body.len());
    request.body = req.body;
    let exchange = match vms.run(request, Box::new(HttpUpstream { address: upstream })) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("warden-gateway: {line}: {e:#}");
            return Reply::Respond(Response::new(503, "text/plain", "warden-gateway: the filter VMs are gone\n"));
        }
    };
    if access_log {
        eprintln!("{}", access_line(&line, &authority, &exchange));
    }
    to_reply(exchange)
}

fn access_line(line: &str, authority: &str, x: &Exchange) -> String {
    let status = x.status.map_or("-".to_string(), |s| s.to_string());
    let how = match (&x.outcome, &x.local_reply, x.upstream_called) {
        (Outcome::Reset { details }, _, _) => format!("reset ({details})"),
        (Outcome::Hung { at }, _, _) => format!("hung at {at:?}"),
        (_, Some(r), _) if r.details.is_empty() => "local reply".to_string(),
        (_, Some(r), _) => format!("local reply ({})", r.details),
        (_, None, true) => "via upstream".to_string(),
        _ => "no upstream".to_string(),
    };
    format!("[access vm{}] \"{line}\" host={authority} {status} {how}", x.worker)
}

/// The downstream answer for a finished stream.
pub fn to_reply(x: Exchange) -> Reply {
    match (&x.outcome, x.status) {
        (Outcome::Reset { .. }, _) => Reply::Reset,
        (Outcome::Hung { at }, _) => Reply::Respond(Response::new(
            504,
            "text/plain",
            format!("warden-gateway: the filter paused this request ({at:?}) and nothing resumed it\n"),
        )),
        (Outcome::Completed, Some(status)) => Reply::Respond(Response { status, headers: x.headers, body: x.body }),
        (Outcome::Completed, None) => {
            Reply::Respond(Response::new(502, "text/plain", "warden-gateway: no response was produced\n"))
        }
    }
}
