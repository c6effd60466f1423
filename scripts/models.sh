#!/usr/bin/env bash
# Model checks of the data plane's cross-thread code:
#  - loom models (dataplane/tests/loom.rs) of the SPSC channel, the park
#    handshake and its bound on wake-ups, built with RUSTFLAGS="--cfg loom" in a target directory of
#    their own (so they do not invalidate the normal build);
#  - miri runs of the data plane's unit tests (the channel with plain
#    threads, idle policy, provided-ring count), where miri is available:
#    otherwise says why and skips them.
# LOOM_MAX_PREEMPTIONS bounds the loom search (tests/loom.rs default: 3);
# MIRI_TOOLCHAIN names the toolchain with miri (default: nightly).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
tc="${MIRI_TOOLCHAIN:-nightly}"

echo "-- loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3})"
CARGO_TARGET_DIR="$target/loom" RUSTFLAGS="--cfg loom" \
  cargo test -p sigma-dataplane --release --locked --test loom -- --test-threads=2

echo "-- miri: sigma-dataplane unit tests"
miri_reason=""
# The first error line of a command's output (else its last line).
first_error() { printf '%s\n' "$1" | grep -m1 -i 'error' || printf '%s\n' "$1" | tail -n 1; }
if ! command -v rustup >/dev/null 2>&1; then
  miri_reason="rustup not found"
elif ! cargo +"$tc" miri --version >/dev/null 2>&1; then
  echo "miri not found for the $tc toolchain; trying: rustup component add --toolchain $tc miri rust-src"
  if ! out=$(rustup component add --toolchain "$tc" miri rust-src 2>&1); then
    miri_reason="rustup component add failed: $(first_error "$out")"
  elif ! cargo +"$tc" miri --version >/dev/null 2>&1; then
    miri_reason="cargo +$tc miri --version still fails after installing it"
  fi
fi
if [ -z "$miri_reason" ] && ! out=$(cargo +"$tc" miri setup 2>&1); then
  miri_reason="cargo +$tc miri setup failed: $(first_error "$out")"
fi
if [ -n "$miri_reason" ]; then
  echo "miri not available on this machine: $miri_reason; skipping"
  exit 0
fi
cargo +"$tc" miri --version
# Every unit test of the library is syscall-free (the rest of the crate's
# tests are integration tests, which need io_uring or epoll and are not run).
cargo +"$tc" miri test -p sigma-dataplane --lib --locked
# The threaded channel tests again under a few more scheduler seeds.
for seed in 1 2 3; do
  echo "-- miri: channel tests, -Zmiri-seed=$seed"
  MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-seed=$seed" \
    cargo +"$tc" miri test -q -p sigma-dataplane --lib --locked -- channel::
done
