#!/usr/bin/env bash
# Model checks of the data plane's cross-thread code:
#  - loom models (dataplane/tests/loom.rs) of the SPSC channel and the park
#    handshake, built with RUSTFLAGS="--cfg loom" in a target directory of
#    their own (so they do not invalidate the normal build);
#  - miri runs of the data plane's unit tests (the channel with plain
#    threads, idle policy, provided-ring count), where miri is available:
#    otherwise says why and skips them.
# LOOM_MAX_PREEMPTIONS bounds the loom search (tests/loom.rs default: 3).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"

echo "-- loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3})"
CARGO_TARGET_DIR="$target/loom" RUSTFLAGS="--cfg loom" \
  cargo test -p sigma-dataplane --release --locked --test loom -- --test-threads=2

echo "-- miri: sigma-dataplane unit tests"
miri_reason=""
if ! command -v rustup >/dev/null 2>&1; then
  miri_reason="rustup not found"
elif ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "miri not found for the nightly toolchain; trying: rustup component add --toolchain nightly miri rust-src"
  if ! out=$(rustup component add --toolchain nightly miri rust-src 2>&1); then
    miri_reason="rustup component add failed: $(printf '%s' "$out" | tail -n 1)"
  elif ! cargo +nightly miri --version >/dev/null 2>&1; then
    miri_reason="cargo +nightly miri --version still fails after installing it"
  fi
fi
if [ -z "$miri_reason" ] && ! out=$(cargo +nightly miri setup 2>&1); then
  miri_reason="cargo +nightly miri setup failed: $(printf '%s' "$out" | tail -n 1)"
fi
if [ -n "$miri_reason" ]; then
  echo "miri not available on this machine: $miri_reason; skipping"
  exit 0
fi
cargo +nightly miri --version
# Every unit test of the library is syscall-free (the rest of the crate's
# tests are integration tests, which need io_uring or epoll and are not run).
cargo +nightly miri test -p sigma-dataplane --lib --locked
# The threaded channel tests again under a few more scheduler seeds.
for seed in 1 2 3; do
  echo "-- miri: channel tests, -Zmiri-seed=$seed"
  MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-seed=$seed" \
    cargo +nightly miri test -q -p sigma-dataplane --lib --locked -- channel::
done
