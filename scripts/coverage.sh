#!/usr/bin/env bash
# Coverage of the swarm core (crate ringswarm-swarm) by its own tests: the unit tests in
# swarm/src and the integration tests in swarm/tests. Prints a per-file summary for
# swarm/src (regions, functions, lines; branches too with BRANCH=1). Not run in CI.
#
#   scripts/coverage.sh                 # line / region / function coverage (stable)
#   BRANCH=1 scripts/coverage.sh        # also branch coverage: every condition taken both
#                                       # ways (needs a nightly toolchain: -Z coverage-options)
#   MISSING=1 scripts/coverage.sh       # also the uncovered lines of each file
#   HTML=1 scripts/coverage.sh          # also an HTML report (path printed at the end)
#   SKIP_INSTALL=1 scripts/coverage.sh  # never install anything; fail if a tool is missing
#
# Installs what it needs when missing: rustup's llvm-tools-preview component and
# cargo-llvm-cov (`cargo install --locked`, a few minutes once). Builds go to
# $CARGO_TARGET_DIR/llvm-cov-target (target/ when unset), apart from normal builds.
# COVERAGE_TIMEOUT (seconds, default 1200) bounds the instrumented build and test run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-$([ -t 1 ] && echo auto || echo never)}"
COVERAGE_TIMEOUT="${COVERAGE_TIMEOUT:-1200}"
PKG=ringswarm-swarm

step() { printf '\n==> %s\n' "$*"; }

TOOLCHAIN=()
if [ -n "${BRANCH:-}" ]; then
  if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    if [ -n "${SKIP_INSTALL:-}" ]; then
      echo "error: BRANCH=1 needs a nightly toolchain (rustup toolchain install nightly)" >&2
      exit 1
    fi
    step "rustup toolchain install nightly --profile minimal"
    timeout 600 rustup toolchain install nightly --profile minimal
  fi
  TOOLCHAIN=(+nightly)
fi

# ---------------------------------------------------------------------------------------
# 1. Tools.
need_install() {
  echo "missing: $1"
  if [ -n "${SKIP_INSTALL:-}" ]; then
    echo "error: SKIP_INSTALL is set: install it by hand ($2)" >&2
    exit 1
  fi
}

if ! command -v rustup >/dev/null; then
  echo "error: rustup is needed for the llvm-tools-preview component" >&2
  exit 1
fi
# llvm-cov and llvm-profdata must match rustc's LLVM: the component, not the distribution's.
if ! rustup "${TOOLCHAIN[@]}" component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  need_install "llvm-tools-preview" "rustup ${TOOLCHAIN[*]} component add llvm-tools-preview"
  step "rustup ${TOOLCHAIN[*]} component add llvm-tools-preview"
  timeout 600 rustup "${TOOLCHAIN[@]}" component add llvm-tools-preview
fi
if ! cargo llvm-cov --version >/dev/null 2>&1; then
  need_install "cargo-llvm-cov" "cargo install cargo-llvm-cov --locked"
  step "cargo install cargo-llvm-cov --locked"
  timeout 1200 cargo install cargo-llvm-cov --locked
fi
echo "$(cargo llvm-cov --version), rustc $(rustc "${TOOLCHAIN[@]}" -V | cut -d' ' -f2-)"

# ---------------------------------------------------------------------------------------
# 2. Instrumented build and test run, then the report. Only the crate's own sources count:
# its test files (swarm/src/core/tests.rs, swarm/tests/) are left out of the figures; the
# `#[cfg(test)] mod tests` at the foot of the rule modules cannot be, and count.
ARGS=(-p "$PKG" --ignore-filename-regex '(^|/)(tests|benches|fuzz)(/|\.rs$)')
if [ -n "${BRANCH:-}" ]; then ARGS+=(--branch); fi

step "cargo ${TOOLCHAIN[*]} llvm-cov ${ARGS[*]} (limit ${COVERAGE_TIMEOUT}s)"
timeout --kill-after=30 "$COVERAGE_TIMEOUT" \
  cargo "${TOOLCHAIN[@]}" llvm-cov "${ARGS[@]}" --no-report -q

step "coverage of swarm/src by cargo test -p $PKG"
cargo "${TOOLCHAIN[@]}" llvm-cov report "${ARGS[@]}" --summary-only
if [ -n "${MISSING:-}" ]; then
  step "uncovered lines"
  cargo "${TOOLCHAIN[@]}" llvm-cov report "${ARGS[@]}" --show-missing-lines |
    sed -n '/^Uncovered Lines:/,$p'
fi
if [ -n "${HTML:-}" ]; then
  step "HTML report"
  cargo "${TOOLCHAIN[@]}" llvm-cov report "${ARGS[@]}" --html
fi
