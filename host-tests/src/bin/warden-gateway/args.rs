//! The command line: raw arguments parsed once into validated options (loopback-only addresses, worker counts).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

pub const USAGE: &str = "\
usage:
  warden-gateway serve  --config FILE --upstream 127.0.0.1:PORT [--wasm PATH] [--listen 127.0.0.1:PORT]
                        [--workers N] [--cluster NAME=127.0.0.1:PORT]... [--allow-on-headers-stop-iteration]
                        [--fail-open]
  warden-gateway replay --config FILE [--wasm PATH] [--workers N] [--cluster NAME=127.0.0.1:PORT]...
                        < requests.jsonl > results.jsonl
  warden-gateway demo   [--wasm PATH] [--examples DIR] [--workers N] [--print-config]

  --wasm     the filter (default: $WARDEN_WASM, else target/wasm32-wasip1/wasm/warden.wasm);
             build it with `cargo build -p warden-filter --target wasm32-wasip1 --profile wasm`
  --config   the plugin configuration JSON (what Envoy's `configuration` would hold)
  --listen   where the gateway accepts HTTP/1.1 (default 127.0.0.1:10000; loopback only)
  --upstream where allowed requests go (loopback only)
  --workers  worker VMs (default 2 for serve and demo, 1 for replay)
  --cluster  a cluster name for the filter's http calls, mapped to a loopback address
  --print-config  (demo) print the demo's plugin configuration (the example bundle signed inline with the TEST
             authority key) and exit: a configuration to try `serve` and `replay` with";

/// Default location of `warden.wasm`, relative to the workspace root.
pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/wasm/warden.wasm";
/// The command that builds it.
pub const BUILD_WASM: &str = "cargo build -p warden-filter --target wasm32-wasip1 --profile wasm";

pub enum Command {
    Help,
    Serve(ServeOptions),
    Replay(ReplayOptions),
    Demo(DemoOptions),
}

/// What every command needs to start the plugin.
#[derive(Clone, Debug)]
pub struct PluginOptions {
    pub wasm: PathBuf,
    pub config: Option<PathBuf>,
    pub workers: usize,
    pub clusters: Vec<(String, SocketAddr)>,
    pub allow_on_headers_stop_iteration: bool,
    pub fail_open: bool,
}

impl PluginOptions {
    /// The plugin configuration bytes from `--config`.
    pub fn config_bytes(&self) -> Result<Vec<u8>> {
        let path = self.config.as_ref().ok_or_else(|| anyhow!("--config FILE is required"))?;
        std::fs::read(path).with_context(|| format!("cannot read the plugin configuration {}", path.display()))
    }
}

pub struct ServeOptions {
    pub plugin: PluginOptions,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
}

pub struct ReplayOptions {
    pub plugin: PluginOptions,
}

pub struct DemoOptions {
    pub wasm: PathBuf,
    pub examples: Option<PathBuf>,
    pub workers: usize,
    pub print_config: bool,
}

