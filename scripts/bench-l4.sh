#!/usr/bin/env bash
# make bench-l4: carpio against the kernel's own L4 balancing in the same lab and the same run.
#
#   udp:  64-byte UDP frames (18-byte payload) from iperf3 in the client namespace to the VIP,
#         through carpio (NAT, source-hash) vs nftables DNAT (jhash of the source) on the same
#         balancer namespace; iperf3 -s on the backends counts what arrived.
#   dns:  dnsperf against the VIP, through carpio (NAT, round-robin over 3 unbound backends) vs
#         dnsdist (round-robin over the same backends) listening on the VIP in the balancer.
#
# For each: offered and delivered rate, loss, and the balancer's CPU time per delivered packet
# or answered query = (the balancer process's utime+stime from /proc/PID/stat, or 0 for the
# kernel's DNAT) + softirq time of all cores from /proc/stat (the kernel's forwarding work, and
# for every case the veth/bridge work of the whole lab, which is the same for all), and the
# ratios carpio / baseline. Numbers from a shared 2-core machine are noisy: compare the ratios
# of one run, never absolute figures across runs.
#
# Network safety: the lab of scripts/lab/topo.sh (cio-<pid>-* namespaces, 198.18.0.0/15), every
# generator bounded in time, everything killed by PID and the namespaces deleted on EXIT.
#
# usage: scripts/bench-l4.sh [-s SECONDS] [-u UDP_MBIT] [-q DNS_QPS] [-i afpacket|afxdp]
#        CARPIO=path/to/carpio overrides target/release/carpio.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
secs=3
udp_mbit=20
qps=20000
ingress_kind=afpacket
while getopts "s:u:q:i:" o; do
  case $o in
    s) secs=$OPTARG ;;
    u) udp_mbit=$OPTARG ;;
    q) qps=$OPTARG ;;
    i) ingress_kind=$OPTARG ;;
    *) sed -n '2,21p' "$0"; exit 2 ;;
  esac
done
case "$ingress_kind" in
  afpacket) ingress="ingress afpacket" ;;
  afxdp) ingress="ingress afxdp mode generic" ;;
  *) echo "bench-l4: -i afpacket|afxdp" >&2; exit 2 ;;
esac
bin=${CARPIO:-$ROOT/target/release/carpio}
ctl=$(dirname "$bin")/carpioctl
for f in "$bin" "$ctl"; do
  [ -x "$f" ] || { echo "bench-l4: $f missing (make build)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench-l4: needs root (network namespaces)" >&2; exit 1; }
for t in ip ethtool ss nft iperf3 dnsperf dnsdist unbound jq; do
  command -v "$t" >/dev/null || { echo "bench-l4: $t missing: bash scripts/deps.sh" >&2; exit 1; }
done

out=$(mktemp -d /tmp/carpio-bench.XXXXXX)
echo "bench-l4: work directory $out"
LAB_TPL=$ROOT/scripts/lab
# shellcheck source=lab/topo.sh
. "$LAB_TPL/topo.sh"
trap 'lab_down; [ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT
trap 'exit 130' INT TERM

# --- measurement helpers ----------------------------------------------------------------------
hz=$(getconf CLK_TCK)
# utime+stime of PID in clock ticks (0 for no process).
proc_ticks() { [ "$1" = 0 ] && { echo 0; return; }; awk '{print $14 + $15}' "/proc/$1/stat"; }
# softirq ticks of all cores.
softirq_ticks() { awk '/^cpu /{print $8}' /proc/stat; }
# ns per unit: ns_per TICKS COUNT
ns_per() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN{ if (n > 0) printf "%.0f", t * 1e9 / hz / n; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a != "" && b > 0 && a != "n/a" && b != "n/a") printf "%.2f", a / b; else print "n/a" }'; }

RESULTS=()
# record NAME OFFERED_PER_S DELIVERED_PER_S LOSS_PCT PROC_NS SOFTIRQ_NS
record() { RESULTS+=("$(printf '%-22s %12s %12s %8s %10s %10s %10s' "$@" \
  "$(awk -v a="$5" -v b="$6" 'BEGIN{ if (a == "n/a" || b == "n/a") print "n/a"; else print a + b }')")"); }

# --- the lab ----------------------------------------------------------------------------------
lab_up
lab_servers "$out"
for b in "${LAB_BACKENDS[@]}"; do
  lab_spawn "$b" "$out/$b/iperf3.out" iperf3 -s -p 5201
