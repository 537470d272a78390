#!/bin/bash
# Used for bench/results/{before,issue9}-perf-demux.txt (and, with RATE=12M, perf-demux-30kpps.txt); run as root from the checkout.
# braid lab with 2 pairs (as compare.sh), 200-byte UDP through it, perf of each site's demux in turn.
set -u
BIN=target/release; OUT=/tmp/perf-demux
mkdir -p $OUT
$BIN/braid lab down --name prf >/dev/null 2>&1
$BIN/braid lab up --name prf --gateways 2 --json >$OUT/lab.json 2>$OUT/lab.err || { echo "lab up failed"; cat $OUT/lab.err; exit 1; }
python3 -c "import json;[print(p['role'],p['site'],p.get('index'),p['pid']) for p in json.load(open('$OUT/lab.json'))['processes']]"
for site in a b; do
  pid=$(python3 -c "import json;print([p['pid'] for p in json.load(open('$OUT/lab.json'))['processes'] if p['role']=='demux' and p['site']=='$site'][0])")
  ip netns exec braid-prf.hb iperf3 -s -D -1 -p 5601 >/dev/null 2>&1; sleep 0.3
  ip netns exec braid-prf.ha timeout 40 iperf3 -c 198.18.2.2 -p 5601 -u -l 200 -b ${RATE:-0} -P 4 -t 10 -J >$OUT/iperf-$site.json 2>/dev/null &
  ip=$!
  sleep 2
  perf record -g -o $OUT/perf-$site.data -p $pid -- sleep 6 2>$OUT/perf-record-$site.err
  wait $ip
  python3 - $OUT/iperf-$site.json $site <<'PY'
import json,sys
u=json.load(open(sys.argv[1]))['end']['sum']; rx=u['packets']-u['lost_packets']
print(f"site {sys.argv[2]} run: udp200 rx {rx/10/1e3:.1f} kpps, loss {u['lost_percent']:.0f}%")
PY
done
$BIN/braid lab down --name prf >/dev/null 2>&1