/// Parses `argv` (without the program name).
pub fn parse(argv: &[String]) -> Result<Command> {
    let Some((sub, rest)) = argv.split_first() else {
        bail!("no command given");
    };
    let command = sub.as_str();
    if matches!(command, "help" | "-h" | "--help") {
        return Ok(Command::Help);
    }
    if !matches!(command, "serve" | "replay" | "demo") {
        bail!("unknown command `{sub}` (expected serve, replay or demo)");
    }
    let mut wasm = None;
    let mut config = None;
    let mut workers = None;
    let mut clusters = Vec::new();
    let mut allow_stop = false;
    let mut fail_open = false;
    let mut listen = None;
    let mut upstream = None;
    let mut examples = None;
    let mut print_config = false;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        let takes_value = !matches!(name, "--allow-on-headers-stop-iteration" | "--fail-open" | "--print-config");
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => it.next().cloned().ok_or_else(|| anyhow!("{name} needs a value"))?,
            }
        } else {
            if inline.is_some() {
                bail!("{name} takes no value");
            }
            String::new()
        };
        let allowed: &[&str] = match command {
            "serve" => &[
                "--wasm",
                "--config",
                "--workers",
                "--cluster",
                "--allow-on-headers-stop-iteration",
                "--fail-open",
                "--listen",
                "--upstream",
            ],
            "replay" => {
                &["--wasm", "--config", "--workers", "--cluster", "--allow-on-headers-stop-iteration", "--fail-open"]
            }
            _ => &["--wasm", "--workers", "--examples", "--print-config"],
        };
        if !allowed.contains(&name) {
            bail!("`{command}` does not take {name}");
        }
        match name {
            "--wasm" => wasm = Some(PathBuf::from(value)),
            "--config" => config = Some(PathBuf::from(value)),
            "--workers" => {
                let n: usize =
                    value.parse().map_err(|_| anyhow!("--workers {value}: expected a number from 1 to 64"))?;
                if !(1..=64).contains(&n) {
                    bail!("--workers {value}: expected a number from 1 to 64");
                }
                workers = Some(n);
            }
            "--cluster" => {
                let (n, a) =
                    value.split_once('=').ok_or_else(|| anyhow!("--cluster {value}: expected NAME=127.0.0.1:PORT"))?;
                if n.is_empty() {
                    bail!("--cluster {value}: the cluster name is empty");
                }
                clusters.push((n.to_string(), loopback("--cluster", a)?));
            }
            "--allow-on-headers-stop-iteration" => allow_stop = true,
            "--fail-open" => fail_open = true,
            "--listen" => listen = Some(loopback("--listen", &value)?),
            "--upstream" => upstream = Some(loopback("--upstream", &value)?),
            "--print-config" => print_config = true,
            _ => examples = Some(PathBuf::from(value)),
        }
    }
    let wasm = wasm.unwrap_or_else(default_wasm);
    let plugin = |default_workers: usize| PluginOptions {
        wasm: wasm.clone(),
        config: config.clone(),
        workers: workers.unwrap_or(default_workers),
        clusters: clusters.clone(),
        allow_on_headers_stop_iteration: allow_stop,
        fail_open,
    };
    Ok(match command {
        "serve" => {
            if config.is_none() {
                bail!("serve needs --config FILE");
            }
            Command::Serve(ServeOptions {
                plugin: plugin(2),
                listen: listen.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 10000))),
                upstream: upstream.ok_or_else(|| anyhow!("serve needs --upstream 127.0.0.1:PORT"))?,
            })
        }
        "replay" => {
            if config.is_none() {
                bail!("replay needs --config FILE");
            }
            Command::Replay(ReplayOptions { plugin: plugin(1) })
        }
        _ => Command::Demo(DemoOptions { wasm, examples, workers: workers.unwrap_or(2), print_config }),
    })
}

/// `$WARDEN_WASM`, else the workspace's build output.
pub fn default_wasm() -> PathBuf {
    match std::env::var_os("WARDEN_WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_WASM),
    }
}

/// A loopback socket address (`localhost:PORT` is read as `127.0.0.1:PORT`); anything else is refused.
pub fn loopback(flag: &str, value: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = match value.strip_prefix("localhost:") {
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| anyhow!("{flag} {value}: bad port"))?;
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        }
        None => value.parse().map_err(|_| anyhow!("{flag} {value}: expected an address such as 127.0.0.1:8080"))?,
    };
    if !addr.ip().is_loopback() {
        bail!(
            "{flag} {value}: not a loopback address; warden-gateway is a development gateway and only talks to \
             127.0.0.0/8 or [::1] (put Envoy in front of anything else)"
        );
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn err(s: &str) -> String {
        match parse(&args(s)) {
            Ok(_) => panic!("accepted {s}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn serve_options() {
        let Command::Serve(o) = parse(&args(
            "serve --config c.json --upstream 127.0.0.1:9 --listen=localhost:0 --workers 3 --cluster control=127.0.0.1:7 --fail-open",
        ))
        .unwrap() else {
            panic!("not serve")
        };
        assert_eq!(o.upstream, "127.0.0.1:9".parse().unwrap());
        assert_eq!(o.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(o.plugin.workers, 3);
        assert_eq!(o.plugin.clusters, vec![("control".to_string(), "127.0.0.1:7".parse().unwrap())]);
        assert!(o.plugin.fail_open);
        assert!(!o.plugin.allow_on_headers_stop_iteration);
    }

    #[test]
    fn refusals() {
        assert!(err("serve --config c --upstream 10.0.0.1:80").contains("not a loopback address"));
        assert!(err("serve --config c --upstream 127.0.0.1:80 --listen 0.0.0.0:80").contains("not a loopback"));
        assert!(err("serve --config c --upstream 127.0.0.1:80 --cluster x=8.8.8.8:53").contains("not a loopback"));
        assert!(err("serve --config c").contains("serve needs --upstream"));
        assert!(err("serve --upstream 127.0.0.1:1").contains("serve needs --config"));
        assert!(err("replay --config c --listen 127.0.0.1:1").contains("`replay` does not take --listen"));
        assert!(err("replay --config c --workers 0").contains("--workers 0: expected a number"));
        assert!(err("replay --config").contains("--config needs a value"));
        assert!(err("frobnicate").contains("unknown command"));
        assert!(err("").contains("no command"));
    }
}
