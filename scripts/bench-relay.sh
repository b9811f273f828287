#!/usr/bin/env bash
# carpio's TCP relay (splice) against HAProxy (tcp mode, splice) in the same lab, same run.
#
#   cl 198.18.1.2 ──veth── rl 198.18.1.1 (carpio :7000/:7001, haproxy :6000/:6001)
#                          rl 198.18.2.1 ──veth── sv 198.18.2.11 (iperf3 :5201, echo :7001)
#
# Figures, each the median of RUNS runs (min–max shown): iperf3 throughput, connections per
# second (connect, 1-byte echo, close), and relay memory per idle connection (VmRSS delta / N).
# Ratios are carpio / HAProxy. The machine has 2 shared cores: client, relay and server compete,
# so absolute numbers are noisy; the ratio of runs interleaved in one session is what counts.
#
# Network safety: namespaces cio-bench-relay-*, addresses in 198.18.0.0/15 only, every process
# started here is killed by PID and every namespace deleted on exit (also on failure).
#
# usage: sudo scripts/bench-relay.sh [RUNS]   (needs: iperf3 haproxy; builds relay_run --release)
set -euo pipefail
RUNS=${1:-3}
SECS=${SECS:-5}
HOLD=${HOLD:-2000}
P=cio-bench-relay-$$
CL=$P-cl RL=$P-rl SV=$P-sv
TMP=$(mktemp -d /tmp/cio-bench-relay.XXXXXX)
PIDS=()
cd "$(dirname "$0")/.."

for t in iperf3 haproxy python3; do
  command -v $t >/dev/null || { echo "bench-relay: $t missing (bash scripts/deps.sh)" >&2; exit 1; }
done

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in $CL $RL $SV; do ip netns delete $n 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

cargo build --release --example relay_run -q
BIN=$PWD/target/release/examples/relay_run

for n in $CL $RL $SV; do ip netns add $n; ip -n $n link set lo up; done
ip -n $CL link add c0 type veth peer name r0 netns $RL
ip -n $RL link add r1 type veth peer name s0 netns $SV
ip -n $CL addr add 198.18.1.2/24 dev c0
ip -n $RL addr add 198.18.1.1/24 dev r0
ip -n $RL addr add 198.18.2.1/24 dev r1
ip -n $SV addr add 198.18.2.11/24 dev s0
for x in "$CL c0" "$RL r0" "$RL r1" "$SV s0"; do set -- $x; ip -n $1 link set $2 up; done

bg() { local ns=$1; shift; ip netns exec $ns "$@" & PIDS+=($!); }

bg $SV iperf3 -s -p 5201 >/dev/null 2>&1
bg $SV "$BIN" echo 198.18.2.11:7001 4 >/dev/null

cat > "$TMP/carpio.conf" <<EOF
protocol bench { tcp { nodelay, backlog 512 } }
relay bulk {
  listen on 198.18.1.1 port 7000
  protocol bench
  forward to 198.18.2.11 port 5201
}
relay conn {
  listen on 198.18.1.1 port 7001
  protocol bench
  forward to 198.18.2.11 port 7001
}
EOF
cat > "$TMP/haproxy.cfg" <<EOF
global
  maxconn 4000
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option splice-request
  option splice-response
frontend bulk
  bind 198.18.1.1:6000
  default_backend bulk
backend bulk
  server s1 198.18.2.11:5201
frontend conn
  bind 198.18.1.1:6001
  default_backend conn
backend conn
  server s1 198.18.2.11:7001
EOF

# HAProxy first: whatever is started after fd 9 opens inherits it and would keep the relay's
# stdin open (the relay prints its counters at EOF).
ip netns exec $RL haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAPROXY=$!; PIDS+=($HAPROXY)
mkfifo "$TMP/carpio.in"
ip netns exec $RL "$BIN" relay "$TMP/carpio.conf" 2 < "$TMP/carpio.in" > "$TMP/carpio.out" &
CARPIO=$!; PIDS+=($CARPIO)
exec 9> "$TMP/carpio.in"
for _ in $(seq 50); do grep -q ready "$TMP/carpio.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$TMP/carpio.out" || { echo "carpio relay did not start" >&2; exit 1; }
sleep 0.5
kill -0 $HAPROXY 2>/dev/null || { echo "haproxy did not start:" >&2; cat "$TMP/haproxy.log" >&2; exit 1; }

gbps() { ip netns exec $CL iperf3 -c 198.18.1.1 -p $1 -t $SECS -J > "$TMP/iperf.json" 2>&1 || true
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.2f" % (j["end"]["sum_received"]["bits_per_second"]/1e9)) if "sum_received" in j.get("end",{}) else sys.exit("iperf3: %s" % j.get("error"))' "$TMP/iperf.json"; }
cps() { ip netns exec $CL "$BIN" connrate 198.18.1.1:$1 3 2 | awk '{print $1}'; }
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
# HAProxy's master/worker: -db keeps one process; the PID is `ip netns exec`'s, which execs.
mem() { # port pid -> KiB per idle connection
  local before after
  before=$(rss $2)
  ip netns exec $CL "$BIN" hold 198.18.1.1:$1 $HOLD 4 > "$TMP/hold" &
  local h=$!
  for _ in $(seq 100); do grep -q held "$TMP/hold" 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  after=$(rss $2)
  wait $h || true
  python3 -c "print('%.2f' % (($after - $before) / $HOLD))"
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%s [%s-%s]", m, a[1], a[NR]}'; }

declare -A R
for i in $(seq $RUNS); do
  R[ct]+="$(gbps 7000) "; R[ht]+="$(gbps 6000) "
  R[cc]+="$(cps 7001) "; R[hc]+="$(cps 6001) "
done
R[cm]="$(mem 7001 $CARPIO)"; R[hm]="$(mem 6001 $HAPROXY)"

med() { echo "${R[$1]}" | median; }
num() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "print('%.2f' % ($(num $1) / max($(num $2), 1e-9)))"; }
echo "runs: $RUNS, iperf3 ${SECS}s, connrate 3s x 2 threads, idle connections: $HOLD"
printf '%-28s %-26s %-26s %s\n' metric carpio haproxy ratio
printf '%-28s %-26s %-26s %s\n' "throughput Gbit/s" "$(med ct)" "$(med ht)" "$(ratio ct ht)"
printf '%-28s %-26s %-26s %s\n' "connections/s" "$(med cc)" "$(med hc)" "$(ratio cc hc)"
printf '%-28s %-26s %-26s %s\n' "KiB RSS per idle conn" "${R[cm]}" "${R[hm]}" "$(ratio cm hm)"
exec 9>&-
for _ in $(seq 30); do kill -0 $CARPIO 2>/dev/null || break; sleep 0.1; done
echo "carpio counters:"; grep -v ready "$TMP/carpio.out" | sed 's/^/  /' || true
