#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian, apt-get, only when missing),
# then format check, clippy (warnings are errors), and every test in the workspace.
#
#   scripts/test.sh             # what CI runs (.ci/run)
#   SKIP_INSTALL=1 scripts/test.sh   # never touch packages; interop tests then skip
#                                    # (or fail, under CI=true) when a tool is missing
#
# Exit status: non-zero if any step fails. Works as root with no stdin (CI=true); as a normal
# user it uses sudo for apt-get when sudo works without a password, else it only warns.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-$([ -t 1 ] && echo auto || echo never)}"
# Hard limit for the test run itself (the build is not counted); a hung test cannot stall CI.
TEST_TIMEOUT="${TEST_TIMEOUT:-600}"

step() { printf '\n==> %s\n' "$*"; }
t_start=$(date +%s)

# ---------------------------------------------------------------------------------------
# 1. Packages. Each entry: "package|command that succeeds when it is present".
PKGS=(
  "python3-libtorrent|/usr/bin/python3 -c 'import libtorrent'"
  "transmission-daemon|command -v transmission-daemon"
  "aria2|command -v aria2c"
  "mktorrent|command -v mktorrent"
  "rsync|command -v rsync"
  "openssh-server|test -x /usr/sbin/sshd"
  "openssh-client|command -v ssh-keygen && command -v scp"
  "iperf3|command -v iperf3"
  "util-linux|command -v fincore"
  "time|test -x /usr/bin/time"
  "iproute2|command -v ip"
  "ethtool|command -v ethtool || test -x /usr/sbin/ethtool"
  "systemd|command -v systemd-analyze"
  "chromium|command -v chromium"
)

install_missing() {
  local missing=() entry pkg check
  for entry in "${PKGS[@]}"; do
    pkg=${entry%%|*}
    check=${entry#*|}
    if ! bash -c "$check" >/dev/null 2>&1; then missing+=("$pkg"); fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "all test tools present"
    return 0
  fi
  echo "missing: ${missing[*]}"
  if [ -n "${SKIP_INSTALL:-}" ]; then
    echo "SKIP_INSTALL is set: not installing; tests that need these will skip (or fail under CI=true)"
    return 0
  fi
  local SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
      echo "warning: not root and no password-less sudo: cannot install ${missing[*]}" >&2
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    echo "warning: no apt-get here: install ${missing[*]} by hand" >&2
    return 0
  fi
  # Keep package scripts from starting system daemons (sshd on :22, transmission on all
  # interfaces): a policy-rc.d that refuses, removed again afterwards if we created it.
  local policy=/usr/sbin/policy-rc.d created_policy=""
  if [ ! -e "$policy" ]; then
    "${SUDO[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    created_policy=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || rc=$?
  if [ $rc -eq 0 ]; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${missing[@]}" </dev/null || rc=$?
  fi
  if [ -n "$created_policy" ]; then "${SUDO[@]}" rm -f "$policy"; fi
  if [ $rc -ne 0 ]; then
    echo "error: apt-get failed ($rc) installing: ${missing[*]}" >&2
    return $rc
  fi
}

step "test tools"
install_missing

# ---------------------------------------------------------------------------------------
# 2. Rust toolchain pieces.
for sub in fmt clippy; do
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    echo "error: cargo $sub is missing (rustup component add ${sub/fmt/rustfmt})" >&2
    exit 1
  fi
done

step "scripts: syntax"
for f in scripts/*.sh .ci/run perf/pagecache; do
  if [ -f "$f" ]; then bash -n "$f"; fi
done
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3 || true)
if [ -n "$PY" ]; then
  for f in scripts/*.py perf/loopback; do
    if [ -f "$f" ]; then "$PY" -c 'import ast,sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$f"; fi
  done
fi
echo ok

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# ---------------------------------------------------------------------------------------
# 3. Tests. nextest when present (one summary line at the end), else cargo test.
# Property tests draw the same cases on every run here, so a result does not depend on
# luck; set PROPTEST_RNG_SEED (or unset it: `PROPTEST_RNG_SEED= scripts/test.sh`) to
# explore other cases. Failures found are kept in *.proptest-regressions and replayed.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED-20261206}"
if cargo nextest --version >/dev/null 2>&1; then
  NEXTEST_ARGS=(--workspace)
  # Our per-test time limits, unless the workspace has its own nextest config.
  if [ ! -f .config/nextest.toml ]; then NEXTEST_ARGS+=(--config-file scripts/nextest.toml); fi

  step "build tests"
  cargo nextest run "${NEXTEST_ARGS[@]}" --no-run

  step "doc tests"
  # nextest does not run doc tests; the workspace has library crates that may have some.
  timeout --kill-after=30 "$TEST_TIMEOUT" cargo test --workspace --doc

  step "cargo nextest run --workspace (limit ${TEST_TIMEOUT}s)"
  set +e
  timeout --kill-after=30 "$TEST_TIMEOUT" cargo nextest run "${NEXTEST_ARGS[@]}" --no-fail-fast
  rc=$?
  set -e
else
  step "build tests (cargo-nextest not found: cargo test)"
  cargo test --workspace --no-run
  step "cargo test --workspace (limit ${TEST_TIMEOUT}s)"
  set +e
  timeout --kill-after=30 "$TEST_TIMEOUT" cargo test --workspace --no-fail-fast
  rc=$?
  set -e
fi

elapsed=$(( $(date +%s) - t_start ))
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo "test.sh: FAILED: the test run hit its ${TEST_TIMEOUT}s limit (${elapsed}s in all)" >&2
elif [ $rc -ne 0 ]; then
  echo "test.sh: FAILED (exit $rc, ${elapsed}s)" >&2
else
  echo "test.sh: all passed (${elapsed}s)"
fi
exit $rc
