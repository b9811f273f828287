#!/usr/bin/env bash
# carpio's coverage-guided fuzzing (issue 11): cargo-fuzz + libFuzzer on stable rustc.
#
#   scripts/fuzz.sh [TARGET...]        run each target for FUZZ_SECS seconds (default 60)
#   scripts/fuzz.sh --list             the targets
#
# Targets (bodies in fuzz/src/lib.rs): classify, worker, carp, pfsync, config, ctl.
# Stable rustc has no -Zsanitizer, so the targets are built with `-s none` (libFuzzer's
# coverage instrumentation still works: it is plain LLVM sancov passes) and `-a` (debug
# assertions, so integer overflow panics instead of wrapping silently).
#
# Seeds: written fresh from tests/fixtures, ../shared/corpus and the protocol cores by
# tests/fuzz_smoke.rs (write_seed_corpus) into fuzz/seeds/TARGET; what libFuzzer learns goes to
# fuzz/corpus/TARGET (kept between runs, not committed). A crash leaves its input in
# fuzz/artifacts/TARGET/ and fails the script: copy it to fuzz/regressions/TARGET/NAME.bin,
# fix the bug, and `cargo test --test fuzz_smoke` replays it from then on.
#
# The tool is installed here (idempotent, quiet when present) because CI machines are fresh.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(classify worker carp pfsync config ctl)
CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECS=${FUZZ_SECS:-60}
FLAGS=(-s none -a)

if [ "${1:-}" = "--list" ]; then printf '%s\n' "${TARGETS[@]}"; exit 0; fi
[ $# -gt 0 ] && TARGETS=("$@")

bash scripts/deps.sh build
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

rm -rf fuzz/seeds
CARPIO_FUZZ_SEEDS="$PWD/fuzz/seeds" cargo test --quiet --test fuzz_smoke -- \
  --ignored --exact write_seed_corpus >/dev/null

cargo fuzz build "${FLAGS[@]}"

failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "fuzz.sh: $t for ${FUZZ_SECS}s" >&2
  # -rss_limit_mb: a leak or an unbounded allocation is a finding too.
  # -max_len: room for a batch of jumbo frames (worker) and long configurations.
  if ! cargo fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$FUZZ_SECS" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
      -print_final_stats=1 2> "fuzz/artifacts/$t.log"; then
    failed+=("$t")
    grep -E "^==|panicked|Test unit written|SUMMARY" "fuzz/artifacts/$t.log" >&2 || true
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|cov: " "fuzz/artifacts/$t.log" | tail -3 >&2 || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: ${#TARGETS[@]} targets, ${FUZZ_SECS}s each, no crash" >&2
