# shellcheck shell=bash
# The one-armed NAT lab that scripts/demo.sh and scripts/bench-l4.sh build (tests/e2e_services.rs
# builds the same one with carpio::lab::Lab). Source this file; it defines functions only.
#
#   cio-$$-br   bridge br0 ── p-cl ── eth0 cio-$$-cl  198.18.0.100/24        (client)
#                        ├── p-lb ── lb0  cio-$$-lb  198.18.0.2/24, 198.18.1.254/24, forwarding off
#                        ├── p-b1 ── eth0 cio-$$-b1  198.18.1.1/24 via 198.18.1.254
#                        ├── p-b2 ── eth0 cio-$$-b2  198.18.1.2/24 via 198.18.1.254
#                        └── p-b3 ── eth0 cio-$$-b3  198.18.1.3/24 via 198.18.1.254
#
# The VIPs (198.18.0.10 NAT, .11 DSR, .12 IPIP) are on no interface of the LB: carpio answers
# ARP for them. Backends hold .11 and .12 on lo (arp_ignore/arp_announce so they never answer
# ARP for them) for the DSR and IPIP redirects, and answer from them straight to the client's
# segment (policy rule, table 100). Decapsulating IPIP needs the kernel's ipip support, which
# some VMs lack; the lab does not create a tunnel device.
#
# Network safety (DESIGN.md): namespaces only (cio-<pid>-...), addresses in 198.18.0.0/15,
# nothing in the root namespace; lab_down kills every process left in our namespaces by PID.

LAB_P="cio-$$"
LAB_NS=()
LAB_PIDS=()
LAB_BACKENDS=(b1 b2 b3)
VIP=198.18.0.10
VIP_DSR=198.18.0.11
VIP_IPIP=198.18.0.12
CLIENT=198.18.0.100

lab_ns() { echo "$LAB_P-$1"; }
lab_in() { local n=$1; shift; ip netns exec "$LAB_P-$n" "$@"; }

lab_add_ns() {
  ip netns add "$LAB_P-$1"
  LAB_NS+=("$LAB_P-$1")
  ip -n "$LAB_P-$1" link set lo up
}

# veth NAME_IN_NS <-> p-SHORT in the bridge namespace; checksums computed in software on the
# endpoint (veth's TX checksum offload leaves CHECKSUM_PARTIAL packets that carpio would pass
# on with a half-done checksum, which a NIC never delivers).
lab_port() {
  local short=$1 ifname=$2
  ip -n "$LAB_P-br" link add "p-$short" type veth peer name "$ifname" netns "$LAB_P-$short"
  ip -n "$LAB_P-br" link set "p-$short" master br0 up
  ip -n "$LAB_P-$short" link set "$ifname" up
  lab_in "$short" ethtool -K "$ifname" tx off >/dev/null
}

lab_up() {
  lab_add_ns br
  ip -n "$LAB_P-br" link add br0 type bridge
  ip -n "$LAB_P-br" link set br0 up
  lab_add_ns cl; lab_port cl eth0
  ip -n "$LAB_P-cl" addr add $CLIENT/24 dev eth0
  lab_add_ns lb; lab_port lb lb0
  ip -n "$LAB_P-lb" addr add 198.18.0.2/24 dev lb0
  ip -n "$LAB_P-lb" addr add 198.18.1.254/24 dev lb0
  lab_in lb sysctl -qw net.ipv4.ip_forward=0
  local i=1 b
  for b in "${LAB_BACKENDS[@]}"; do
    lab_add_ns "$b"; lab_port "$b" eth0
    ip -n "$LAB_P-$b" addr add "198.18.1.$i/24" dev eth0
    ip -n "$LAB_P-$b" route add default via 198.18.1.254
    # DSR and IPIP answers (source: a VIP) go straight to the client's segment; NAT answers
    # (source: the backend's own address) take the default route through the balancer.
    ip -n "$LAB_P-$b" route add 198.18.0.0/24 dev eth0 table 100
    ip -n "$LAB_P-$b" rule add from $VIP_DSR table 100
    ip -n "$LAB_P-$b" rule add from $VIP_IPIP table 100
    ip -n "$LAB_P-$b" addr add $VIP_DSR/32 dev lo
    ip -n "$LAB_P-$b" addr add $VIP_IPIP/32 dev lo
    lab_in "$b" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    i=$((i + 1))
  done
}

