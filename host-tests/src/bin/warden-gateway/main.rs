//! `warden-gateway`: try `warden.wasm` without Envoy. A development HTTP/1.1 proxy on loopback that runs the filter
//! in the wasmtime host on every request, a replay tool for recorded requests, and the scripted demo.
//!
//! ```text
//! warden-gateway serve  --wasm warden.wasm --config plugin.json --upstream 127.0.0.1:8081 [--listen 127.0.0.1:10000]
//!                       [--workers N] [--cluster name=127.0.0.1:PORT]... [--allow-on-headers-stop-iteration]
//!                       [--fail-open]
//! warden-gateway replay --wasm warden.wasm --config plugin.json [--workers N] < requests.jsonl > results.jsonl
//! warden-gateway demo   --control 127.0.0.1:PORT --upload-token-file FILE [--control-path /bundles/finance.jws]
//!                       [--warden target/debug/warden] [--wasm warden.wasm] [--examples policies/examples]
//!                       [--workers N]                (scripts/demo.sh starts `warden serve` and runs this)
//! ```
//!
//! Modules: [`args`] parses and validates the command line once; [`vms`] runs the plugin's worker VMs on an executor
//! thread; [`http`] is the small blocking HTTP/1.1 server and its message types; [`proxy`] joins them into the
//! gateway; [`replay`] runs recorded requests with a manual clock; [`tokens`] mints agent tokens; [`demo`] is the
//! scripted tour. The filter itself is the only judge of every request: the gateway adds no policy of its own.

mod args;
mod demo;
mod http;
mod proxy;
mod replay;
mod tokens;
mod vms;

use std::process::ExitCode;

use args::Command;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warden-gateway: {e:#}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{}", args::USAGE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(opts) => proxy::serve(opts).map(|()| ExitCode::SUCCESS),
        Command::Replay(opts) => replay::run(opts),
        Command::Demo(opts) => demo::run(opts),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
