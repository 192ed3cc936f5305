#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded number of executions and time,
# one after the other, and prints executions, executions/s and crashes per target.
#
#   scripts/fuzz.sh                          # every target, 10 000 000 runs or 30 min each
#   scripts/fuzz.sh --runs 100000 --time 60 tracker_request tracker_response
#   nice -n 19 scripts/fuzz.sh               # on a shared machine
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Builds every target
# once with `cargo +nightly fuzz build` (release, debug assertions, AddressSanitizer unless
# --sanitizer none) into
# $FUZZ_TARGET_DIR (default fuzz/target). Corpora live in fuzz/corpus/TARGET, crash inputs
# in fuzz/artifacts/TARGET (both git-ignored). Not part of scripts/test.sh: it is slow.
#
# Exit status: 0 when every target ran without a crash; 1 on a crash (the reproducer's path
# is printed), 2 on a usage or build error.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUNS=10000000
TIME=1800
TARGET_DIR=${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}
TARGETS=()
BUILD=1
SANITIZER=address

usage() {
    sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    cat <<EOF
Options:
  --runs N      executions per target (libFuzzer -runs; default $RUNS)
  --time SECS   wall-clock bound per target (libFuzzer -max_total_time; default $TIME)
  --sanitizer S address (default) or none: none runs 2-3 x faster on a busy machine;
                debug assertions (overflow checks) are on either way
  --no-build    run the binaries of the last build as they are
  --list        print the targets and exit
EOF
}

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
    --time) TIME=${2:?--time needs seconds}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --sanitizer) SANITIZER=${2:?--sanitizer needs address or none}; shift 2 ;;
    --list) cargo +nightly fuzz list; exit 0 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) TARGETS+=("$1"); shift ;;
    esac
done
[[ $RUNS =~ ^[0-9]+$ ]] || die "--runs wants a whole number, not '$RUNS'"
[[ $TIME =~ ^[0-9]+$ ]] || die "--time wants whole seconds, not '$TIME'"

command -v cargo-fuzz >/dev/null || die "cargo-fuzz is missing: cargo install cargo-fuzz"
rustup run nightly rustc --version >/dev/null 2>&1 || die "no nightly toolchain: rustup toolchain install nightly"

ALL=$(cargo +nightly fuzz list) || die "cargo fuzz list failed"
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS <<<"$ALL"
fi
for t in "${TARGETS[@]}"; do
    grep -qx "$t" <<<"$ALL" || die "no fuzz target '$t' (have: $(echo $ALL))"
done

if [ "$BUILD" = 1 ]; then
    echo "==> building every target into $TARGET_DIR"
    cargo +nightly fuzz build --target-dir "$TARGET_DIR" --sanitizer "$SANITIZER" \
        --debug-assertions || die "cargo fuzz build failed"
fi
# Run the built binaries directly: `cargo fuzz run` would rebuild when sources change while
# this script runs, so every target tests the code of this one build.
HOST=$(rustc +nightly -vV | sed -n 's/^host: //p')
BINDIR=$TARGET_DIR/$HOST/release

LOGDIR=$(mktemp -d /tmp/ringswarm-fuzz.XXXXXX)
SUMMARY=()
CRASHED=0
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log=$LOGDIR/$t.log
    echo "==> $t: up to $RUNS runs or ${TIME}s (log $log)"
    start=$(date +%s)
    [ -x "$BINDIR/$t" ] || die "no binary $BINDIR/$t after the build"
    "$BINDIR/$t" -runs="$RUNS" -max_total_time="$TIME" -print_final_stats=1 \
        -rss_limit_mb=2048 -timeout=10 -artifact_prefix="fuzz/artifacts/$t/" \
        "fuzz/corpus/$t" >"$log" 2>&1
    status=$?
    secs=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    crashes=0
    if [ "$status" -ne 0 ]; then
        crashes=1
        CRASHED=1
        art=$(grep -o 'Test unit written to [^ ]*' "$log" | awk '{print $NF}' | tail -1)
        echo "!! $t exited with status $status; reproducer: ${art:-see $log}" >&2
        tail -40 "$log" >&2
    fi
    line=$(printf '%-16s %12s execs %9s exec/s %6ss %s crash(es)' "$t" "${execs:-?}" "${rate:-?}" "$secs" "$crashes")
    echo "$line"
    SUMMARY+=("$line")
done

echo
echo "==> summary ($(date -u +%FT%TZ), runs=$RUNS, time=${TIME}s, logs in $LOGDIR)"
printf '%s\n' "${SUMMARY[@]}"
exit "$CRASHED"
