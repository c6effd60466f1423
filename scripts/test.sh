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
cargo test --workspace --locked -- --test-threads=2

echo "== microbenchmarks compile and run once"
cargo bench -p sigma-dataplane --bench hotpaths --locked -- --test
