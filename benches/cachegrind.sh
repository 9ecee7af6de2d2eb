#!/usr/bin/env bash
# Counts what one message costs a server, deterministically: instructions and simulated cache
# misses, under valgrind's cachegrind, where wall-clock runs on a shared machine vary by 5-10 %.
#
#   benches/cachegrind.sh BIN IMPL MODE PEERS [LL_BYTES]
#   SIDE=client benches/cachegrind.sh ...      # the client's process instead of the server's
#
# BIN is the bench binary (`cargo bench --bench truflux --no-run` prints it), IMPL an
# implementation (`truflux-wire`, `raw-tcp`, ...), MODE `broadcast` (PEERS peers, per peer per
# broadcast), `scale` (PEERS connections, per round trip) or `roundtrip` (one connection, round
# trips of PEERS octets, per round trip). The measured process runs under cachegrind twice,
# with a short and a long run; the difference, divided by the extra messages, leaves out
# start-up and connection set-up. LL_BYTES is the simulated last-level cache
# (default 2 MiB: one core's L2 on the machines the README's tables come from; connection state
# that misses it costs an L3 access or worse). Needs valgrind (Debian: `apt-get install
# valgrind`); not part of the test run.
set -euo pipefail
BIN=$1 IMPL=$2 MODE=$3 PEERS=$4 LL=${5:-2097152}
case $MODE in
  broadcast) SERVE=$IMPL-broadcast SHORT=5 LONG=25 ;;      # --size: broadcasts
  scale) SERVE=$IMPL SHORT= LONG=64 ;;                      # --size: payload; 100 round trips each
  roundtrip) SERVE=$IMPL SHORT=2000 LONG=12000 ;;           # --count: round trips
  *) echo "MODE is broadcast, scale or roundtrip" >&2; exit 2 ;;
esac
SIDE=${SIDE:-server}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# One run, the measured process (SIDE) under cachegrind; prints "instructions data-reads ll-read-misses
# ll-write-misses".
measure() {
  local n=$1 out=$dir/cg.$1 size=$1 count=$PEERS
  if [ "$MODE" = roundtrip ]; then size=$PEERS count=$n; fi
  local grind=(valgrind --tool=cachegrind --cache-sim=yes --LL="$LL,16,64" --cachegrind-out-file="$out")
  local serve=("$BIN") client=("$BIN")
  if [ "$SIDE" = client ]; then client=("${grind[@]}" "$BIN"); else serve=("${grind[@]}" "$BIN"); fi
  coproc SERVER { exec "${serve[@]}" --serve "$SERVE" 2>"$dir/valgrind.$n"; }
  local line port
  read -r line <&"${SERVER[0]}"
  port=${line#PORT }
  "${client[@]}" --client "$MODE" --impl "$IMPL" --port "$port" --size "$size" --count "$count" \
    >/dev/null 2>>"$dir/valgrind.$n"
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
elif [ "$MODE" = roundtrip ]; then
  read -r i1 d1 r1 w1 < <(measure $SHORT)
  ops=$(( LONG - SHORT )) unit="per round trip"
else
  # A connection makes 100 round trips whatever the client is told, so there is no shorter
  # run to subtract: the whole run (set-up included) per round trip.
  ops=$(( 100 * PEERS )) unit="per round trip (whole run, set-up included)"
fi
read -r i2 d2 r2 w2 < <(measure $LONG)
awk -v ops=$ops -v i=$((i2 - i1)) -v d=$((d2 - d1)) -v r=$((r2 - r1)) -v w=$((w2 - w1)) -v unit="$unit" \
  -v side="$SIDE" 'BEGIN { printf "%s: %.0f instructions, %.0f data reads, %.1f LL read misses, %.1f LL write misses %s\n",
           side, i / ops, d / ops, r / ops, w / ops, unit }'
