#!/usr/bin/env bash
# The main job on embedded defaults. Today that is a quick run of the peers
# suite (σ's data plane against peer runtimes and the syscall floor) and of
# the rpc suite (σ RPC against tonic and the raw round trip) and of the ns
# suite (sigmad's namespace, embedded and on etcd, against etcd itself); later
# issues make it a single-node σ that spawns procs and then runs sigmabench.
# Results land in results/ as JSON and Markdown, plots in results/quick-plots/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
mkdir -p results
# The ns suite measures a real sigmad (and etcd): build the daemons first.
cargo build --release --locked -p sigma-tools
for suite in peers rpc ns; do
  cargo run --release --locked -p sigmabench -- run "$suite" --quick \
    --json "results/$suite-quick.json" --md "results/$suite-quick.md" --plot results/quick-plots "$@"
done
