#!/bin/bash
# System calls, context switches and CPU per packet of every demux and gateway of a braid lab
# at a fixed small-packet rate (iperf3, 4 UDP flows of 200 B), counted by `perf stat` on the
# syscall tracepoints (cheap enough not to change the batching, unlike strace).
# Usage (root, from the checkout): bench/scripts/syscalls-per-packet.sh [PAIRS] [RATE_PPS] [SECONDS]
# Each figure is per packet received by the far host; a gateway's share is of all packets.
set -u
N=${1:-2}; R=${2:-30000}; T=${3:-5}; BIN=${BIN:-target/release}; OUT=/tmp/syscalls-per-packet
mkdir -p $OUT
$BIN/braid lab down --name spp >/dev/null 2>&1
$BIN/braid lab up --name spp --gateways "$N" --json >$OUT/lab.json 2>$OUT/lab.err || { echo "lab up failed"; cat $OUT/lab.err; exit 1; }
trap '$BIN/braid lab down --name spp >/dev/null 2>&1' EXIT
ip netns exec braid-spp.hb iperf3 -s -D -1 -p 5702 >/dev/null 2>&1; sleep 0.3
pids=$(python3 -c "import json;print(' '.join(f\"{p['role']}:{p['pid']}\" for p in json.load(open('$OUT/lab.json'))['processes'] if p['role'] in ('demux','gw')))")
EV="context-switches,task-clock"
for s in read write readv writev recvmmsg sendmmsg recvmsg sendmsg poll ppoll epoll_wait futex; do EV="$EV,syscalls:sys_enter_$s"; done
# perf counts from just before iperf3 starts until just after it ends (T + 1 s), so every packet
# iperf3 reports is inside the window; the idle second adds a few wake-ups at most.
for rp in $pids; do p=${rp#*:}; timeout -s INT "$((T + 1))" perf stat -e "$EV" -p "$p" -o "$OUT/$p.txt" >/dev/null 2>&1 & done
sleep 0.3
ip netns exec braid-spp.ha timeout $((T + 20)) iperf3 -c 198.18.2.2 -p 5702 -u -l 200 -b $((R / 4 * 200 * 8)) -P 4 -t "$T" -J >$OUT/iperf.json 2>/dev/null
wait
python3 - "$OUT" $pids <<'PY'
import json, re, sys
out = sys.argv[1]
u = json.load(open(f"{out}/iperf.json"))["end"]["sum"]
rx = u["packets"] - u["lost_packets"]
print(f"received {rx} packets, lost {u['lost_packets']}")
for rp in sys.argv[2:]:
    role, pid = rp.split(":")
    figures = []
    for line in open(f"{out}/{pid}.txt"):
        m = re.match(r"\s*([\d,.]+)\s+(?:msec\s+)?(\S+)", line)
        if not m or m.group(2) == "seconds":
            continue
        value, name = float(m.group(1).replace(",", "")), m.group(2).replace("syscalls:sys_enter_", "")
        if value:
            figures.append(f"cpu {value * 1e6 / rx:.0f} ns" if name == "task-clock" else f"{name} {value / rx:.3f}")
    print(f"{role:6s} {pid:>7s}: " + ", ".join(figures))
PY
