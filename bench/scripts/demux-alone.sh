#!/bin/bash
# The demux alone: packets per second one braid-demux moves from its TUN to its gateways, with
# a generator feeding the TUN and the gateways reduced to sinks.
#
# Builds a 2-pair lab (braid lab up) with T data threads per demux, gives host a the source
# addresses FLOWS distinct flows need, then stops (SIGSTOP) the controller, every gateway and
# demux b: GENEVE sent to a stopped gateway lands in its socket buffer and is dropped there by
# the kernel, so nothing but demux a and the generator runs. `braid-bench flood` sends FLOWS
# concurrent 200-byte UDP flows round-robin at RATE packets per second from host a for a warm-up
# (every flow is seen, so the flow table holds them all) and then for the measured SECONDS.
# Reported: packets demux a read from its TUN per second, per data thread, what the kernel shed
# at the TUN (drop_tun_queue_full), live flows, and demux a's CPU time per packet.
#
# Usage (root, from the checkout, after cargo build --release):
#   bench/scripts/demux-alone.sh THREADS [FLOWS=1000000] [RATE=600000] [SECONDS=8]
set -eu
T=${1:?data threads}; FLOWS=${2:-1000000}; RATE=${3:-600000}; SECS=${4:-8}
BIN=target/release; NAME=da$$; HZ=$(getconf CLK_TCK)
STATUS=/run/braid/lab/$NAME/status/demux-a.json
STOPPED=""
cleanup() {
  for p in $STOPPED; do kill -CONT "$p" 2>/dev/null || true; done
  $BIN/braid lab down --name $NAME >/dev/null 2>&1 || true
}
trap cleanup EXIT
$BIN/braid lab up --name $NAME --gateways 2 --data-threads "$T" --json > /tmp/$NAME.json
HA=braid-$NAME.ha
# TXQLEN=N: the TUN's queue length (the kernel's default is 500 packets per queue).
if [ -n "${TXQLEN:-}" ]; then ip -n braid-$NAME.da link set braid0 txqueuelen "$TXQLEN"; fi
ADDRS=$(( (FLOWS + 49999) / 50000 ))
for i in $(seq 0 $((ADDRS - 1))); do ip -n $HA addr add 198.18.1.$((100 + i))/32 dev eth0; done
pid_of() { python3 -c "import json,sys; d=json.load(open('/tmp/$NAME.json')); print(' '.join(str(p['pid']) for p in d['processes'] if $1))"; }
DEMUX_A=$(pid_of "p['role']=='demux' and p['site']=='a'")
STOPPED="$(cat /run/braid/lab/$NAME/controller.pid) $(pid_of "p['role']!='demux' or p['site']=='b'")"
for p in $STOPPED; do kill -STOP "$p"; done
flood() { ip netns exec $HA $BIN/braid-bench flood --destination 198.18.2.2 --port 9 \
  --source-base 198.18.1.100 --flows "$FLOWS" --pps "$RATE" --size 200 --seconds "$1" >/dev/null; }
counter() { python3 -c "import json; d=json.load(open('$STATUS')); print(d['counters'].get('$1',0) if '$1'!='flows' else d['flows'])"; }
cpu() { awk '{print $14+$15}' /proc/$DEMUX_A/stat; }
# Warm-up: every flow sends at least once (FLOWS / RATE seconds), so the table is full of them.
flood $(python3 -c "print(max(2.0, 1.2 * $FLOWS / $RATE))")
sleep 1
rx0=$(counter tun_rx_packets); shed0=$(counter drop_tun_queue_full); c0=$(cpu)
flood "$SECS"
sleep 1
rx1=$(counter tun_rx_packets); shed1=$(counter drop_tun_queue_full); c1=$(cpu); live=$(counter flows)
python3 - <<PY
rx=$rx1-$rx0; shed=$shed1-$shed0; cpu=($c1-$c0)/$HZ; s=$SECS
print(f"data_threads=$T flows=$FLOWS offered={$RATE} pps: demux read {rx/s/1e3:.1f} kpps "
      f"({rx/s/1e3/$T:.1f} kpps per thread), shed at the TUN {shed/s/1e3:.1f} kpps, "
      f"live flows {$live}, demux CPU {cpu/s:.2f} cores, {cpu/max(rx,1)*1e9:.0f} ns/packet")
PY
