#!/usr/bin/env bash
# Runs every test of cspulse on a fresh machine: formatting, clippy, and the
# whole suite (unit, property, schema and integration tests against the
# embedded Kafka mock cluster and the real binary). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# librdkafka is built from source by rdkafka-sys: it needs a C toolchain.
if ! command -v cc >/dev/null || ! command -v make >/dev/null; then
  step "installing a C toolchain for librdkafka"
  apt-get update -qq && apt-get install -y -qq build-essential
fi

# The durability tests use the Redis server at 127.0.0.1:6379 and start
# private ones (redis-server) for the outage test.
if ! command -v redis-server >/dev/null; then
  step "installing redis-server"
  apt-get update -qq && apt-get install -y -qq redis-server
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  step "starting Redis on 127.0.0.1:6379"
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo nextest run"
cargo nextest run --all-targets --locked --no-fail-fast
