#!/usr/bin/env bash
# make demo: what carpio does today, on an embedded default.
# Builds a synthetic capture of DNS, NTP and SMTP client flows toward two virtual addresses,
# replays it through carpio's receive path, then replays the hostile/real tcpdump corpus,
# printing what happened to every frame.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/carpio
out=$(mktemp -d /tmp/carpio-demo.XXXXXX)
trap 'rm -rf "$out"' EXIT

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
