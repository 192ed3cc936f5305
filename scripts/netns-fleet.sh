#!/usr/bin/env bash
# A small emulated fleet on one Linux machine, in network namespaces (needs root, iproute2).
#
#   scripts/netns-fleet.sh up [--hosts 12] [--racks 3] [--host-rate 100mbit]
#                             [--uplink-rate 200mbit] [--origin-rate RATE] [--queue 20ms]
#                             [--dcs 1] [--wan-rate RATE (default: --uplink-rate)] [--wan-delay 20ms]
#                             [--wan-max-seconds 86400]  # the WAN forwarder's own time limit
#   scripts/netns-fleet.sh down                   # idempotent; kills what runs inside first
#   scripts/netns-fleet.sh exec NODE CMD [ARG...] # NODE: origin, h1..hN, sw (the switch), wan
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
# Rack R's hosts are 198.18.<R>.0/24, which `topology` maps to dc "dc<D>", rack "r<R>"
# (the origin, 198.18.0.0/24, to dc "dc1", rack "core").
#
# Datacenters (--dcs N, N >= 2): the racks are split over the dcs in contiguous balanced
# blocks (6 racks in 2: r1-r3 dc1, r4-r6 dc2); the origin is in dc1. Still one L2 segment:
#   the switch holds one core bridge per dc (`core` for dc1, `core<D>` for the others), each
#     rack's uplink on its dc's core.
#   netns <P>wan: the WAN node. dc D's WAN link is a veth pair w<D> (on dc D's core, in the
#     switch) <-> x<D> (in <P>wan); tbf on both ends at --wan-rate: w<D> egress = out of the
#     dc, x<D> egress = into it. perf/fleet.d/wan-delay.py, a learning bridge over x1..xN
#     (AF_PACKET), holds every frame --wan-delay before forwarding it: one-way delay between
#     any two dcs = --wan-delay, RTT = 2 x it. GSO/TSO/GRO and tx checksum offload are off on
#     w<D> and x<D> (ethtool) so every frame it sees is whole and at most the MTU. Its queue
#     is bounded (2 x wan rate x (delay + --queue) per dc, + 1 MiB; beyond, frames drop).
#     Its pid is /run/<P>wan-delay.pid, its log and exit figures /run/<P>wan-delay.{log,stats}.
#
# `counters` prints, from the switch's point of view (`ip -s -j link`, bytes as the veth
# counts them: L2 frames, no FCS), one line per link:
#   origin  <up bytes> <down bytes>          (up: sent by the origin)
#   rack<R> <out bytes> <in bytes>           (out: left the rack over its uplink)
#   h<I>    <up bytes> <down bytes>
#   dc<D>   <out bytes> <in bytes>           (only with --dcs >= 2: over dc D's WAN link)
#
# The prefix <P> is $RSF_PREFIX (default `rsf-`), so a CI job can run its own fleet beside
# another one. The layout is saved in /run/<P>fleet.env for the other commands; `down`
# removes it and every namespace named <P>*. Bounded everywhere: no loop runs unbounded.
set -euo pipefail

P=${RSF_PREFIX:-rsf-}
STATE=/run/${P}fleet.env
SW=${P}sw
WAN=${P}wan
FORWARDER=$(cd "$(dirname "$0")/.." && pwd)/perf/fleet.d/wan-delay.py
FWD_PID=/run/${P}wan-delay.pid
# The forwarder moves every WAN frame: the system interpreter, not a shim that wraps it.
FWD_PYTHON=/usr/bin/python3
[ -x "$FWD_PYTHON" ] || FWD_PYTHON=python3
ORIGIN_IP=198.18.0.1
PREFIXLEN=16
MAX_HOSTS=250
MAX_RACKS=250
MAX_DCS=16

die() { echo "netns-fleet: $*" >&2; exit 1; }
fail_up() { cmd_down >/dev/null 2>&1 || true; die "$@"; }
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

dc_of() { # rack (1-based) -> dc (1-based), contiguous balanced blocks
  echo $(( ( ($1 - 1) * DCS ) / RACKS + 1 ))
}

core_of() { # dc -> its core bridge in the switch
  if [ "$1" = 1 ]; then echo core; else echo "core$1"; fi
}

# Duration like 20ms, 500us, 1s -> microseconds.
duration_us() {
  local d=${1,,}
  case $d in
    *ms) [[ ${d%ms} =~ ^[0-9]+$ ]] && echo $(( ${d%ms} * 1000 )) && return ;;
    *us) [[ ${d%us} =~ ^[0-9]+$ ]] && echo "${d%us}" && return ;;
    *s) [[ ${d%s} =~ ^[0-9]+$ ]] && echo $(( ${d%s} * 1000000 )) && return ;;
  esac
  die "duration must be like 20ms, 500us, 1s: $1"
}

