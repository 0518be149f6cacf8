#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/src/targets.rs with libFuzzer, on the stable toolchain.
#
#   scripts/fuzz.sh                      # every target for FUZZ_SECONDS (default 12) each, from fuzz/corpus/<target>/
#   scripts/fuzz.sh --seconds 600 path_normalize      # one target, longer
#   scripts/fuzz.sh --run FILE           # replay one input through WARDEN_FUZZ_TARGET (a crash's reproduction)
#
# The driver (fuzz/libfuzzer, its own workspace) is built into target/fuzz with LLVM's sanitizer-coverage passes
# (-Cpasses=sancov-module and -Cllvm-args: stable rustc flags, no nightly, no cargo-fuzz; AddressSanitizer is left
# out, as it needs nightly and the code under test is safe Rust) for the host triple, so build scripts and proc macros
# stay uninstrumented. What a run finds is kept in target/fuzz/work/<target>/ (never in the committed corpus);
# a crash stops the script with exit 1, the input is in target/fuzz/artifacts/<target>/, and it becomes a
# regression test by copying it to fuzz/regressions/<target>/ (replayed by `cargo test -p warden-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-12}
run=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --run) run=$2; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$PWD/target/fuzz"
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags="$flags -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags="$flags -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
echo "== building the libFuzzer driver (fuzz/libfuzzer, target/fuzz, sanitizer coverage)"
RUSTFLAGS="$flags" cargo build --locked --release --manifest-path fuzz/libfuzzer/Cargo.toml --target "$host"
bin="$CARGO_TARGET_DIR/$host/release/warden-fuzz"

if [ -n "$run" ]; then
  exec "$bin" "$run"
fi
if [ ${#targets[@]} -eq 0 ]; then
  # Every target but those whose found inputs wait for a fix on another branch (fuzz/pending.txt).
  # (grep exits 1 when it selects nothing: an empty pending list is the normal case.)
  pending=$(grep -v '^#' fuzz/pending.txt | awk 'NF {print $1}' || true)
  mapfile -t targets < <(ls fuzz/corpus | grep -vxF -e "${pending:-\$no-pending\$}" || true)
  for p in $pending; do echo "== fuzz $p: not run (fuzz/pending.txt)"; done
fi

failed=0
for t in "${targets[@]}"; do
  work="$CARGO_TARGET_DIR/work/$t"
  artifacts="$CARGO_TARGET_DIR/artifacts/$t"
  mkdir -p "$work" "$artifacts"
  log="$CARGO_TARGET_DIR/$t.log"
  status=0
  WARDEN_FUZZ_TARGET="$t" "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ "$status" != 0 ]; then
    failed=1
    echo "== fuzz $t: FAILED (exit $status) after ${runs:-?} runs; the input:"
    ls -1 "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* 2>/dev/null | tail -1 || true
    grep -E "panicked|Warden|hidden|==[0-9]+==" "$log" | head -5 || true
    echo "   reproduce: WARDEN_FUZZ_TARGET=$t scripts/fuzz.sh --run FILE; keep it: cp FILE fuzz/regressions/$t/"
  else
    echo "== fuzz $t: ${runs:-?} runs in ${seconds} s, ${cov:-cov: ?} (corpus $(ls "$work" | wc -l) + $(ls "fuzz/corpus/$t" | wc -l) seeds)"
  fi
done
exit "$failed"
