#!/bin/sh
# Installs Debian's Chromium for the browser smoke test when it is not there yet.
# Debian's package only: the test never downloads a browser build of its own.
set -eu
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
/usr/bin/chromium --version
