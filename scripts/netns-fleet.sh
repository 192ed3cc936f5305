#!/usr/bin/env bash
# A small emulated fleet on one Linux machine, in network namespaces (needs root, iproute2).
#
#   scripts/netns-fleet.sh up [--hosts 12] [--racks 3] [--host-rate 100mbit]
#                             [--uplink-rate 200mbit] [--origin-rate RATE] [--queue 20ms]
#   scripts/netns-fleet.sh down                   # idempotent; kills what runs inside first
#   scripts/netns-fleet.sh exec NODE CMD [ARG...] # NODE: origin, h1..hN, sw (the switch)
#   scripts/netns-fleet.sh hosts                  # NODE NETNS IP RACK, one line per node
#   scripts/netns-fleet.sh topology               # TOML for `ringswarm tracker --topology`
#   scripts/netns-fleet.sh counters               # link byte counters (see below)
#   scripts/netns-fleet.sh status                 # the saved layout, or exit 1 if down
#
# Layout (all addresses in 198.18.0.0/15, RFC 2544 benchmark space; one L2 segment
# 198.18.0.0/16, so no routing is involved):
#
#   netns <P>sw ("switch", no addresses): bridge `core`, and one bridge `rk<R>` per rack.
#     rack R's uplink is a veth pair  u<R> (on rk<R>) <-> c<R> (on core);
#     tbf on both ends at --uplink-rate: u<R> egress = out of the rack, c<R> egress = into it.
#   netns <P>origin: eth0 198.18.0.1, veth peer `o` on core; tbf both ends at --origin-rate.
#   netns <P>h<I>:   eth0 198.18.<R>.<I>, veth peer `h<I>` on rk<R>; tbf both ends at
#     --host-rate (eth0 egress = the host's upload, h<I> egress = its download).
#
# Hosts fill the racks in contiguous, balanced blocks (12 in 3: h1-h4 rack 1, h5-h8 rack 2...).
# Rack R's hosts are 198.18.<R>.0/24, which `topology` maps to dc "dc1", rack "r<R>"
# (the origin, 198.18.0.0/24, to rack "core").
#
# `counters` prints, from the switch's point of view (`ip -s -j link`, bytes as the veth
# counts them: L2 frames, no FCS), one line per link:
#   origin  <up bytes> <down bytes>          (up: sent by the origin)
#   rack<R> <out bytes> <in bytes>           (out: left the rack over its uplink)
#   h<I>    <up bytes> <down bytes>
#
# The prefix <P> is $RSF_PREFIX (default `rsf-`), so a CI job can run its own fleet beside
# another one. The layout is saved in /run/<P>fleet.env for the other commands; `down`
# removes it and every namespace named <P>*. Bounded everywhere: no loop runs unbounded.
set -euo pipefail

P=${RSF_PREFIX:-rsf-}
STATE=/run/${P}fleet.env
SW=${P}sw
ORIGIN_IP=198.18.0.1
PREFIXLEN=16
MAX_HOSTS=250
MAX_RACKS=250

die() { echo "netns-fleet: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "needs root (network namespaces, tc)"; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# Rate like 100mbit, 1gbit, 500kbit, 2500000 (bit/s) -> bits per second.
rate_bps() {
  local r=${1,,}
  case $r in
    *gbit) echo $(( ${r%gbit} * 1000000000 )) ;;
    *mbit) echo $(( ${r%mbit} * 1000000 )) ;;
    *kbit) echo $(( ${r%kbit} * 1000 )) ;;
    *bit) echo "${r%bit}" ;;
    *[!0-9]*|'') die "rate must be like 100mbit, 1gbit, 500kbit: $1" ;;
    *) echo "$r" ;;
  esac
}

# tbf on the egress of DEV in netns NS at BPS bit/s. Burst: 10 ms at the rate, at least
# 64 KiB (one GSO super-packet; tbf segments larger ones). Queue: --queue of delay.
shape() {
  local ns=$1 dev=$2 bps=$3
  local burst=$(( bps / 8 / 100 ))
  [ "$burst" -ge 65536 ] || burst=65536
  tc -n "$ns" qdisc replace dev "$dev" root tbf rate "${bps}bit" burst "$burst" latency "$QUEUE"
}

ns_setup() {
  local ns=$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # No IPv6 (no DAD, router solicitations or MLD noise in the byte counters).
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
}