done
for b in "${LAB_BACKENDS[@]}"; do lab_wait_port "$b" tcp 5201; done
printf 'who.svc.test TXT\nwww.svc.test A\n' >"$out/queries.txt"

cat >"$out/carpio.conf" <<EOF
interface lb0 { $ingress }
control socket "$out/carpio.sock"
table <bench> { 198.18.1.1, 198.18.1.2, 198.18.1.3 }
table <dns> { 198.18.1.1, 198.18.1.2, 198.18.1.3 }
# iperf3's control connection and its UDP stream must meet on one backend: hash the client.
redirect iperf {
  listen on $VIP udp port 5201
  listen on $VIP tcp port 5201
  forward to <bench> mode source-hash check icmp
}
redirect dns {
  listen on $VIP udp port 53
  forward to <dns> mode roundrobin check icmp
}
EOF

# udp_run NAME BALANCER_PID: 64-byte frames for $secs s; records the row.
udp_run() {
  local name=$1 pid=$2 p0 s0 p1 s1 sent lost recv try
  # One retry: an iperf3 server still closing the previous test answers "busy".
  for try in 1 2; do
    p0=$(proc_ticks "$pid"); s0=$(softirq_ticks)
    lab_in cl timeout $((secs + 15)) iperf3 -c $VIP -p 5201 -u -l 18 -b "${udp_mbit}M" -t "$secs" -J \
      >"$out/$name.json" 2>"$out/$name.err" || true
    p1=$(proc_ticks "$pid"); s1=$(softirq_ticks)
    sent=$(jq -r '.end.sum.packets // 0' "$out/$name.json" 2>/dev/null || echo 0)
    [ "$sent" != 0 ] && break
    echo "bench-l4: $name: iperf3: $(jq -r '.error // "no result"' "$out/$name.json" 2>/dev/null)" >&2
    sleep 1
  done
  lost=$(jq -r '.end.sum.lost_packets // 0' "$out/$name.json" 2>/dev/null || echo 0)
  recv=$((sent - lost))
  record "$name" "$((sent / secs))" "$((recv / secs))" \
    "$(awk -v s="$sent" -v l="$lost" 'BEGIN{ if (s > 0) printf "%.2f", 100 * l / s; else print "n/a" }')" \
    "$(ns_per $((p1 - p0)) $recv)" "$(ns_per $((s1 - s0)) $recv)"
}

# dns_run NAME BALANCER_PID
dns_run() {
  local name=$1 pid=$2 p0 s0 p1 s1
  p0=$(proc_ticks "$pid"); s0=$(softirq_ticks)
  lab_in cl timeout $((secs + 15)) dnsperf -s $VIP -d "$out/queries.txt" -l "$secs" -Q "$qps" -c 8 -q 2000 -t 1 \
    >"$out/$name.txt" 2>&1 || true
  p1=$(proc_ticks "$pid"); s1=$(softirq_ticks)
  local sent done
  sent=$(awk '/Queries sent:/{print $3}' "$out/$name.txt"); sent=${sent:-0}
  done=$(awk '/Queries completed:/{print $3}' "$out/$name.txt"); done=${done:-0}
  record "$name" "$((sent / secs))" "$((done / secs))" \
    "$(awk -v s="$sent" -v d="$done" 'BEGIN{ if (s > 0) printf "%.2f", 100 * (s - d) / s; else print "n/a" }')" \
    "$(ns_per $((p1 - p0)) "$done")" "$(ns_per $((s1 - s0)) "$done")"
}

# wait_vip PID: until DNS answers through the VIP (bounded), while PID runs.
wait_vip() {
  local i
  for i in $(seq 60); do
    kill -0 "$1" 2>/dev/null || return 1
    lab_in cl dig +short +time=1 +tries=1 TXT who.svc.test @$VIP 2>/dev/null | grep -q '"b' && return 0
    sleep 0.2
  done
  return 1
}

# The kernel runs first: no state of another run can be in its connection tracking.
# --- 1. the kernel: nftables DNAT (and the VIP on lb0, forwarding on) ---------------------------
echo "== kernel: nftables DNAT"
ip -n "$(lab_ns lb)" addr add $VIP/32 dev lb0
lab_in lb sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
  net.ipv4.conf.lb0.send_redirects=0