# The WAN node: one veth per dc to the switch, shaped, offloads off, and the forwarder.
wan_up() { # WAN-BPS DELAY-US QUEUE-US
  local bps=$1 delay_us=$2 queue_us=$3 d ports=() qbytes
  ns_setup "$WAN"
  for d in $(seq 1 "$DCS"); do
    ip -n "$SW" link add "w$d" type veth peer name "x$d" netns "$WAN"
    ip -n "$SW" link set "w$d" master "$(core_of "$d")" up
    ip -n "$WAN" link set "x$d" up
    # Whole frames of at most the MTU, checksums computed: the forwarder sends what it reads.
    ip netns exec "$SW" ethtool -K "w$d" tx off tso off gso off gro off >/dev/null
    ip netns exec "$WAN" ethtool -K "x$d" tx off tso off gso off gro off >/dev/null
    shape "$SW" "w$d" "$bps"
    shape "$WAN" "x$d" "$bps"
    ports+=(--port "x$d")
  done
  qbytes=$(( 2 * DCS * bps / 8 * (delay_us + queue_us) / 1000000 + 1048576 ))
  rm -f "/run/${P}wan-delay.stats"
  # setsid: its own session, so nothing of the caller's (a terminal, a test's process
  # group) takes it down; `down` stops it by its pid. Real-time priority (chrt): it stands
  # for network hardware, so the hosts' own work must not starve it (a stalled forwarder
  # drops frames); it sleeps in epoll between frames, and the kernel's RT throttling bounds it.
  local rt=()
  command -v chrt >/dev/null && chrt -f 10 true 2>/dev/null && rt=(chrt -f 10)
  ip netns exec "$WAN" setsid "${rt[@]}" "$FWD_PYTHON" "$FORWARDER" "${ports[@]}" --delay "${delay_us}us" \
    --queue-bytes "$qbytes" --max-seconds "$WAN_MAX_SECONDS" --stats "/run/${P}wan-delay.stats" \
    > "/run/${P}wan-delay.log" 2>&1 < /dev/null &
  echo $! > "$FWD_PID"
  # Ready when it has printed its first line (its sockets are open), at most 5 s.
  local try
  for try in $(seq 1 50); do
    grep -q '^wan-delay: ports' "/run/${P}wan-delay.log" 2>/dev/null && return 0
    kill -0 "$(cat "$FWD_PID")" 2>/dev/null || fail_up "the WAN forwarder exited: $(tail -c 400 "/run/${P}wan-delay.log")"
    sleep 0.1
  done
  fail_up "the WAN forwarder did not start in 5 s: $(tail -c 400 "/run/${P}wan-delay.log")"
}

