#!/usr/bin/env bash
# make demo: carpio at work in a lab of network namespaces, then offline.
#
# 1. Live: builds the one-armed NAT lab of scripts/lab/topo.sh (a client, the balancer, three
#    backends on one bridge; all in cio-<pid>-* namespaces, addresses in 198.18.0.0/15), starts
#    REAL servers on the backends (unbound, chronyd, OpenSMTPD, nginx, each naming itself) and
#    carpio on the balancer, runs REAL clients (dig, dnsperf, sntp, swaks, curl) against the
#    virtual address and prints which backend answered what, then `carpioctl show summary` and
#    `show counters`. Bounded in time; an EXIT trap kills every process by PID and deletes the
#    namespaces, also on failure or Ctrl-C.
# 2. Offline replay: a synthetic capture and the tcpdump corpus through carpio's receive path.
#
# usage: scripts/demo.sh [afpacket|afxdp]   (as root; default afpacket)
#        CARPIO_BIN_DIR=target/debug uses other binaries than target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bindir=${CARPIO_BIN_DIR:-$ROOT/target/release}
bin=$bindir/carpio
ctl=$bindir/carpioctl
ingress_kind=${1:-afpacket}
case "$ingress_kind" in
  afpacket) ingress="ingress afpacket" ;;
  afxdp) ingress="ingress afxdp mode generic" ;;
  *) echo "usage: $0 [afpacket|afxdp]" >&2; exit 2 ;;
esac
for f in "$bin" "$ctl"; do
  [ -x "$f" ] || { echo "demo: $f missing: run make build" >&2; exit 1; }
done

