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

# The history tests use PostgreSQL at 127.0.0.1:5432 (trust auth, user
# postgres; each test creates a database of its own).
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  if [ ! -d /etc/postgresql ]; then
    step "installing PostgreSQL"
    apt-get update -qq && apt-get install -y -qq postgresql
  fi
  step "starting PostgreSQL on 127.0.0.1:5432"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 0.1; done
fi

# The delivery tests (tests/delivery.rs) run real peers in Python: an SMTP
# server (aiosmtpd, from PyPI) and a webhook receiver (the standard library).
if ! command -v python3 >/dev/null; then
  step "installing python3"
  apt-get update -qq && apt-get install -y -qq python3 python3-pip
fi
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  step "installing aiosmtpd (the delivery tests' SMTP server)"
  python3 -m pip install --quiet 'aiosmtpd==1.4.6' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'aiosmtpd==1.4.6'
fi
# Exports (tests/accounts.rs, the dashboard test) are read back by an
# independent reader of XLSX: openpyxl, from PyPI for the python3 in use.
if ! python3 -c 'import openpyxl' 2>/dev/null; then
  step "installing openpyxl (the exports' independent XLSX reader)"
  python3 -m pip install --quiet 'openpyxl==3.1.5' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'openpyxl==3.1.5' 2>/dev/null ||
    { apt-get update -qq && apt-get install -y -qq python3-openpyxl; }
  python3 -c 'import openpyxl' 2>/dev/null || /usr/bin/python3 -c 'import openpyxl' ||
    { echo "openpyxl could not be installed for python3" >&2; exit 1; }
fi
# Its TLS test signs the SMTP servers' certificates with a private CA.
if ! command -v openssl >/dev/null; then
  step "installing openssl (the delivery TLS test's certificates)"
  apt-get update -qq && apt-get install -y -qq openssl
fi

# The dashboard client is built by build.rs (Node.js >= 20.19 with npm) and
# tested in headless Chromium (the Debian package, driven by playwright-core;
# no browser is ever downloaded).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
node_ok() { command -v node >/dev/null && command -v npm >/dev/null &&
  node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)'; }
if ! node_ok; then
  step "installing Node.js and npm"
  apt-get update -qq && apt-get install -y -qq nodejs npm || true
  if ! node_ok; then
    echo "Node.js >= 20.19 with npm is required to build and test the dashboard client:" >&2
    echo "install it from https://nodejs.org/en/download (or nvm), then run this again" >&2
    exit 1
  fi
fi
if [ ! -x /usr/bin/chromium ]; then
  step "installing chromium (the dashboard's browser tests)"
  apt-get update -qq && apt-get install -y -qq chromium
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The benchmarks' layer probe (load-tests/README.md, "Layer by layer") is
# compiled only with this feature: keep it building.
cargo clippy -p cspulse-load --features layers --all-targets --locked -- -D warnings

# clippy ran build.rs, which installed dashboards-client/node_modules (npm ci).
step "dashboard client: type check and unit tests (vitest)"
(cd dashboards-client && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm test)

step "cargo nextest run (the dashboard's browser test is tests/dashboard.rs)"
cargo nextest run --all-targets --locked --no-fail-fast