cmd_up() {
  need_root
  HOSTS=12 RACKS=3 HOST_RATE=100mbit UPLINK_RATE=200mbit ORIGIN_RATE= QUEUE=20ms
  DCS=1 WAN_RATE= WAN_DELAY=20ms WAN_MAX_SECONDS=86400
  while [ $# -gt 0 ]; do
    case $1 in
      --hosts) HOSTS=$2; shift 2 ;;
      --racks) RACKS=$2; shift 2 ;;
      --host-rate) HOST_RATE=$2; shift 2 ;;
      --uplink-rate) UPLINK_RATE=$2; shift 2 ;;
      --origin-rate) ORIGIN_RATE=$2; shift 2 ;;
      --queue) QUEUE=$2; shift 2 ;;
      --dcs) DCS=$2; shift 2 ;;
      --wan-rate) WAN_RATE=$2; shift 2 ;;
      --wan-delay) WAN_DELAY=$2; shift 2 ;;
      --wan-max-seconds) WAN_MAX_SECONDS=$2; shift 2 ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  ORIGIN_RATE=${ORIGIN_RATE:-$HOST_RATE}
  WAN_RATE=${WAN_RATE:-$UPLINK_RATE}
  [[ $HOSTS =~ ^[0-9]+$ && $HOSTS -ge 1 && $HOSTS -le $MAX_HOSTS ]] || die "--hosts must be 1..$MAX_HOSTS"
  [[ $RACKS =~ ^[0-9]+$ && $RACKS -ge 1 && $RACKS -le $MAX_RACKS && $RACKS -le $HOSTS ]] || die "--racks must be 1..min(hosts, $MAX_RACKS)"
  local hb ub ob
  hb=$(rate_bps "$HOST_RATE"); ub=$(rate_bps "$UPLINK_RATE"); ob=$(rate_bps "$ORIGIN_RATE")
  [[ $DCS =~ ^[0-9]+$ && $DCS -ge 1 && $DCS -le $MAX_DCS && $DCS -le $RACKS ]] || die "--dcs must be 1..min(racks, $MAX_DCS)"
  [[ $WAN_MAX_SECONDS =~ ^[0-9]+$ && $WAN_MAX_SECONDS -ge 1 ]] || die "--wan-max-seconds must be a positive number of seconds"
  local wb=0 delay_us=0 queue_us
  queue_us=$(duration_us "$QUEUE")
  if [ "$DCS" -gt 1 ]; then
    wb=$(rate_bps "$WAN_RATE"); delay_us=$(duration_us "$WAN_DELAY")
    command -v ethtool >/dev/null || die "ethtool missing (apt-get install ethtool): the WAN veths need offloads off"
    [ -r "$FORWARDER" ] || die "the WAN forwarder $FORWARDER is missing"
  fi
  for t in ip tc; do command -v $t >/dev/null || die "$t missing (apt-get install iproute2)"; done
  if [ -e "/run/netns/$SW" ]; then
    die "a fleet with prefix '$P' is up already (run: $0 down)"
  fi
  # From here on, a failure tears down what was built.
  trap 'echo "netns-fleet: up failed; tearing down" >&2; cmd_down >/dev/null 2>&1 || true' ERR

  ns_setup "$SW"
  local br d
  for br in $(for d in $(seq 1 "$DCS"); do core_of "$d"; done) $(seq -f 'rk%g' 1 "$RACKS"); do
    ip -n "$SW" link add "$br" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ip -n "$SW" link set "$br" up
  done
  # Bridged frames must not go through the switch netns's iptables (br_netfilter).
  ip netns exec "$SW" sh -c 'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -w "$f" ] && echo 0 > "$f"; done' 2>/dev/null || true

  local r
  for r in $(seq 1 "$RACKS"); do
    ip -n "$SW" link add "u$r" type veth peer name "c$r"
    ip -n "$SW" link set "u$r" master "rk$r" up
    ip -n "$SW" link set "c$r" master "$(core_of "$(dc_of "$r")")" up
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
    echo "DCS=$DCS"
    if [ "$DCS" -gt 1 ]; then
      echo "WAN_RATE=$WAN_RATE"
      echo "WAN_RATE_BPS=$wb"
      echo "WAN_DELAY=$WAN_DELAY"
      echo "WAN_DELAY_US=$delay_us"
    fi
    for r in $(seq 1 "$RACKS"); do echo "RACK_DC_$r=$(dc_of "$r")"; done
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
  [ "$DCS" = 1 ] || wan_up "$wb" "$delay_us" "$queue_us"
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
  local dcs_text=
  [ "$DCS" = 1 ] || dcs_text=" in $DCS dcs (WAN links $WAN_RATE, one-way delay $WAN_DELAY between dcs)"
  echo "fleet '$P' up: origin $ORIGIN_IP ($ORIGIN_RATE), $HOSTS hosts ($HOST_RATE) in $RACKS racks (uplinks $UPLINK_RATE)$dcs_text, tbf queue $QUEUE"
}

load_state() {
  [ -r "$STATE" ] || die "no fleet '$P' is up (no $STATE)"
  # shellcheck disable=SC1090
  . "$STATE"
}

cmd_down() {
  need_root
  local nss ns pids try fpid
  # The forwarder first (it runs in <P>wan, but may outlive a namespace deleted by hand).
  if [ -r "$FWD_PID" ]; then
    fpid=$(cat "$FWD_PID")
    if [[ $fpid =~ ^[0-9]+$ ]] && grep -q wan-delay "/proc/$fpid/cmdline" 2>/dev/null; then
      kill -TERM "$fpid" 2>/dev/null || true
      for try in $(seq 1 50); do   # at most 5 s
        kill -0 "$fpid" 2>/dev/null || break
        [ "$try" -lt 50 ] || kill -KILL "$fpid" 2>/dev/null || true
        sleep 0.1
      done
    fi
    rm -f "$FWD_PID"
  fi
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
  rm -f "$STATE" "$STATE.tmp" "/run/${P}wan-delay.log" "/run/${P}wan-delay.stats"
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
  local r v
  for r in $(seq 1 "$RACKS"); do
    v=RACK_DC_$r
    printf '[[subnet]]\ncidr = "198.18.%d.0/24"\ndc = "dc%d"\nrack = "r%d"\n\n' "$r" "${!v:-1}" "$r"
  done
}

cmd_counters() {
  load_state
  ip -n "$SW" -s -j link show | python3 -c '
import json, sys
links = {l["ifname"]: l["stats64"] for l in json.load(sys.stdin)}
racks, hosts, dcs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# The switch end receives what the far end sends: rx of the switch end = the node sends.
o = links["o"]
print("origin", o["rx"]["bytes"], o["tx"]["bytes"])
for r in range(1, racks + 1):
    c = links["c%d" % r]   # core end of the uplink: rx = left the rack, tx = entered it
    print("rack%d" % r, c["rx"]["bytes"], c["tx"]["bytes"])
for i in range(1, hosts + 1):
    h = links["h%d" % i]
    print("h%d" % i, h["rx"]["bytes"], h["tx"]["bytes"])
for d in range(1, dcs + 1) if dcs > 1 else ():
    w = links["w%d" % d]   # switch end of the WAN link: tx = left the dc, rx = entered it
    print("dc%d" % d, w["tx"]["bytes"], w["rx"]["bytes"])
' "$RACKS" "$HOSTS" "${DCS:-1}"
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
