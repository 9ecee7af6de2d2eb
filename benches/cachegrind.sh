#!/usr/bin/env bash
# Counts what one message costs a server, deterministically: instructions and simulated cache
# misses, under valgrind's cachegrind, where wall-clock runs on a shared machine vary by 5-10 %.
#
#   benches/cachegrind.sh BIN IMPL MODE PEERS [LL_BYTES]
#
# BIN is the bench binary (`cargo bench --bench truflux --no-run` prints it), IMPL a server
# implementation (`truflux-wire`, `raw-tcp`, ...), MODE `broadcast` (PEERS peers, per peer per
# broadcast) or `scale` (PEERS connections, per round trip). The server runs under cachegrind
# twice, with a short and a long client run; the difference, divided by the extra messages,
# leaves out start-up and connection set-up. LL_BYTES is the simulated last-level cache
# (default 2 MiB: one core's L2 on the machines the README's tables come from; connection state
# that misses it costs an L3 access or worse). Needs valgrind (Debian: `apt-get install
# valgrind`); not part of the test run.
set -euo pipefail
BIN=$1 IMPL=$2 MODE=$3 PEERS=$4 LL=${5:-2097152}
case $MODE in
  broadcast) SERVE=$IMPL-broadcast SHORT=5 LONG=25 ;;      # --size: broadcasts
  scale) SERVE=$IMPL SHORT= LONG=64 ;;                      # --size: payload; 100 round trips each
  *) echo "MODE is broadcast or scale" >&2; exit 2 ;;
esac
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# One server under cachegrind for one client run; prints "instructions data-reads ll-read-misses
# ll-write-misses".
measure() {
  local size=$1 out=$dir/cg.$1
  coproc SERVER {
    exec valgrind --tool=cachegrind --cache-sim=yes --LL="$LL,16,64" --cachegrind-out-file="$out" \
      "$BIN" --serve "$SERVE" 2>"$dir/valgrind.$size"
  }
  local line port
  read -r line <&"${SERVER[0]}"
  port=${line#PORT }
  "$BIN" --client "$MODE" --impl "$IMPL" --port "$port" --size "$size" --count "$PEERS" >/dev/null
  kill -INT "$SERVER_PID"
  wait "$SERVER_PID" || true
  # Ir, Dr, DLmr, DLmw from the summary line of the events the file recorded.
  awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
       /^summary:/ { print $(col["Ir"] + 1), $(col["Dr"] + 1), $(col["DLmr"] + 1), $(col["DLmw"] + 1) }' "$out"
}

i1=0 d1=0 r1=0 w1=0
if [ "$MODE" = broadcast ]; then
  read -r i1 d1 r1 w1 < <(measure $SHORT)
  ops=$(( (LONG - SHORT) * PEERS )) unit="per peer per broadcast"
else
  # A connection makes 100 round trips whatever the client is told, so there is no shorter
  # run to subtract: the whole run (set-up included) per round trip.
  ops=$(( 100 * PEERS )) unit="per round trip (whole run, set-up included)"
fi
read -r i2 d2 r2 w2 < <(measure $LONG)
awk -v ops=$ops -v i=$((i2 - i1)) -v d=$((d2 - d1)) -v r=$((r2 - r1)) -v w=$((w2 - w1)) -v unit="$unit" \
  'BEGIN { printf "%.0f instructions, %.0f data reads, %.1f LL read misses, %.1f LL write misses %s\n",
           i / ops, d / ops, r / ops, w / ops, unit }'
