#!/usr/bin/env bash
# Installs redis-server (Debian's package) when it is not on PATH: the tests of
# adapters/redis start, kill and restart their own redis-server processes on loopback.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
echo "== redis-server is missing: installing Debian's redis-server"
if [ "$(id -u)" -eq 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
else
    sudo apt-get update
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
fi
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is still missing"; exit 1; }
