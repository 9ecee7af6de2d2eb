#!/usr/bin/env bash
# Every test of the project: the Rust workspace, then the JavaScript client (unit tests and
# Node against the Rust server), then the browser tests in Debian's Chromium. Installs what is
# missing on a fresh machine (the npm packages of clients/js, Debian's chromium); fails on the
# first failing test.
set -euo pipefail
cd "$(dirname "$0")/.."

features=$(scripts/features.sh)
echo "== Rust: cargo test --workspace --features $features"
scripts/ensure-redis.sh # adapters/redis's tests run their own redis-server
# Also builds the examples the JavaScript tests run against (target/debug/examples/interop).
cargo test --workspace --features "$features"

# The Node TLS tests make certificates with openssl (Debian's package when missing).
command -v openssl >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl; }

echo "== JavaScript: npm ci"
command -v node >/dev/null || { echo "node is missing (Node 20 or later)"; exit 1; }
(cd clients/js && npm ci --no-audit --no-fund)

echo "== JavaScript: unit tests and Node against the Rust server"
(cd clients/js && npm test)

echo "== JavaScript: Chromium against the Rust server"
(cd clients/js && npm run test:browser)
