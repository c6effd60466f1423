#!/usr/bin/env bash
# Installs what σ's build and tests need on a fresh Debian machine. Safe to
# run again: it skips what is already there.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
# protoc: sigmabench's build script (the tonic peer) and the etcd-client crate.
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler libprotobuf-dev)
# etcd: the etcd namespace store's tests start a throwaway etcd (control/tests/support/etcd.rs).
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server etcd-client)
# etcd-client (the crate) compiles etcd's protos, which import google/protobuf/*.proto.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${need_apt[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
# rustfmt and clippy come with rustup's default profile; add them if missing.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# What the kernel allows, for the logs of whoever runs this.
echo "setup: kernel $(uname -r), $(nproc) cores, io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo n/a), memlock $(ulimit -l) KiB"