out=$(mktemp -d /tmp/carpio-demo.XXXXXX)
LAB_TPL=$ROOT/scripts/lab
# shellcheck source=lab/topo.sh
. "$LAB_TPL/topo.sh"
cleanup() {
  lab_down
  rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

live() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "(the live part needs root: network namespaces; skipped)"
    return 0
  fi
  trap lab_down EXIT
  trap 'exit 143' TERM
  local t
  for t in ip ethtool ss unbound chronyd smtpd nginx dig dnsperf sntp swaks curl timeout; do
    command -v "$t" >/dev/null || { echo "demo: $t missing: run bash scripts/deps.sh" >&2; return 1; }
  done
  echo "== lab: client 198.18.0.100 -- bridge -- carpio 198.18.0.2/198.18.1.254 -- backends 198.18.1.1-3"
  lab_up
  lab_servers "$out"
  echo "   backends up: unbound (DNS), chronyd (NTP), OpenSMTPD (SMTP), nginx (HTTP) on each"
  sed -e "s|@INGRESS@|$ingress|" -e "s|@SOCK@|$out/carpio.sock|" "$LAB_TPL/carpio.conf.in" >"$out/carpio.conf"
  "$bin" -n -f "$out/carpio.conf"
  lab_spawn lb "$out/carpio.log" "$bin" -d -f "$out/carpio.conf"
  local carpio_pid=$LAST_PID i ok=0
  for i in $(seq 100); do
    if lab_in cl dig +short +time=1 +tries=1 TXT who.svc.test @$VIP 2>/dev/null | grep -q '"b'; then ok=1; break; fi
    kill -0 "$carpio_pid" 2>/dev/null || break
    sleep 0.2
  done
  if [ $ok -eq 0 ]; then
    echo "demo: carpio ($ingress) never answered through $VIP; its log:" >&2
    cat "$out/carpio.log" >&2
    return 1
  fi
  echo "== carpio -d ($ingress) serves $VIP (NAT), $VIP_DSR (DSR), $VIP_IPIP (IPIP)"
  echo
  echo "-- dig TXT who.svc.test @$VIP from 6 source ports, each asked twice (round-robin + flow table):"
  local p a b
  for p in 40001 40002 40003 40004 40005 40006; do
    a=$(lab_in cl dig +short +time=1 +tries=2 -b "$CLIENT#$p" TXT who.svc.test @$VIP | tr -d '"')
    b=$(lab_in cl dig +short +time=1 +tries=2 -b "$CLIENT#$p" TXT who.svc.test @$VIP | tr -d '"')
    printf '   port %s -> %-3s then %-3s\n' "$p" "${a:-none}" "${b:-none}"
  done
  echo "-- dig via direct server return ($VIP_DSR):"
  for p in 41001 41002 41003; do
    a=$(lab_in cl dig +short +time=1 +tries=2 -b "$CLIENT#$p" TXT who.svc.test @$VIP_DSR | tr -d '"')
    printf '   port %s -> %s\n' "$p" "${a:-none}"
  done
  echo "-- dnsperf, 2 s at 500 queries/s:"
  printf 'who.svc.test TXT\nwww.svc.test A\n' >"$out/queries.txt"
  lab_in cl dnsperf -s $VIP -d "$out/queries.txt" -l 2 -Q 500 -c 4 -t 1 |
    grep -E 'Queries (sent|completed|lost)|Queries per second|Average Latency' | sed 's/^ */   /'
  echo "-- sntp $VIP (chronyd's stratum names the backend: s3=b1 s4=b2 s5=b3):"
  for i in 1 2 3; do
    a=$(lab_in cl sntp -t 2 $VIP 2>/dev/null || true)
    grep -o "$VIP s[0-9]*" <<<"$a" | sed 's/^/   /' || echo "   no answer"
  done
  echo "-- swaks to $VIP:25 (OpenSMTPD's banner names the backend):"
  for i in 1 2 3; do
    a=$(lab_in cl swaks --server $VIP --to postmaster@svc.test --from demo@svc.test \
      --quit-after EHLO --timeout 5 2>/dev/null || true)
    grep -m1 '<-  220' <<<"$a" | sed 's/^/  /' || echo "   no banner"
  done
  echo "-- curl http://$VIP/ (Maglev; nginx's page is the backend's name):"
  for i in 1 2 3 4 5 6; do
    printf '   %s' "$(lab_in cl curl -s --max-time 5 http://$VIP/ || echo none)"
    echo
  done
  echo
  echo "== carpioctl show summary"
  lab_in lb "$ctl" -s "$out/carpio.sock" show summary || true
  echo "== carpioctl show counters (non-zero)"
  lab_in lb "$ctl" -s "$out/carpio.sock" show counters | awk '$2 != 0' || true
  kill -TERM "$carpio_pid" 2>/dev/null || true
  for i in $(seq 30); do kill -0 "$carpio_pid" 2>/dev/null || break; sleep 0.1; done
  lab_down
  echo "== lab removed (processes killed by PID, namespaces deleted)"
}

echo "#### live: real servers and clients through carpio"
timeout_s=${DEMO_TIMEOUT:-120}
live_rc=0
live & live_pid=$!
# Bounded: the live part is killed if it runs past $timeout_s (the EXIT trap then cleans up).
( sleep $timeout_s; kill -TERM $live_pid 2>/dev/null ) & guard=$!
wait $live_pid || live_rc=$?
kill $guard 2>/dev/null || true
wait $guard 2>/dev/null || true
[ $live_rc -eq 143 ] && echo "demo: the live part ran past ${timeout_s}s and was stopped (lab removed)" >&2

echo
echo "#### offline replay: captures through carpio's receive path"
echo "== carpio synth: 3000 client flows (DNS, NTP, SMTP; IPv4 and IPv6)"
"$bin" synth -o "$out/synth.pcap" --flows 3000 --vip 198.18.0.10 --vip 2001:db8::10
echo
echo "== carpio replay synth.pcap"
"$bin" replay "$out/synth.pcap" -o "$out/out.pcap"
corpus=../shared/corpus/tcpdump
if [ -d "$corpus" ]; then
  echo
  echo "== carpio replay of the tcpdump corpus ($corpus): every frame classified or dropped by name"
  for f in "$corpus"/*.pcap "$corpus"/*.pcapng; do
    printf '%-34s ' "$(basename "$f")"
    "$bin" replay "$f" | awk '/^  /{printf "%s=%s ", $(NF-1), $NF} /^accounted/{printf "(%s of %s)\n", $2, $4}'
  done
fi
exit $live_rc
