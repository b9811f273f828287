#!/usr/bin/env bash
# make bench-l4: the L4 part of `carpio bench` (README "L4 benchmark"): 64-byte UDP (carpio vs
# nftables DNAT vs the no-balancer ceiling), DNS through the engine and dnsperf (carpio vs
# dnsdist) and NTP, in the suite's network-namespace lab. Extra arguments go to `carpio bench`
# (e.g. --reps 5 --secs 3 --pps 80000 --ingress afxdp -o DIR); CARPIO=path picks the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARPIO:-target/release/carpio}
[ -x "$bin" ] || { echo "bench-l4: $bin missing (make build)" >&2; exit 1; }
exec "$bin" bench --only udp,dns,dnsperf,ntp -o target/bench/l4 "$@"