rack_of() { # host index (1-based) -> rack (1-based), contiguous balanced blocks
  echo $(( ( ($1 - 1) * RACKS ) / HOSTS + 1 ))
}

cmd_up() {
  need_root
  HOSTS=12 RACKS=3 HOST_RATE=100mbit UPLINK_RATE=200mbit ORIGIN_RATE= QUEUE=20ms
  while [ $# -gt 0 ]; do
    case $1 in
      --hosts) HOSTS=$2; shift 2 ;;
      --racks) RACKS=$2; shift 2 ;;
      --host-rate) HOST_RATE=$2; shift 2 ;;
      --uplink-rate) UPLINK_RATE=$2; shift 2 ;;
      --origin-rate) ORIGIN_RATE=$2; shift 2 ;;
      --queue) QUEUE=$2; shift 2 ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  ORIGIN_RATE=${ORIGIN_RATE:-$HOST_RATE}
  [[ $HOSTS =~ ^[0-9]+$ && $HOSTS -ge 1 && $HOSTS -le $MAX_HOSTS ]] || die "--hosts must be 1..$MAX_HOSTS"
  [[ $RACKS =~ ^[0-9]+$ && $RACKS -ge 1 && $RACKS -le $MAX_RACKS && $RACKS -le $HOSTS ]] || die "--racks must be 1..min(hosts, $MAX_RACKS)"
  local hb ub ob
  hb=$(rate_bps "$HOST_RATE"); ub=$(rate_bps "$UPLINK_RATE"); ob=$(rate_bps "$ORIGIN_RATE")
  for t in ip tc; do command -v $t >/dev/null || die "$t missing (apt-get install iproute2)"; done
  if [ -e "/run/netns/$SW" ]; then
    die "a fleet with prefix '$P' is up already (run: $0 down)"
  fi
  # From here on, a failure tears down what was built.
  trap 'echo "netns-fleet: up failed; tearing down" >&2; cmd_down >/dev/null 2>&1 || true' ERR

  ns_setup "$SW"
  local br
  for br in core $(seq -f 'rk%g' 1 "$RACKS"); do
    ip -n "$SW" link add "$br" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ip -n "$SW" link set "$br" up
  done
  # Bridged frames must not go through the switch netns's iptables (br_netfilter).
  ip netns exec "$SW" sh -c 'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -w "$f" ] && echo 0 > "$f"; done' 2>/dev/null || true

  local r
  for r in $(seq 1 "$RACKS"); do
    ip -n "$SW" link add "u$r" type veth peer name "c$r"
    ip -n "$SW" link set "u$r" master "rk$r" up
    ip -n "$SW" link set "c$r" master core up
    shape "$SW" "u$r" "$ub"
    shape "$SW" "c$r" "$ub"
  done

  ns_setup "${P}origin"
  ip -n "$SW" link add o type veth peer name eth0 netns "${P}origin"
  ip -n "$SW" link set o master core up
  ip -n "${P}origin" addr add "$ORIGIN_IP/$PREFIXLEN" dev eth0
  ip -n "${P}origin" link set eth0 up
  shape "$SW" o "$ob"
  shape "${P}origin" eth0 "$ob"

  local i ns ipaddr
  : > "$STATE.tmp"
  {
    echo "PREFIX=$P"
    echo "HOSTS=$HOSTS"
    echo "RACKS=$RACKS"
    echo "HOST_RATE=$HOST_RATE"
    echo "HOST_RATE_BPS=$hb"
    echo "UPLINK_RATE=$UPLINK_RATE"
    echo "UPLINK_RATE_BPS=$ub"
    echo "ORIGIN_RATE=$ORIGIN_RATE"
    echo "ORIGIN_RATE_BPS=$ob"
    echo "QUEUE=$QUEUE"
    echo "ORIGIN_IP=$ORIGIN_IP"
  } >> "$STATE.tmp"
  for i in $(seq 1 "$HOSTS"); do
    r=$(rack_of "$i")
    ns="${P}h$i"
    ipaddr="198.18.$r.$i"
    ns_setup "$ns"
    ip -n "$SW" link add "h$i" type veth peer name eth0 netns "$ns"
    ip -n "$SW" link set "h$i" master "rk$r" up
    ip -n "$ns" addr add "$ipaddr/$PREFIXLEN" dev eth0
    ip -n "$ns" link set eth0 up
    shape "$SW" "h$i" "$hb"
    shape "$ns" eth0 "$hb"
    echo "HOST_$i=h$i:$ipaddr:$r" >> "$STATE.tmp"
  done
  mv "$STATE.tmp" "$STATE"
  trap - ERR

  # Every host must reach the origin: a TCP connect to a closed port is refused at once
  # when the path works, and times out when it does not (no ping needed). Bounded: 3 tries.
  local ok=0 try
  for try in 1 2 3; do
    if ip netns exec "${P}h$HOSTS" python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect((sys.argv[1], 9))
