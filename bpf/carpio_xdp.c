/* SPDX-License-Identifier: ISC */
/*
 * carpio_xdp: steer carpio's traffic to the AF_XDP socket of the RX queue it arrived on, pass
 * everything else to the kernel. "carpio's traffic" is:
 *   - IPv4/IPv6 to a virtual service: carpio_svcs has {dst, proto, dport} or {dst, proto, 0}
 *     (with an optional port range in the value);
 *   - non-first IPv4/IPv6 fragments to a VIP address (they carry no ports; carpio decides);
 *   - ARP whose target protocol address is a VIP, IPv6 neighbour solicitations whose target is
 *     a VIP (carpio answers for the addresses it owns, as carp(4) does);
 *   - the NAT return path: packets FROM a backend {src, proto, sport} whose entry carries
 *     CARPIO_SVC_F_SRC (the backends route to clients through the balancer; carpio un-NATs).
 * CARP (IP protocol 112) and pfsync (IP protocol 240) are passed to the kernel and counted:
 * carpio's carp shell (src/carp/shell.rs) and pfsync shell (src/daemon/sync.rs) receive them
 * on raw sockets, which check TTL, interface and peer for every ingress alike.
 * The redirect uses XDP_PASS as the fallback action so an empty XSKMAP slot passes the packet
 * (bpf_redirect_map, include/uapi/linux/bpf.h: "the lower two bits of flags are used as the
 * return code if the map lookup fails").
 *
 * Build: clang -O2 -g -Wall -target bpf -I/usr/include/x86_64-linux-gnu -c carpio_xdp.c
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"

#define IPPROTO_CARP 112
#define IPPROTO_PFSYNC 240
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ND_NEIGHBOR_SOLICIT 135
/* ARP for Ethernet/IPv4 (RFC 826): 8-byte header then sha(6) spa(4) tha(6) tpa(4). */
#define ARP_OFF_TPA 24
#define ARP_LEN 28
/* IPv4 fragment offset mask and More Fragments flag (RFC 791). */
#define IP_OFFMASK 0x1fff
/* Extension headers walked before the upper-layer header (RFC 8200 4.1); bounded for the verifier. */
#define V6_EXT_MAX 4

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, CARPIO_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} carpio_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CARPIO_MAX_SERVICES);
	__type(key, struct carpio_svc_key);
	__type(value, struct carpio_svc_val);
} carpio_svcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CARPIO_MAX_VIPS);
	__type(key, struct carpio_vip_key);
	__type(value, __u32);
} carpio_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CARPIO_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} carpio_stats SEC(".maps");

static __always_inline int count(__u32 stat, int action)
{
	__u64 *v = bpf_map_lookup_elem(&carpio_stats, &stat);
	if (v)
		*v += 1;
	return action;
}

static __always_inline int steer(struct xdp_md *ctx, __u32 stat)
{
	int act = bpf_redirect_map(&carpio_xsks, ctx->rx_queue_index, XDP_PASS);
	if (act == XDP_REDIRECT)
		return count(stat, act);
	return count(CARPIO_STAT_PASS_NO_XSK, act);
}

static __always_inline void v4_mapped(__u8 out[16], __be32 a)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], &a, 4);
}

static __always_inline int is_vip(const __u8 addr[16])
{
	struct carpio_vip_key k;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&carpio_vips, &k) != 0;
}

/*
 * Looks up {addr, proto, port}, then {addr, proto, 0} with its optional range. `want` is the
 * flag an entry must have (CARPIO_SVC_F_SRC for a source match), `deny` one it must not have
 * (CARPIO_SVC_F_NODST for a destination match).
 */
static __always_inline int lookup_svc(const __u8 addr[16], __u8 proto, __be16 port, __u32 want,
				      __u32 deny)
{
	struct carpio_svc_key k = {};
	struct carpio_svc_val *v;
	__u16 p;

	__builtin_memcpy(k.addr, addr, 16);
	k.proto = proto;
	k.port = port;
	if (port) {
		v = bpf_map_lookup_elem(&carpio_svcs, &k);
		if (v && (v->flags & want) == want && !(v->flags & deny))
			return 1;
	}
	k.port = 0;
	v = bpf_map_lookup_elem(&carpio_svcs, &k);
	if (!v || (v->flags & want) != want || (v->flags & deny))
		return 0;
	if (v->port_lo == 0 && v->port_hi == 0)
		return 1;
	p = bpf_ntohs(port);
	return p >= v->port_lo && p <= v->port_hi;
}

static __always_inline int is_service(const __u8 dst[16], __u8 proto, __be16 dport)
{
	return lookup_svc(dst, proto, dport, 0, CARPIO_SVC_F_NODST);
}

static __always_inline int is_return(const __u8 src[16], __u8 proto, __be16 sport)
{
	return lookup_svc(src, proto, sport, CARPIO_SVC_F_SRC, 0);
}

/* Ports of a TCP, UDP or SCTP header at l4 (all start with sport, dport), 0 otherwise. */
static __always_inline int ports_of(void *l4, void *end, __u8 proto, __be16 *sport, __be16 *dport)
{
	*sport = 0;
	*dport = 0;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return 0;
	if (l4 + 4 > end)
		return -1;
	*sport = ((__be16 *)l4)[0];
	*dport = ((__be16 *)l4)[1];
	return 0;
}

