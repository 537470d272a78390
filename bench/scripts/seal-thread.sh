#!/bin/bash
# IPsec gateways sealing on a thread of their own (ipsec.seal_thread) against one data thread,
# in the same run: a 1-pair IPsec lab per configuration, ROUNDS rounds, configurations
# interleaved.
#
# Each lab is measured three ways, iperf3 between host a and host b:
#   * TCP both ways at once (--bidir, 4 streams each way, SECONDS): Mbit/s each way and the
#     CPU of the two gateways per Mbit;
#   * 200-byte UDP both ways at a fixed RATE (packets per second each way, 4 flows each): the
#     gateways' CPU per packet received, summed over both gateways;
#   * 200-byte UDP one way, unlimited (-b 0, 4 flows): packets per second received.
# With the sealing thread, each gateway's CPU is also shown per thread (seal / the rest), read
# from /proc/PID/task.
#
# Usage (root, from the checkout, after cargo build --release):
#   bench/scripts/seal-thread.sh [ROUNDS=2] [SECONDS=8] [RATE=20000]
set -u
ROUNDS=${1:-2}; SECS=${2:-8}; RATE=${3:-20000}
BIN=target/release; NAME=st$$; HZ=$(getconf CLK_TCK)
HA=braid-$NAME.ha; HB=braid-$NAME.hb; B_ADDR=198.18.2.2
trap '$BIN/braid lab down --name $NAME >/dev/null 2>&1' EXIT

ticks() { local s=0; for p in "$@"; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $s; }
# Ticks of the threads of process $1 whose name matches $2.
thread_ticks() {
  local s=0
  for t in /proc/$1/task/*; do
    grep -q "$2" "$t/comm" 2>/dev/null && s=$((s + $(awk '{print $14+$15}' "$t/stat")))
  done
  echo $s
}

measure() { # LABEL [--seal-thread]
  local label=$1; shift
  $BIN/braid lab down --name $NAME >/dev/null 2>&1
  $BIN/braid lab up --name $NAME --gateways 1 --suite ipsec "$@" --json >/tmp/$NAME.json 2>/dev/null \
    || { echo "$label: lab up failed"; return; }
  local gws
  gws=$(python3 -c "import json;print(' '.join(str(p['pid']) for p in json.load(open('/tmp/$NAME.json'))['processes'] if p['role']=='gw'))")
  ip netns exec $HB iperf3 -s -D -p 5801 >/dev/null 2>&1
  ip netns exec $HA iperf3 -s -D -p 5802 >/dev/null 2>&1
  sleep 0.5

  # TCP both ways at once.
  local c0 s0=0 s1=0
  c0=$(ticks $gws)
  for p in $gws; do s0=$((s0 + $(thread_ticks $p seal))); done
  ip netns exec $HA iperf3 -c $B_ADDR -p 5801 --bidir -P 4 -t "$SECS" -J >/tmp/$NAME-tcp.json 2>/dev/null
  local c1; c1=$(ticks $gws)
  for p in $gws; do s1=$((s1 + $(thread_ticks $p seal))); done
  python3 - "$label" "$c0" "$c1" "$s0" "$s1" "$HZ" "$SECS" "/tmp/$NAME-tcp.json" <<'PY'
import json, sys
label, c0, c1, s0, s1, hz, secs, path = sys.argv[1], *map(float, sys.argv[2:8]), sys.argv[8]
end = json.load(open(path))['end']
fwd = end['sum_received']['bits_per_second'] / 1e6
rev = end['sum_received_bidir_reverse']['bits_per_second'] / 1e6
cpu = (c1 - c0) / hz
seal = (s1 - s0) / hz
print(f"{label:22s} TCP bidir  a→b {fwd:7.0f}  b→a {rev:7.0f}  total {fwd+rev:7.0f} Mbit/s  "
      f"gateways {cpu/secs:4.2f} cores ({seal/secs:4.2f} sealing)  {cpu/secs*1000/(fwd+rev):5.2f} ms CPU/s per Mbit/s")
PY

  # Fixed-rate 200-byte UDP both ways.
  local bw=$(( RATE / 4 * 200 * 8 ))
  c0=$(ticks $gws)
  ip netns exec $HA iperf3 -c $B_ADDR -p 5801 -u -l 200 -b $bw -P 4 -t "$SECS" -J >/tmp/$NAME-u1.json 2>/dev/null &
  local fwd_pid=$!
  ip netns exec $HB iperf3 -c 198.18.1.2 -p 5802 -u -l 200 -b $bw -P 4 -t "$SECS" -J >/tmp/$NAME-u2.json 2>/dev/null
  wait $fwd_pid
  c1=$(ticks $gws)
  python3 - "$label" "$c0" "$c1" "$HZ" "$SECS" "/tmp/$NAME-u1.json" "/tmp/$NAME-u2.json" <<'PY'
import json, sys
label, c0, c1, hz, secs = sys.argv[1], *map(float, sys.argv[2:6])
rx = 0
for path in sys.argv[6:8]:
    s = json.load(open(path))['end']['sum']
    rx += s['packets'] - s['lost_packets']
cpu = (c1 - c0) / hz
print(f"{label:22s} UDP 200 B both ways at a fixed rate: rx {rx/secs/1e3:6.1f} kpps  gateways {cpu/secs:4.2f} cores  "
      f"{cpu/max(rx,1)*1e9:6.0f} ns/packet")
PY

  # Unlimited 200-byte UDP one way.
  ip netns exec $HA iperf3 -c $B_ADDR -p 5801 -u -l 200 -b 0 -P 4 -t "$SECS" -J >/tmp/$NAME-u3.json 2>/dev/null
  python3 - "$label" "$SECS" "/tmp/$NAME-u3.json" <<'PY'
import json, sys
label, secs, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = json.load(open(path))['end']['sum']
print(f"{label:22s} UDP 200 B one way, -b 0: rx {(s['packets']-s['lost_packets'])/secs/1e3:6.1f} kpps "
      f"(lost {s['lost_percent']:.1f} %)")
PY
  pkill -f "iperf3 -s -D -p 580[12]" 2>/dev/null
  $BIN/braid lab down --name $NAME >/dev/null 2>&1
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null)"
echo "# 1 IPsec pair; TCP --bidir -P 4 ${SECS}s; UDP 200 B at $RATE pps each way; UDP 200 B -b 0 one way"
for round in $(seq "$ROUNDS"); do
  echo "## round $round"
  measure "one data thread"
  measure "seal thread" --seal-thread
done
