#!/usr/bin/env bash
# The main job on embedded defaults: a single-node σ on a temporary data
# dir (sigmad with its embedded store, binary store and spawner), the
# example procs put in its binary store, some spawned in two realms, their
# status and output shown; then quick sigmabench runs (spawn and
# spawn-rate, then peers, rpc and ns). Results land in results/ as JSON
# and Markdown, plots in results/quick-plots/. Procs need root and cgroup
# controllers; without them sigmad says why and the demo is skipped.
# Extra arguments go to every sigmabench run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --locked -p sigma-tools -p sigmabench
bin=target/release

# The example procs: static single-file Rust programs (tests/procs/).
procs=target/sigma-procs-main
mkdir -p "$procs"
for src in tests/procs/*.rs; do
  name=$(basename "$src" .rs)
  if [ ! -x "$procs/$name" ] || [ "$src" -nt "$procs/$name" ]; then
    rustc --edition 2021 -O -C target-feature=+crt-static "$src" -o "$procs/$name"
  fi
done

data=$(mktemp -d /tmp/sigma-main.XXXXXX)
sock="$data/sigmad.sock"
ctl() { "$bin/sigmactl" --sock "$sock" "$@"; }
"$bin/sigmad" --data "$data" 2>"$data/sigmad.log" &
sigmad=$!
stop() {
  kill -TERM "$sigmad" 2>/dev/null || true
  wait "$sigmad" 2>/dev/null || true
  rm -rf "$data"
}
trap stop EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$data/sigmad.log"; echo "sigmad did not start" >&2; exit 1; }

echo "== a single-node σ at $sock"
for p in "$procs"/*; do ctl bin put "$(basename "$p")" "$p"; done
if ctl spawn trivial >/dev/null 2>"$data/probe.err"; then
  ctl realm create demo
  a=$(ctl spawn -r demo trivial -- 0)
  b=$(ctl spawn -r demo trivial -- 3)
  c=$(ctl spawn -r demo --lc 500 --mem 64 sleeper -- 200)
  d=$(ctl spawn -r demo --be spinner -- 100)
  e=$(ctl spawn -r demo sleeper -- 60000)
  ctl kill -r demo "$e"
  for pid in "$a" "$b" "$c" "$d" "$e"; do
    echo "proc $pid: $(ctl wait -r demo "$pid" || true)"
  done
  echo "== sigmactl ps -r demo"
  ctl ps -r demo
  echo "== sigmactl logs -r demo $a"
  ctl logs -r demo "$a"
else
  echo "procs are not available here: $(cat "$data/probe.err")" >&2
fi
stop
trap - EXIT

mkdir -p results
# Every suite runs even if one reports error rows (a system or case it
# could not measure, each with its reason in the table); they are listed
# at the end.
errors=()
for suite in spawn spawn-rate peers rpc ns; do
  "$bin/sigmabench" run "$suite" --quick \
    --json "results/$suite-quick.json" --md "results/$suite-quick.md" --plot results/quick-plots "$@" \
    || errors+=("$suite")
done
if [ ${#errors[@]} -gt 0 ]; then
  echo "suites with error rows (see their tables for why): ${errors[*]}" >&2
fi
