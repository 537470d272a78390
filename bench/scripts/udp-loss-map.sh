#!/bin/bash
# Where 200-byte UDP at full rate (iperf3 -u -l 200 -b 0 -P 4) is lost, through one gotatun
# tunnel and through a braid lab with 2 pairs, one after the other on this host: packets shed
# at the sending tunnel's TUN queue, lost on the way, and dropped at the receiving iperf3's own
# socket (UDP RcvbufErrors in the receiving host's namespace: delivered, but the receiver had no
# CPU to read them).
# Usage (root, from the checkout): bench/scripts/udp-loss-map.sh [SECONDS]
set -u
T=${1:-6}; BIN=${BIN:-target/release}
udp_errors() { ip netns exec "$1" awk '/^Udp:/{if (h) print $6; else h=1}' /proc/net/snmp; }
iperf_run() { # CLIENT_NS SERVER_NS ADDR
  ip netns exec "$2" iperf3 -s -D -1 -p 5704 >/dev/null 2>&1; sleep 0.3
  ip netns exec "$1" timeout $((T + 20)) iperf3 -c "$3" -p 5704 -u -l 200 -b 0 -P 4 -t "$T" -J >/tmp/udp-loss-map.json 2>/dev/null
  sleep 1
  python3 -c "import json;u=json.load(open('/tmp/udp-loss-map.json'))['end']['sum'];print(u['packets'],u['packets']-u['lost_packets'])"
}
report() { # LABEL SENT RECEIVED SHED_AT_INGRESS RECEIVER_SOCKET_DROPS
  python3 - "$@" "$T" <<'PY'
import sys
label, sent, received, shed, rcvbuf, t = sys.argv[1], *map(int, sys.argv[2:6]), float(sys.argv[6])
delivered = received + rcvbuf
print(f"{label:18s} sent {sent/t/1e3:6.1f} kpps | shed at the sending TUN {shed/t/1e3:6.1f} | "
      f"carried to the far host {delivered/t/1e3:6.1f} | dropped at iperf3's socket {rcvbuf/t/1e3:6.1f} | "
      f"received {received/t/1e3:6.1f} kpps | other loss {(sent-shed-delivered)/t/1e3:5.1f}")
PY
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); iperf3 -u -l 200 -b 0 -P 4 -t $T"
# One gotatun tunnel (the comparison scripts' shape).
ip netns del ulma 2>/dev/null; ip netns del ulmb 2>/dev/null
ip netns add ulma; ip netns add ulmb
ip link add ulva type veth peer name ulvb; ip link set ulva netns ulma; ip link set ulvb netns ulmb
ip -n ulma addr add 198.18.0.1/24 dev ulva; ip -n ulmb addr add 198.18.0.2/24 dev ulvb
for n in a b; do ip -n ulm$n link set ulv$n up; ip -n ulm$n link set lo up; done
ka=$(wg genkey); kb=$(wg genkey); pa=$(echo "$ka" | wg pubkey); pb=$(echo "$kb" | wg pubkey)
pids=""
for s in a b; do
  ip netns exec ulm$s env WG_SUDO=1 ~/.cargo/bin/gotatun wg$s --foreground --disable-drop-privileges -l /tmp/udp-loss-map-$s.log >/dev/null 2>&1 &
  pids="$pids $!"
done
sleep 1
ip netns exec ulma wg set wga private-key <(echo "$ka") listen-port 51820 peer "$pb" endpoint 198.18.0.2:51820 allowed-ips 198.19.0.2/32
ip netns exec ulmb wg set wgb private-key <(echo "$kb") listen-port 51820 peer "$pa" endpoint 198.18.0.1:51820 allowed-ips 198.19.0.1/32
ip -n ulma addr add 198.19.0.1/24 dev wga; ip -n ulmb addr add 198.19.0.2/24 dev wgb
ip -n ulma link set wga up mtu 1420; ip -n ulmb link set wgb up mtu 1420
sleep 0.5
tx_dropped() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_dropped"; }
d0=$(tx_dropped ulma wga); e0=$(udp_errors ulmb)
read -r sent received < <(iperf_run ulma ulmb 198.19.0.2)
# Receiving-side socket drops include gotatun's own WireGuard socket, if it overflowed.
report "gotatun 1 tunnel" "$sent" "$received" $(( $(tx_dropped ulma wga) - d0 )) $(( $(udp_errors ulmb) - e0 ))
kill $pids 2>/dev/null; sleep 0.5; ip netns del ulma; ip netns del ulmb

# braid, 2 pairs.
$BIN/braid lab down --name ulm >/dev/null 2>&1
$BIN/braid lab up --name ulm --gateways 2 --json >/tmp/udp-loss-map-lab.json 2>/dev/null || { echo "lab up failed"; exit 1; }
trap '$BIN/braid lab down --name ulm >/dev/null 2>&1' EXIT
shed() { python3 -c "import json;print(json.load(open('/run/braid/lab/ulm/status/demux-a.json'))['counters']['drop_tun_queue_full'])"; }
s0=$(shed); e0=$(udp_errors braid-ulm.hb)
read -r sent received < <(iperf_run braid-ulm.ha braid-ulm.hb 198.18.2.2)
sleep 0.6   # a status round
report "braid 2 pairs" "$sent" "$received" $(( $(shed) - s0 )) $(( $(udp_errors braid-ulm.hb) - e0 ))
