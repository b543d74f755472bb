#!/usr/bin/env bash
# Interleaved A/B timing of two scimwatch builds on the replay bench set: this VM varies
# 5–15% from run to run and drifts over a day, so only runs taken turn about compare.
#
#   scripts/bench-ab.sh BINARY_A BINARY_B [ROUNDS] [OPERATIONS]   (defaults: 5 rounds, 1000000)
#
# Each round runs `replay --parquet` with --threads 1 and 2 on each binary in turn, on the data
# set scripts/bench-replay.sh generates (run that first). Prints, per binary and thread count,
# the median wall, user and system time, and the range of peak RSS; and checks every run's
# report is the same as the first's.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS="${3:-5}"; OPS="${4:-1000000}"
DATA="target/bench-data/$OPS"
[ -s "$DATA/gateway.log" ] || { echo "no $DATA: run scripts/bench-replay.sh $OPS first" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cat "$DATA/idp.jsonl" "$DATA/gateway.log" > /dev/null
for round in $(seq "$ROUNDS"); do
  for threads in 1 2; do
    for side in A B; do
      bin=$A; [ "$side" = B ] && bin=$B
      rm -rf "$OUT/parquet"
      /usr/bin/time -f "$side $threads %e %U %S %M" -a -o "$OUT/times" "$bin" replay \
        --config examples/scimwatch.toml --idp "$DATA/idp.jsonl" --gateway "$DATA/gateway.log" \
        --format json --threads "$threads" --parquet "$OUT/parquet" > "$OUT/report.json" 2>/dev/null
      if [ -f "$OUT/first.json" ]; then
        cmp -s "$OUT/first.json" "$OUT/report.json" || { echo "$side --threads $threads: the report differs" >&2; exit 1; }
      else
        cp "$OUT/report.json" "$OUT/first.json"
      fi
    done
  done
done
python3 - "$OUT/times" "$A" "$B" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, threads, *values = line.split()
    runs[(side, threads)].append([float(v) for v in values])
names = {"A": sys.argv[2], "B": sys.argv[3]}
print(f"{'':4} {'threads':>7} {'wall s (range)':>20} {'user s':>7} {'sys s':>6} {'peak RSS MiB':>14}")
for (side, threads), v in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    med = lambda i: statistics.median(x[i] for x in v)
    rss = [x[3] / 1024 for x in v]
    wall = f"{med(0):.2f} ({min(x[0] for x in v):.2f}-{max(x[0] for x in v):.2f})"
    print(f"{side:4} {threads:>7} {wall:>20} {med(1):7.2f} {med(2):6.2f} {min(rss):7.0f}-{max(rss):.0f}")
print("A =", names["A"]); print("B =", names["B"])
PY
