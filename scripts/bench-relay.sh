#!/usr/bin/env bash
# carpio's TCP relay against HAProxy (and the no-balancer ceiling): connections per second and
# bulk throughput, the TCP part of `carpio bench`. Extra arguments go to `carpio bench`
# (e.g. --reps 5 --secs 3 -o DIR); CARPIO=path picks the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARPIO:-target/release/carpio}
[ -x "$bin" ] || { echo "bench-relay: $bin missing (make build)" >&2; exit 1; }
exec "$bin" bench --only tcp_conn,tcp_bulk -o target/bench/relay "$@"