# One explicit seed: without it each jhash expression draws its own, and iperf3's control
# connection (tcp) and its stream (udp) would land on different backends.
lab_in lb nft -f - <<EOF
table ip cio_bench {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $VIP udp dport 5201 dnat to jhash ip saddr mod 3 seed 0xc10 map { 0 : 198.18.1.1, 1 : 198.18.1.2, 2 : 198.18.1.3 }
    ip daddr $VIP tcp dport 5201 dnat to jhash ip saddr mod 3 seed 0xc10 map { 0 : 198.18.1.1, 1 : 198.18.1.2, 2 : 198.18.1.3 }
  }
}
EOF
udp_run nft-dnat-udp64 0
lab_in lb nft delete table ip cio_bench
lab_in lb sysctl -qw net.ipv4.ip_forward=0
ip -n "$(lab_ns lb)" addr del $VIP/32 dev lb0

# --- 2. carpio --------------------------------------------------------------------------------
echo "== carpio ($ingress, $(basename "$bin") at $bin)"
lab_spawn lb "$out/carpio.log" "$bin" -d -f "$out/carpio.conf"
carpio_pid=$LAST_PID
# The workers' own busy time (time on non-empty batches, `show counters` worker_busy_ns) per
# frame they handled (worker_packets, both directions): carpio's cost without idle wake-ups.
busy() { lab_in lb "$ctl" -s "$out/carpio.sock" show counters 2>/dev/null |
  awk '$1 == "worker_busy_ns" {b = $2} $1 == "worker_packets" {p = $2} END {print b + 0, p + 0}'; }
busy_line() {
  awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { split(a, x, " "); split(b, y, " ");
    f = y[2] - x[2]; printf "  %-14s worker busy %.0f ns per frame over %d frames\n", n,
    (f > 0 ? (y[1] - x[1]) / f : 0), f }'; }
BUSY=()
if wait_vip "$carpio_pid"; then
  b0=$(busy)
  udp_run carpio-udp64 "$carpio_pid"
  b1=$(busy)
  dns_run carpio-dns "$carpio_pid"
  b2=$(busy)
  BUSY+=("$(busy_line carpio-udp64 "$b0" "$b1")" "$(busy_line carpio-dns "$b1" "$b2")")
else
  echo "bench-l4: carpio never answered through $VIP; its log:" >&2
  cat "$out/carpio.log" >&2
fi
kill -TERM "$carpio_pid" 2>/dev/null || true
for i in $(seq 30); do kill -0 "$carpio_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$carpio_pid" 2>/dev/null || true

# --- 3. dnsdist on the VIP ----------------------------------------------------------------------
echo "== dnsdist"
ip -n "$(lab_ns lb)" addr add $VIP/32 dev lb0
cat >"$out/dnsdist.conf" <<EOF
-- No security polling (a DNS query leaving the lab), no console, no carbon.
setSecurityPollSuffix("")
setLocal("$VIP:53")
setACL({"198.18.0.0/15"})
newServer({address="198.18.1.1:53"})
newServer({address="198.18.1.2:53"})
newServer({address="198.18.1.3:53"})
setServerPolicy(roundrobin)
EOF
lab_spawn lb "$out/dnsdist.log" dnsdist --supervised --disable-syslog -C "$out/dnsdist.conf"
dnsdist_pid=$LAST_PID
if wait_vip "$dnsdist_pid"; then
  dns_run dnsdist-dns "$dnsdist_pid"
else
  echo "bench-l4: dnsdist never answered; its log:" >&2
  cat "$out/dnsdist.log" >&2
fi

# --- report -----------------------------------------------------------------------------------
echo
echo "L4 benchmark: ${secs}s per case, UDP offered ${udp_mbit} Mbit/s of 18-byte payloads, DNS offered ${qps} qps"
printf '%-22s %12s %12s %8s %10s %10s %10s\n' case offered/s delivered/s loss% proc_ns softirq_ns total_ns
printf '%s\n' "${RESULTS[@]}"
[ ${#BUSY[@]} -gt 0 ] && printf '%s\n' "${BUSY[@]}"
row() { printf '%s\n' "${RESULTS[@]}" | awk -v n="$1" -v c="$2" '$1 == n {print $c}'; }
echo
echo "ratios carpio / baseline (delivered rate: higher is better; CPU per packet: lower is better)"
printf '  udp64 vs nft DNAT:  delivered %s  cpu/pkt %s\n' \
  "$(ratio "$(row carpio-udp64 3)" "$(row nft-dnat-udp64 3)")" "$(ratio "$(row carpio-udp64 7)" "$(row nft-dnat-udp64 7)")"
printf '  dns   vs dnsdist:   delivered %s  cpu/query %s\n' \
  "$(ratio "$(row carpio-dns 3)" "$(row dnsdist-dns 3)")" "$(ratio "$(row carpio-dns 7)" "$(row dnsdist-dns 7)")"