except ConnectionRefusedError:
    sys.exit(0)
except OSError:
    sys.exit(1)
sys.exit(0)
' "$ORIGIN_IP"; then ok=1; break; fi
  done
  [ $ok = 1 ] || { cmd_down >/dev/null 2>&1 || true; die "h$HOSTS cannot reach the origin $ORIGIN_IP"; }
  echo "fleet '$P' up: origin $ORIGIN_IP ($ORIGIN_RATE), $HOSTS hosts ($HOST_RATE) in $RACKS racks (uplinks $UPLINK_RATE), tbf queue $QUEUE"
}

load_state() {
  [ -r "$STATE" ] || die "no fleet '$P' is up (no $STATE)"
  # shellcheck disable=SC1090
  . "$STATE"
}

cmd_down() {
  need_root
  local nss ns pids try
  nss=$(ip netns list 2>/dev/null | awk -v p="$P" 'index($1, p) == 1 {print $1}')
  for ns in $nss; do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
  done
  for ns in $nss; do
    for try in $(seq 1 50); do   # at most 5 s per namespace
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -n "$pids" ] || break
      [ "$try" -lt 50 ] || kill -KILL $pids 2>/dev/null || true
      sleep 0.1
    done
  done
  # Hosts first, the switch last (deleting it deletes every veth and bridge in it).
  for ns in $nss; do
    [ "$ns" = "$SW" ] || ip netns del "$ns" 2>/dev/null || true
  done
  ip netns del "$SW" 2>/dev/null || true
  rm -f "$STATE" "$STATE.tmp"
  [ -z "$nss" ] || echo "fleet '$P' down ($(echo $nss | wc -w) namespaces removed)"
}

cmd_exec() {
  [ $# -ge 2 ] || die "usage: exec NODE CMD [ARG...]"
  local node=$1; shift
  [ -e "/run/netns/$P$node" ] || die "no namespace $P$node"
  exec ip netns exec "$P$node" "$@"
}

cmd_hosts() {
  load_state
  echo "origin ${P}origin $ORIGIN_IP core"
  local i v
  for i in $(seq 1 "$HOSTS"); do
    v=HOST_$i; IFS=: read -r name ipaddr rack <<< "${!v}"
    echo "$name $P$name $ipaddr $rack"
  done
}

cmd_topology() {
  load_state
  printf '# ringswarm tracker topology for the netns fleet %s\n' "$P"
  printf '[[subnet]]\ncidr = "198.18.0.0/24"\ndc = "dc1"\nrack = "core"\n\n'
  local r
  for r in $(seq 1 "$RACKS"); do
    printf '[[subnet]]\ncidr = "198.18.%d.0/24"\ndc = "dc1"\nrack = "r%d"\n\n' "$r" "$r"
  done
}

cmd_counters() {
  load_state
  ip -n "$SW" -s -j link show | python3 -c '
import json, sys
links = {l["ifname"]: l["stats64"] for l in json.load(sys.stdin)}
racks, hosts = int(sys.argv[1]), int(sys.argv[2])
# The switch end receives what the far end sends: rx of the switch end = the node sends.
o = links["o"]
print("origin", o["rx"]["bytes"], o["tx"]["bytes"])
for r in range(1, racks + 1):
    c = links["c%d" % r]   # core end of the uplink: rx = left the rack, tx = entered it
    print("rack%d" % r, c["rx"]["bytes"], c["tx"]["bytes"])
for i in range(1, hosts + 1):
    h = links["h%d" % i]
    print("h%d" % i, h["rx"]["bytes"], h["tx"]["bytes"])
' "$RACKS" "$HOSTS"
}

cmd_status() {
  load_state
  cat "$STATE"
}

main() {
  local cmd=${1:-}
  [ $# -eq 0 ] || shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    exec) cmd_exec "$@" ;;
    hosts) cmd_hosts ;;
    topology) cmd_topology ;;
    counters) cmd_counters ;;
    status) cmd_status ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
