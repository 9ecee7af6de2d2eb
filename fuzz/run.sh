#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each and prints its executions and crashes.
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On stable Rust, AddressSanitizer needs
# RUSTC_BOOTSTRAP=1, which this script sets; pass SANITIZER=none to run without it.
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
sanitizer=${SANITIZER:-address}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz"; exit 2; }
failed=0
for target in engine handshake_server handshake_client files hello_extensions codecs; do
    log=$(mktemp)
    RUSTC_BOOTSTRAP=1 cargo fuzz run -s "$sanitizer" "$target" -- -max_total_time="$seconds" >"$log" 2>&1
    status=$?
    execs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' | tail -1)
    crashes=$(ls "artifacts/$target" 2>/dev/null | wc -l)
    printf '%-18s %12s execs  %3s crash artifact(s)  exit %s\n' "$target" "${execs:-?}" "$crashes" "$status"
    [ "$status" -eq 0 ] || { failed=1; tail -30 "$log"; }
    rm -f "$log"
done
exit $failed