# lab_spawn NS LOG CMD...: runs CMD in the background inside NS, remembers its PID.
lab_spawn() {
  local n=$1 log=$2; shift 2
  ip netns exec "$LAB_P-$n" "$@" >"$log" 2>&1 &
  LAB_PIDS+=($!)
  LAST_PID=$!
}

# Writes a template from scripts/lab/ with @NAME@ @ADDR@ @DIR@ @STRATUM@ filled in.
lab_template() {
  local tpl=$1 out=$2 name=$3 addr=$4 dir=$5 stratum=$6
  sed -e "s|@NAME@|$name|g" -e "s|@ADDR@|$addr|g" -e "s|@DIR@|$dir|g" \
      -e "s|@STRATUM@|$stratum|g" "$LAB_TPL/$tpl" >"$out"
}

# Waits (bounded) until NS has a socket listening on PORT (tcp or udp).
lab_wait_port() {
  local n=$1 proto=$2 port=$3 i
  for i in $(seq 50); do
    if lab_in "$n" ss -Hln"${proto:0:1}" "sport = :$port" | grep -q .; then return 0; fi
    sleep 0.1
  done
  echo "lab: nothing listens on $proto/$port in $n" >&2
  return 1
}

# Starts unbound (DNS), chronyd (NTP), OpenSMTPD (SMTP) and nginx (HTTP) on every backend.
# Backend bN answers TXT who.svc.test "bN", serves NTP at stratum 2+N, greets SMTP as
# bN.svc.test and serves a page "bN".
lab_servers() {
  local root=$1 i=1 b d
  for b in "${LAB_BACKENDS[@]}"; do
    d=$root/$b; mkdir -p "$d/www" "$d/tmp"
    local a=198.18.1.$i
    echo "$b" >"$d/www/index.html"
    lab_template unbound.conf.in "$d/unbound.conf" "$b" "$a" "$d" $((2 + i))
    lab_template chrony.conf.in "$d/chrony.conf" "$b" "$a" "$d" $((2 + i))
    lab_template smtpd.conf.in "$d/smtpd.conf" "$b" "$a" "$d" $((2 + i))
    chmod 600 "$d/smtpd.conf"
    lab_template nginx.conf.in "$d/nginx.conf" "$b" "$a" "$d" $((2 + i))
    lab_spawn "$b" "$d/unbound.out" unbound -d -c "$d/unbound.conf"
    lab_spawn "$b" "$d/chrony.out" chronyd -x -d -u root -f "$d/chrony.conf"

    # /run inside the mount namespace `ip netns exec` already made for it.
    lab_spawn "$b" "$d/smtpd.out" sh "$LAB_TPL/smtpd-ns.sh" "$d"
    lab_spawn "$b" "$d/nginx.out" nginx -p "$d" -e "$d/nginx.err" -c "$d/nginx.conf"
    i=$((i + 1))
  done
  for b in "${LAB_BACKENDS[@]}"; do
    lab_wait_port "$b" udp 53 && lab_wait_port "$b" udp 123 && lab_wait_port "$b" tcp 25 &&
      lab_wait_port "$b" tcp 80 || return 1
  done
}

# Kills what we started (SIGTERM, then SIGKILL), then every process still inside one of our
# namespaces (forked children), by PID, then deletes the namespaces. Safe to call twice.
lab_down() {
  local p n i
  for p in "${LAB_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 20); do
    local alive=0
    for p in "${LAB_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for p in "${LAB_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  # Also the namespaces a subshell made: they all carry this shell's prefix.
  local all
  all=$( { printf '%s\n' "${LAB_NS[@]}"; ip netns list 2>/dev/null | awk '{print $1}' |
           grep "^$LAB_P-" ; } | sort -u | grep . || true)
  for n in $all; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  wait 2>/dev/null || true
  for n in $all; do ip netns delete "$n" 2>/dev/null || true; done
  LAB_PIDS=(); LAB_NS=()
}
