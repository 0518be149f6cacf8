"""The Envoy section of benches/README.md, from `<target>/criterion/warden-envoy.json` (written by the `envoy` bench,
benches/envoy/main.rs, under `cargo bench`).

Per worker count: each mode's req/s, p50 / p99 latency and Envoy CPU per request; the CPU each filter chain adds over
bare Envoy on the same route and request; the ratios of issue 17's targets, marked met / missed; and the host calls
of one request of each wasm mode. Imported by report.py; `python3 benches/envoy_report.py` prints the section alone,
`--write` replaces only it inside the generated part of README.md (after a run of the Envoy bench alone, the
criterion tables stay as they are).
"""

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FILE = "warden-envoy.json"

# (target id, text, numerator mode(s), denominator mode, limit). The figure is added CPU over bare, both from one run
# and one worker count; with several numerator modes the largest ratio is the figure.
TARGETS = [
    ("cached_vs_floor", "cached allowed request ≤ 2× the no-op wasm filter's added CPU",
     ["warden_allow"], "wasm_floor", 2.0),
    ("cached_vs_native", "cached allowed request ≤ 2× native `jwt_authn` + `rbac` with `jwt_cache_config`",
     ["warden_allow"], "jwt_rbac_cached", 2.0),
    ("cold_vs_native", "cold EdDSA token ≤ native `jwt_authn` + `rbac` without cache (1×)",
     ["warden_fresh_eddsa"], "jwt_rbac", 1.0),
    ("mcp_vs_cached", "MCP `tools/call` 2 KB ≤ 2× the cached GET (slower of the two "
     "`allow_on_headers_stop_iteration` modes)", ["warden_mcp_call_hold", "warden_mcp_call_stream"], "warden_allow",
     2.0),
]


def load(criterion):
    p = Path(criterion) / FILE
    return json.loads(p.read_text()) if p.exists() else None


def fmt_us(us):
    if us is None:
        return "—"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} µs"


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}×"


def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**missed**"


def added(rows, modes, mode_id, workers):
    """Envoy CPU µs per request that `mode_id` adds over its baseline (bare Envoy, same route and request)."""
    r = rows.get((mode_id, workers))
    base = rows.get((modes[mode_id]["baseline"], workers)) if mode_id in modes else None
    if not r or not base:
        return None
    return r["cpu_us_per_request"] - base["cpu_us_per_request"]


HEADING = "### Envoy (`benches/envoy/`: real Envoy 1.40 with V8, driven by wrk)"