SEC("xdp")
int carpio_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3;
	__u16 proto;
	__u8 dst[16];
	__u8 src[16];
	__be16 sport, dport;

	if ((void *)(eth + 1) > end)
		return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
	proto = eth->h_proto;
	l3 = eth + 1;
	/* One 802.1Q / 802.1ad tag: TCI(2) then the inner ethertype(2). */
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		if (l3 + 4 > end)
			return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
		proto = ((__be16 *)l3)[1];
		l3 += 4;
	}

	if (proto == bpf_htons(ETH_P_ARP)) {
		__be32 tpa;
		if (l3 + ARP_LEN > end)
			return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
		__builtin_memcpy(&tpa, l3 + ARP_OFF_TPA, 4);
		v4_mapped(dst, tpa);
		if (is_vip(dst))
			return steer(ctx, CARPIO_STAT_REDIRECT_ARP);
		return count(CARPIO_STAT_PASS_NO_MATCH, XDP_PASS);
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		void *l4;
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
		l4 = l3 + ip->ihl * 4;
		if (ip->protocol == IPPROTO_CARP)
			return count(CARPIO_STAT_PASS_CARP, XDP_PASS);
		if (ip->protocol == IPPROTO_PFSYNC)
			return count(CARPIO_STAT_PASS_PFSYNC, XDP_PASS);
		v4_mapped(dst, ip->daddr);
		if (ip->frag_off & bpf_htons(IP_OFFMASK)) {
			if (is_vip(dst))
				return steer(ctx, CARPIO_STAT_REDIRECT_FRAGMENT);
			return count(CARPIO_STAT_PASS_NO_MATCH, XDP_PASS);
		}
		if (ports_of(l4, end, ip->protocol, &sport, &dport) < 0)
			return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
		if (is_service(dst, ip->protocol, dport))
			return steer(ctx, CARPIO_STAT_REDIRECT_SERVICE);
		v4_mapped(src, ip->saddr);
		if (is_return(src, ip->protocol, sport))
			return steer(ctx, CARPIO_STAT_REDIRECT_RETURN);
		return count(CARPIO_STAT_PASS_NO_MATCH, XDP_PASS);
	}

	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		void *l4;
		__u8 nh;
		int frag = 0;
		if ((void *)(ip6 + 1) > end)
			return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		nh = ip6->nexthdr;
		l4 = ip6 + 1;
#pragma unroll
		for (int i = 0; i < V6_EXT_MAX; i++) {
			if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
				/* next header(1), length in 8-octet units not counting the first 8 (RFC 8200 4.3). */
				__u8 *h = l4;
				if ((void *)(h + 2) > end)
					return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
				nh = h[0];
				l4 += (h[1] + 1) * 8;
			} else if (nh == IPPROTO_FRAGMENT) {
				/* next header(1), reserved(1), offset(13 bits)+flags(3), id(4) (RFC 8200 4.5). */
				__u8 *h = l4;
				if ((void *)(h + 8) > end)
					return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
				nh = h[0];
				if (((__be16 *)h)[1] & bpf_htons(0xfff8))
					frag = 1;
				l4 += 8;
			} else {
				break;
			}
		}
		if (nh == IPPROTO_CARP)
			return count(CARPIO_STAT_PASS_CARP, XDP_PASS);
		if (nh == IPPROTO_PFSYNC)
			return count(CARPIO_STAT_PASS_PFSYNC, XDP_PASS);
		if (frag) {
			if (is_vip(dst))
				return steer(ctx, CARPIO_STAT_REDIRECT_FRAGMENT);
			return count(CARPIO_STAT_PASS_NO_MATCH, XDP_PASS);
		}
		if (nh == IPPROTO_ICMPV6) {
			/* NS: type(1) code(1) cksum(2) reserved(4) target(16) (RFC 4861 4.3). */
			__u8 *icmp = l4;
			if ((void *)(icmp + 1) > end)
				return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
			if (icmp[0] == ND_NEIGHBOR_SOLICIT) {
				__u8 target[16];
				if ((void *)(icmp + 24) > end)
					return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
				__builtin_memcpy(target, icmp + 8, 16);
				if (is_vip(target))
					return steer(ctx, CARPIO_STAT_REDIRECT_ND);
				return count(CARPIO_STAT_PASS_NO_MATCH, XDP_PASS);
			}
		}
		if (ports_of(l4, end, nh, &sport, &dport) < 0)
			return count(CARPIO_STAT_PASS_TRUNCATED, XDP_PASS);
		if (is_service(dst, nh, dport))
			return steer(ctx, CARPIO_STAT_REDIRECT_SERVICE);
		__builtin_memcpy(src, &ip6->saddr, 16);
		if (is_return(src, nh, sport))
			return steer(ctx, CARPIO_STAT_REDIRECT_RETURN);
		return count(CARPIO_STAT_PASS_NO_MATCH, XDP_PASS);
	}

	return count(CARPIO_STAT_PASS_NOT_IP, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
