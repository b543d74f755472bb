#!/usr/bin/env bash
# The replay throughput harness: scimwatch vs. DuckDB on the same logs, side by side.
#
#   scripts/bench-replay.sh [OPERATIONS]     (default 1000000: ~1M IdP events, ~1.05M gateway lines)
#   PGO=1 scripts/bench-replay.sh            (also the profile-guided build, scripts/build-pgo.sh)
#
# Generates a deterministic data set with `scimwatch generate` (stage mix 60/25/15, 20 apps,
# 200k users, 3% IdP-only, 2% gateway-only, 5% retried, realistic statuses and lags) into
# target/bench-data, then times `scimwatch replay --parquet` (one thread and two) and DuckDB
# from PyPI (2 threads, the target's terms, and 1 thread, like for like: read both files, join
# on the ID within the join window taking the last attempt, classify, per-stage rates, leaver
# latency quantiles, zstd Parquet) under /usr/bin/time, and prints wall time, MB/s, events/s,
# peak RSS and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

OPS="${1:-1000000}"
DATA="target/bench-data/$OPS"
BIN=target/release/scimwatch
VENV="${SCIMWATCH_TEST_VENV:-$PWD/.venv}"

cargo build --release --quiet
PGO_BIN=target/pgo/release/scimwatch
if [ "${PGO:-0}" = 1 ]; then
  bash scripts/build-pgo.sh
fi
if ! "$VENV/bin/python" -c 'import duckdb' >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'duckdb==2.0.1'
fi
if [ ! -s "$DATA/gateway.log" ]; then
  mkdir -p "$DATA"
  # ~8 hours of traffic at 35 operations/s; --no-trouble keeps the statuses realistic, not an incident.
  "$BIN" generate --out "$DATA" --operations "$OPS" --users 200000 --mean-gap-secs 0.028 --seed 42
fi
IDP="$DATA/idp.jsonl"
GW="$DATA/gateway.log"
BYTES=$(( $(stat -c %s "$IDP") + $(stat -c %s "$GW") ))
LINES=$(( $(wc -l < "$IDP") + $(wc -l < "$GW") ))
echo "data: $IDP + $GW: $LINES lines, $((BYTES / 1000000)) MB"

# Warm the page cache so both read from memory.
cat "$IDP" "$GW" > /dev/null

# Wall seconds, peak RSS (KiB) and CPU seconds (user, system) from GNU time.
measure() {
  local log=$1; shift
  /usr/bin/time -f '%e %M %U %S' -o "$log" "$@"
}

# The machine the figures belong to (a VM may name its CPU only "Xeon": its caches say more).
cache() { lscpu 2>/dev/null | awk -F: -v k="$1" '$1 == k {gsub(/^ +/, "", $2); print $2}'; }
echo "machine: $(cache 'Model name'), $(nproc) cores, L2 $(cache 'L2 cache'), L3 $(cache 'L3 cache')," \
  "$(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr); $(rustc --version | cut -d' ' -f1-2);" \
  "scimwatch $(git rev-parse --short HEAD 2>/dev/null || echo '(no git)')"

