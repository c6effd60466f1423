#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy with
# warnings denied, and all unit, property and integration tests. Installs
# what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked --no-run
# The suite takes about 3 minutes here; a test that hangs fails the run
# after 20 (tests guard their own waits too, this is the last resort).
if ! timeout --kill-after=30 1200 cargo test --workspace --locked -- --test-threads=2; then
  echo "cargo test failed or did not finish within 20 minutes" >&2
  exit 1
fi

echo "== loom models and miri"
scripts/models.sh

echo "== fuzz smoke runs (every decoder, bounded)"
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP lets this stable
# toolchain accept them for the fuzz build only.
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
for target in $(cd ep && cargo fuzz list); do
  (cd ep && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -runs=50000 -max_total_time=30)
done

echo "== microbenchmarks compile and run once"
cargo bench -p sigma-dataplane --bench hotpaths --locked -- --test
cargo bench -p sigma-sandbox --bench seccomp_install --locked -- --test
