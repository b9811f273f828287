#!/bin/sh
# usage: smtpd-ns.sh DIR — runs `smtpd -d -f DIR/smtpd.conf` inside the private mount namespace
# that `ip netns exec` gives it, with two private files:
#  - /run (tmpfs): smtpd's control socket path is fixed (/run/smtpd.sock), so instances in
#    several namespaces would refuse each other;
#  - /etc/resolv.conf -> 127.0.0.1: smtpd looks up each client's reverse DNS before its banner;
#    the backend's own unbound answers at once instead of a resolver outside the lab.
set -eu
dir=$1
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$dir/resolv.conf"
if [ -L /etc/resolv.conf ]; then
  mount -t tmpfs none /run
  target=$(readlink -f /etc/resolv.conf)
  mkdir -p "$(dirname "$target")"
  cp "$dir/resolv.conf" "$target"
else
  mount --bind "$dir/resolv.conf" /etc/resolv.conf
  mount -t tmpfs none /run
fi
exec smtpd -d -f "$dir/smtpd.conf"
