#!/usr/bin/env bash
# Live throughput of the daemon (release build): lines/s sustained while both tailed logs are
# appended as fast as possible, and the line-to-/metrics delay (p50/p99) at a steady rate.
#
#   scripts/bench-live.sh [OPERATIONS]     (default 300000: ~630k lines)
#   SCIMWATCH_BIN=target/pgo/release/scimwatch scripts/bench-live.sh    (another build, e.g. PGO)
set -euo pipefail
cd "$(dirname "$0")/.."
OPS="${1:-300000}"
DATA="target/bench-data/$OPS"
BIN=${SCIMWATCH_BIN:-target/release/scimwatch}
cargo build --release --quiet
if [ ! -s "$DATA/gateway.log" ]; then
  mkdir -p "$DATA"
  "$BIN" generate --out "$DATA" --operations "$OPS" --users 200000 --mean-gap-secs 0.028 --seed 42
fi
python3 scripts/bench_live.py "$BIN" "$DATA/idp.jsonl" "$DATA/gateway.log" target/bench-live