OUT=target/bench-out
rm -rf "$OUT" && mkdir -p "$OUT"
# One thread (the target's terms), then two: reading, parsing and writing Parquet on one,
# the engine on the other: the two threads DuckDB gets. With PGO=1, the same for the
# profile-guided build, whose report must be the plain build's.
BUILDS=("scimwatch:$BIN")
[ "${PGO:-0}" = 1 ] && BUILDS+=("pgo:$PGO_BIN")
for build in "${BUILDS[@]}"; do
  name=${build%%:*} bin=${build#*:}
  for threads in 1 2; do
    measure "$OUT/$name-$threads.time" "$bin" replay --config examples/scimwatch.toml --idp "$IDP" \
      --gateway "$GW" --format json --threads "$threads" --parquet "$OUT/$name-parquet-$threads" \
      > "$OUT/$name-$threads.json"
    cmp -s "$OUT/scimwatch-1.json" "$OUT/$name-$threads.json" \
      || { echo "$name on $threads threads: the report differs" >&2; exit 1; }
  done
done
cp "$OUT/scimwatch-1.json" "$OUT/scimwatch.json"
measure "$OUT/duckdb.time" "$VENV/bin/python" scripts/bench_duckdb.py "$IDP" "$GW" "$OUT/duckdb.parquet" 2 \
  > "$OUT/duckdb.json"
# DuckDB held to one thread as well: the like-for-like figure beside the target's.
measure "$OUT/duckdb-1.time" "$VENV/bin/python" scripts/bench_duckdb.py "$IDP" "$GW" "$OUT/duckdb-1.parquet" 1 \
  > "$OUT/duckdb-1.json"

python3 - "$OUT" "$BYTES" "$LINES" <<'EOF'
import json, os, sys
out, size, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = []
names = ["scimwatch-1", "scimwatch-2"]
names += [n for n in ["pgo-1", "pgo-2"] if os.path.exists(f"{out}/{n}.time")]
for name in names + ["duckdb", "duckdb-1"]:
    wall, rss, user, system = open(f"{out}/{name}.time").read().split()[-4:]
    rows.append((name, float(wall), int(rss) / 1024, float(user) + float(system)))
print()
print(f"| {'engine':<33} | {'wall s':>7} | {'CPU s':>6} | {'MB/s':>7} | {'lines/s':>10} | {'peak RSS MiB':>12} |")
print(f"|{'-'*35}|{'-'*9}|{'-'*8}|{'-'*9}|{'-'*12}|{'-'*14}|")
labels = {
    "scimwatch-1": "scimwatch replay (1 thread)",
    "scimwatch-2": "scimwatch replay (2 threads)",
    "pgo-1": "scimwatch, PGO build (1 thread)",
    "pgo-2": "scimwatch, PGO build (2 threads)",
    "duckdb": "DuckDB 2.0.1 (2 threads)",
    "duckdb-1": "DuckDB 2.0.1 (1 thread)",
}
for name, wall, rss, cpu in rows:
    print(f"| {labels[name]:<33} | {wall:7.2f} | {cpu:6.2f} | {size / 1e6 / wall:7.1f} | {lines / wall:10,.0f} | {rss:12.0f} |")
wall = {name: w for name, w, _, _ in rows}
duck, duck1 = wall["duckdb"], wall["duckdb-1"]
print()
for build, label in [("scimwatch", "scimwatch"), ("pgo", "The PGO build")]:
    if f"{build}-1" in wall:
        one, two = wall[f"{build}-1"], wall[f"{build}-2"]
        print(f"{label} on 1 thread is {duck / one:.2f}x DuckDB's speed (2 threads) on the same work; "
              f"on 2 threads, {duck / two:.2f}x. Like for like, on 1 thread: {duck1 / one:.2f}x DuckDB on 1 thread.")
report = json.load(open(f"{out}/scimwatch.json"))
duck = json.load(open(f"{out}/duckdb.json"))
print("\nsanity (operations per stage, scimwatch vs DuckDB):")
for stage in ["joiner", "mover", "leaver"]:
    s = report["stages"][stage]
    d = duck["stages"].get(stage, {})
    print(f"  {stage:<7} {s['operations']:>9} {d.get('operations', 0):>9}   success {s['success_rate']:.4f} {d.get('rate') or 0:.4f}")
print(f"  leavers: {report['leavers']['episodes']} episodes vs {duck['leavers']['episodes']}; "
      f"p50/p95/p99 latency {report['leavers']['latency_seconds']['p50']}/{report['leavers']['latency_seconds']['p95']}/"
      f"{report['leavers']['latency_seconds']['p99']} s vs {[round(x, 1) for x in duck['leavers']['latency_p50_p95_p99']]}")
EOF
