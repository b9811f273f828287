#!/usr/bin/env bash
# Installs every Debian package carpio's build, tests, demo and benchmarks need.
# Idempotent and quiet when everything is present. Services shipped by these packages
# (nsd, chrony, nginx, opensmtpd, ...) are never started by the install: the tests start
# their own instances inside network namespaces, and nothing may talk to the outside world.
#
# usage: scripts/deps.sh [build|test|all]   (default: all)
set -euo pipefail

# Build: clang/llvm and libbpf headers for bpf/, pkg-config for -sys crates.
BUILD_PKGS=(clang llvm libbpf-dev pkg-config make gcc libc6-dev)
# Fuzzing (scripts/fuzz.sh): libfuzzer-sys compiles libFuzzer's C++ sources.
BUILD_PKGS+=(g++)
# Tests and demo: namespaces, traffic and capture tools, and the real servers and clients
# the end-to-end scenarios drive.
TEST_PKGS=(iproute2 ethtool nftables tcpdump tshark iputils-ping procps psmisc
           ucarp python3 openssl
           # man page lint (tests/man_pages.rs: mandoc -T lint)
           mandoc
           # real backends of the e2e tests, the demo and the L4 benchmark
           nsd unbound chrony opensmtpd nginx-light haproxy
           # real clients
           dnsutils dnsperf sntp swaks curl iperf3
           # benchmark baseline (DNS proxy)
           dnsdist jq bind9-dnsutils
           # routing daemon of the ECMP scale-out lab (route health injection)
           bird2

           # `carpio bench gen` send-rate reference (tcpreplay --topspeed)
           tcpreplay)
WANT=("${BUILD_PKGS[@]}")
case "${1:-all}" in
  build) ;;
  test|all) WANT+=("${TEST_PKGS[@]}") ;;
  *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${WANT[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting daemons in the root namespace (policy-rc.d, 101 = deny).
prc=/usr/sbin/policy-rc.d
had_prc=0; [ -e "$prc" ] && had_prc=1
if [ $had_prc -eq 0 ]; then printf '#!/bin/sh\nexit 101\n' > "$prc"; chmod +x "$prc"; fi
trap '[ $had_prc -eq 0 ] && rm -f "$prc"' EXIT
echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
apt_log=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
  cat "$apt_log" >&2; rm -f "$apt_log"; exit 1
fi
rm -f "$apt_log"
