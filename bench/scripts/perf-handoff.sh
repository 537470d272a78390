#!/bin/bash
# The receiving demux with 2 data threads: perf of demux b under 200-byte UDP a→b (4 flows,
# iperf3 -b 0, 10 s), with the share of the per-packet parse and hash in its profile.
# Usage (root, from the checkout, after cargo build --release): bench/scripts/perf-handoff.sh LABEL
set -u
BIN=target/release; OUT=/tmp/perf-b-$1; mkdir -p $OUT
$BIN/braid lab down --name prb >/dev/null 2>&1
$BIN/braid lab up --name prb --gateways 2 --data-threads 2 --json >$OUT/lab.json 2>$OUT/lab.err || { echo "lab up failed"; exit 1; }
pid=$(python3 -c "import json;print([p['pid'] for p in json.load(open('$OUT/lab.json'))['processes'] if p['role']=='demux' and p['site']=='b'][0])")
ip netns exec braid-prb.hb iperf3 -s -D -1 -p 5601 >/dev/null 2>&1; sleep 0.3
ip netns exec braid-prb.ha timeout 40 iperf3 -c 198.18.2.2 -p 5601 -u -l 200 -b 0 -P 4 -t 10 -J >$OUT/iperf.json 2>/dev/null &
ip=$!
sleep 2
perf record -g -o $OUT/perf.data -p $pid -- sleep 6 2>/dev/null
wait $ip
python3 - $OUT/iperf.json <<'PY'
import json,sys
u=json.load(open(sys.argv[1]))['end']['sum']; rx=u['packets']-u['lost_packets']
print(f"udp200 rx {rx/10/1e3:.1f} kpps, loss {u['lost_percent']:.0f}%")
PY
cat /run/braid/lab/prb/status/demux-b.json | python3 -c "import json,sys;d=json.load(sys.stdin);print('handed_off',d.get('counters',{}).get('handed_off_packets', d.get('handed_off_packets')))" 2>/dev/null
$BIN/braid lab down --name prb >/dev/null 2>&1
perf report -i $OUT/perf.data --no-children --sort symbol 2>/dev/null | grep -E "claim|classify|sip|Sip|hash_key|flow_of|take_parcels|inbound" | head -12
