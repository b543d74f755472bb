#!/usr/bin/env bash
# A profile-guided release build of scimwatch: target/pgo/release/scimwatch.
#
#   scripts/build-pgo.sh
#   PGO_TRAIN_CONFIG=/etc/scimwatch/scimwatch.toml scripts/build-pgo.sh   (also your own logs)
#
# 1. Builds an instrumented release binary (`-Cprofile-generate`, target/pgo-gen).
# 2. Trains it on generated traffic that is not the bench set (another seed and size):
#    `replay --parquet` on one thread and on two, the bundled example logs, every vendor
#    preset's fixture lines (tests/fixtures/vendors), the logs of PGO_TRAIN_CONFIG, and the live
#    daemon tailing appended logs (scripts/bench_live.py, stopped with SIGTERM so the profile
#    is written). Code no run touches is laid out as cold, so the daemon's own paths (tailing,
#    /metrics) are trained as well as replay's.
# 3. Merges the profile (llvm-profdata from rustup's `llvm-tools`, installed if missing) and
#    builds again with `-Cprofile-use` (target/pgo).
#
# The answers are the plain build's: the same source, laid out by what runs hot. Only the C
# parts (zstd, mimalloc) are compiled as in a plain build. Takes two LTO builds, ~13 minutes
# on 2 cores (~6 when the instrumented one is kept from an earlier run). README "Performance"
# has what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  command -v rustup >/dev/null || { echo "llvm-profdata not found and no rustup to install llvm-tools" >&2; exit 1; }
  rustup component add llvm-tools
fi

WORK="$PWD/target/pgo-work"
rm -rf "$WORK" && mkdir -p "$WORK"
PROFILES="$WORK/profiles"

echo "1/3 instrumented build (target/pgo-gen)"
RUSTFLAGS="-Cprofile-generate=$PROFILES" cargo build --release --quiet --target-dir target/pgo-gen
GEN=target/pgo-gen/release/scimwatch

echo "2/3 training"
"$GEN" generate --out "$WORK/data" --operations 200000 --users 100000 --mean-gap-secs 0.028 \
  --seed 7 > /dev/null
rm -rf "$PROFILES" # the build scripts' and the generator's runs: not what is being trained
for threads in 1 2; do
  "$GEN" replay --config examples/scimwatch.toml --idp "$WORK/data/idp.jsonl" \
    --gateway "$WORK/data/gateway.log" --format json --threads "$threads" \
    --parquet "$WORK/parquet-$threads" > /dev/null 2>&1
done
"$GEN" replay --config examples/scimwatch.toml > /dev/null
# Every vendor preset's parser, on its fixture lines, so none is left untouched (and laid out
# as cold); and the logs of a config of your own, if given, to train on your vendors' shapes.
configs=(tests/fixtures/vendors/*/scimwatch.toml)
if [ -n "${PGO_TRAIN_CONFIG:-}" ]; then configs+=("$PGO_TRAIN_CONFIG"); fi
for config in "${configs[@]}"; do
  "$GEN" replay --config "$config" > /dev/null
done
python3 scripts/bench_live.py "$GEN" "$WORK/data/idp.jsonl" "$WORK/data/gateway.log" "$WORK/live" \
  > "$WORK/live.txt"
"$PROFDATA" merge -o "$WORK/scimwatch.profdata" "$PROFILES"

echo "3/3 optimised build (target/pgo)"
# From scratch: cargo does not track the profile's contents, only RUSTFLAGS, so a kept build
# would not see a new profile.
rm -rf target/pgo
RUSTFLAGS="-Cprofile-use=$WORK/scimwatch.profdata" cargo build --release --quiet --target-dir target/pgo
echo "built target/pgo/release/scimwatch"
