#!/usr/bin/env bash
# A first start over a backlog of rotations with few descriptors: each source's log split into
# FILES rotations (app.log.N, oldest the highest, modification times an hour back and in
# order), the daemon started at `ulimit -n 64` (32 slots for log files), timed until every
# line is read (`scimwatch_lines_total`), then its counts checked against `replay` on the
# same files.
#
#   scripts/bench-catchup.sh [FILES]      (default 750 a source; 30,000 operations, 62k lines)
#   SCIMWATCH_BIN=... scripts/bench-catchup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES="${1:-750}"
BIN=${SCIMWATCH_BIN:-target/release/scimwatch}
[ -n "${SCIMWATCH_BIN:-}" ] || cargo build --release --quiet
GEN=target/bench-data/catchup
OUT=target/bench-catchup
PORT=${PORT:-9897}
if [ ! -s "$GEN/gateway.log" ]; then
  "$BIN" generate --out "$GEN" --operations 30000 --seed 7 >/dev/null
fi
rm -rf "$OUT" && mkdir -p "$OUT/logs"
now=$(date +%s)
split_into() { # log name
  local lines per
  lines=$(wc -l <"$GEN/$1")
  per=$(((lines + FILES - 1) / FILES))
  split -l "$per" -d -a 5 "$GEN/$1" "$OUT/logs/part.$1."
  local parts=("$OUT"/logs/part."$1".*) i=0
  for part in "${parts[@]}"; do
    local k=$((${#parts[@]} - i - 1)) name="$OUT/logs/$1"
    [ "$k" -eq 0 ] || name="$name.$k"
    mv "$part" "$name"
    touch -d "@$((now - 3600 + i))" "$name"
    i=$((i + 1))
  done
}
split_into idp.jsonl
split_into gateway.log
sed -e "s#logs/#$PWD/$OUT/logs/#; s#data_dir = \"data\"#data_dir = \"$PWD/$OUT/data\"#" \
  -e "s#127.0.0.1:9898#127.0.0.1:$PORT#" examples/scimwatch.toml >"$OUT/scimwatch.toml"
want=$(cat "$GEN/idp.jsonl" "$GEN/gateway.log" | wc -l)
(ulimit -n 64 && exec "$BIN" run --config "$OUT/scimwatch.toml" >"$OUT/daemon.log" 2>&1) &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
read_lines() {
  curl -s "127.0.0.1:$PORT/metrics" | awk '/^scimwatch_lines_total/ {s += $2} END {printf "%d", s}'
}
start=$(date +%s%N)
got=0
for _ in $(seq 1 1200); do
  got=$(read_lines)
  [ "$got" -ge "$want" ] && break
  sleep 0.1
done
took=$((($(date +%s%N) - start) / 1000000))
sleep 3 # settled: the logs are old, so the clock is past every join window
curl -s "127.0.0.1:$PORT/metrics" >"$OUT/metrics.txt"
kill $pid && wait $pid || true
"$BIN" replay --config "$OUT/scimwatch.toml" --format json --parquet "$OUT/replay-data" \
  >"$OUT/replay.json" 2>/dev/null
echo "$((FILES * 2)) files, $want lines: $got read in $((took / 1000)).$(printf %03d $((took % 1000))) s"
python3 - "$OUT/metrics.txt" "$OUT/replay.json" <<'PY'
import collections, json, re, sys
run = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r'scimwatch_operations_total\{stage="(\w+)",app="[^"]*",outcome="(\w+)",cause="[^"]*"\} (\S+)', line)
    if m:
        run[(m[1], m[2])] += int(float(m[3]))
report = json.load(open(sys.argv[2]))
same = True
for stage, counts in sorted(report["stages"].items()):
    want = {k: counts[k] for k in ("succeeded", "failed", "unconfirmed")}
    got = {k: run[(stage, k)] for k in want}
    print(f"{stage:7} run {got}  replay {want}")
    same &= got == want
unattributed = sum(v for (s, o), v in run.items() if o == "unattributed")
print(f"unattributed: run {unattributed}  replay {report['unattributed']}")
same &= unattributed == report["unattributed"]
print("same counts as replay" if same else "COUNTS DIFFER FROM REPLAY")
sys.exit(0 if same else 1)
PY