def section(criterion):
    data = load(criterion)
    out = []
    add = out.append
    add(HEADING)
    add("")
    if not data:
        add(f"No `{FILE}` yet: run `cargo bench -p warden-benches --bench envoy` (or `python3 benches/report.py "
            "--run --write`).")
        add("")
        return "\n".join(out)
    modes = {m["id"]: m for m in data["modes"]}
    rows = {(r["mode"], r["workers"]): r for r in data["rows"]}
    s = data["settings"]
    loads = [r["load1"] for r in data["rows"]]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(data["started_unix"]))
    envoy = re.search(r"version: (\S+)", data["envoy"])
    wrk = re.search(r"wrk (\S+)", data["wrk"])
    add(f"- Run {started}, {data['wall_seconds'] / 60:.1f} min: Envoy `{envoy[1] if envoy else data['envoy']}`, wrk "
        f"`{wrk[1] if wrk else data['wrk']}`, `cargo bench -p warden-benches --bench envoy`.")
    add(f"- Each mode: its own Envoy (`--concurrency` = workers, `--disable-hot-restart`, no access log), one request "
        f"checked, a {s['warmup']} s wrk warm-up, then a {s['seconds']} s window: wrk with {s['connections']} "
        f"connections and one thread per Envoy worker. Every response of the window is checked (its status through "
        f"wrk and Envoy's counters, Warden's decision and reason through its counters).")
    add("- Envoy CPU per request: utime + stime of the Envoy process (`/proc/PID/stat`, all threads) over the window, "
        "divided by the requests Envoy received in it. *Added*: minus bare Envoy on the same route and request "
        "(`direct_response` for GETs; for MCP, bare Envoy proxying the same request to the upstream Envoy, a second "
        "process that is not measured).")
    if loads:
        add(f"- Load average (1 min) at the end of each window: median {statistics.median(loads):.1f}, max "
            f"{max(loads):.1f}" + (" — **the machine was busy**: figures are noisy, ratios within the run still "
                                   "compare" if statistics.median(loads) > 1.5 else "") + ".")
    add("")
    workers = sorted({r["workers"] for r in data["rows"]})
    for w in workers:
        add(f"{w} Envoy worker{'s' if w > 1 else ''}:")
        add("")
        add("| mode | req/s | p50 | p99 | Envoy CPU µs/req | added over bare | added / floor's |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        floor = added(rows, modes, "wasm_floor", w)
        for m in data["modes"]:
            r = rows.get((m["id"], w))
            if not r:
                continue
            a = added(rows, modes, m["id"], w)
            is_base = m["baseline"] == m["id"]
            label = m["label"]
            if r.get("token_pool"):
                label += f" ({r['token_pool']:,} tokens" + (
                    f", **{r['tokens_reused']:,} requests re-used one**)" if r["tokens_reused"] else ", none re-used)")
            add(f"| {label} | {r['rps']:,.0f} | {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} "
                f"| {r['cpu_us_per_request']:.1f} | {'–' if is_base else fmt_us(a)} "
                f"| {'–' if is_base or a is None or not floor else fmt_ratio(a / floor)} |")
        add("")
    add("Targets (issue 17; ratios of added CPU per request, both from this run):")
    add("")
    add("| target | workers | figure | verdict |")
    add("|---|---:|---:|---|")
    for _, text, nums, den, limit in TARGETS:
        for w in workers:
            d = added(rows, modes, den, w)
            ratios = [added(rows, modes, n, w) / d for n in nums if added(rows, modes, n, w) is not None and d]
            r = max(ratios) if len(ratios) == len(nums) else None
            add(f"| {text} | {w} | {fmt_ratio(r)} | {verdict(None if r is None else r <= limit)} |")
    add("")
    calls = data.get("host_calls", {})
    if calls:
        cols = [m["id"] for m in data["modes"] if m["id"] in calls]
        names = sorted({n for c in calls.values() for n in c["calls"]})
        add("Host calls of one request (counted in `warden-host` with `CompiledModule::counting`, same module, "
            "configuration and request; the guest makes the same calls in Envoy):")
        add("")
        add("| import | " + " | ".join(f"`{c}`" for c in cols) + " |")
        add("|---|" + "---:|" * len(cols))
        for n in names:
            short = n.split(".", 1)[1] if n.startswith("env.") else n
            add(f"| `{short}` | " + " | ".join(str(calls[c]["calls"].get(n, "")) for c in cols) + " |")
        add("| **all imports** | " + " | ".join(f"**{calls[c]['total']}**" for c in cols) + " |")
        add("| guest callbacks the host made | " + " | ".join(str(calls[c]["callbacks"]) for c in cols) + " |")
        add("")
    return "\n".join(out)


def write(text):
    """Replaces the Envoy section inside report.py's generated part of README.md (appends it there if absent)."""
    import report  # the markers and the README's path; imported here, report.py imports this module

    readme = report.README.read_text()
    if report.BEGIN not in readme or report.END not in readme:
        raise SystemExit(f"{report.README}: markers not found")
    head, rest = readme.split(report.BEGIN, 1)
    generated, tail = rest.split(report.END, 1)
    generated = generated.split(HEADING, 1)[0].rstrip("\n") + "\n\n"
    report.README.write_text(head + report.BEGIN + generated + text + "\n" + report.END + tail)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="replace the Envoy section of benches/README.md")
    args = ap.parse_args()
    text = section(TARGET / "criterion")
    print(text)
    if args.write:
        write(text)
