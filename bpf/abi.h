/* SPDX-License-Identifier: ISC */
/*
 * carpio XDP <-> userspace ABI: map names, key/value layouts and stats indices.
 *
 * Mirrored byte for byte by src/sys/bpf.rs (a unit test there checks every size and offset
 * against the constants below). Change both or neither.
 *
 * All multi-byte fields that come from packets (addresses, ports) are in network byte order,
 * exactly as they appear on the wire, so the program never byte-swaps on the fast path. Fields
 * that only userspace writes (port ranges) are host order.
 */
#ifndef CARPIO_ABI_H
#define CARPIO_ABI_H

#include <linux/types.h>

/* Number of XSKMAP slots: one per RX queue; queues above this are passed to the kernel. */
#define CARPIO_MAX_QUEUES 64
/* Capacity of the service and VIP hash maps. */
#define CARPIO_MAX_SERVICES 4096
#define CARPIO_MAX_VIPS 1024

/*
 * Key of `carpio_svcs`: a virtual service. IPv4 addresses are stored v4-mapped
 * (::ffff:a.b.c.d, RFC 4291 2.5.5.2) so one map serves both families.
 *   0        16     17     18       20
 *   +--------+------+------+--------+
 *   | addr   |proto | pad  | port   |
 *   +--------+------+------+--------+
 * port == 0 means "any port or the range in the value".
 */
struct carpio_svc_key {
	__u8 addr[16];
	__u8 proto;
	__u8 pad;      /* must be zero: part of the hashed key */
	__be16 port;
};
#define CARPIO_SVC_KEY_SIZE 20
#define CARPIO_SVC_KEY_OFF_ADDR 0
#define CARPIO_SVC_KEY_OFF_PROTO 16
#define CARPIO_SVC_KEY_OFF_PAD 17
#define CARPIO_SVC_KEY_OFF_PORT 18

/*
 * Value of `carpio_svcs`. For an exact-port key it is ignored (flags aside). For a port-0 key,
 * port_lo..=port_hi (host order) is the accepted port range; 0..=0 means any port.
 *
 * flags: with CARPIO_SVC_F_SRC the entry also matches packets FROM {addr, proto, port} (the
 * source address and source port): the NAT return path, a backend answering a client through
 * the balancer. With CARPIO_SVC_F_NODST it does not match as a destination (a backend address
 * is not a virtual service). 0 is a plain virtual service.
 */
struct carpio_svc_val {
	__u16 port_lo;
	__u16 port_hi;
	__u32 flags;
};
#define CARPIO_SVC_F_SRC 1
#define CARPIO_SVC_F_NODST 2
#define CARPIO_SVC_VAL_SIZE 8
#define CARPIO_SVC_VAL_OFF_PORT_LO 0
#define CARPIO_SVC_VAL_OFF_PORT_HI 2
#define CARPIO_SVC_VAL_OFF_FLAGS 4

/* Key of `carpio_vips`: a virtual address (v4-mapped for IPv4) answered for ARP / ND. */
struct carpio_vip_key {
	__u8 addr[16];
};
#define CARPIO_VIP_KEY_SIZE 16
/* Value of `carpio_vips`: reserved, zero. */
#define CARPIO_VIP_VAL_SIZE 4

/* Indices of the per-CPU `carpio_stats` array (__u64 each). */
enum carpio_stat {
	CARPIO_STAT_REDIRECT_SERVICE = 0,  /* IPv4/IPv6 to a virtual service */
	CARPIO_STAT_REDIRECT_ARP = 1,      /* ARP whose target is a VIP */
	CARPIO_STAT_REDIRECT_ND = 2,       /* IPv6 neighbour solicitation for a VIP */
	CARPIO_STAT_PASS_CARP = 3,         /* IP protocol 112: to the carp shell's raw socket */
	CARPIO_STAT_PASS_PFSYNC = 4,       /* IP protocol 240: to the kernel's raw socket */
	CARPIO_STAT_REDIRECT_FRAGMENT = 5, /* non-first fragment to a VIP address */
	CARPIO_STAT_PASS_NOT_IP = 6,       /* ethertype neither IPv4, IPv6 nor ARP */
	CARPIO_STAT_PASS_NO_MATCH = 7,     /* IP/ARP but not carpio's */
	CARPIO_STAT_PASS_TRUNCATED = 8,    /* headers shorter than they claim */
	CARPIO_STAT_PASS_NO_XSK = 9,       /* carpio's, but no socket on this RX queue */
	CARPIO_STAT_REDIRECT_RETURN = 10,  /* from a NAT backend's address and port */
	CARPIO_STAT_MAX = 11,
};

/* Map names (ELF section symbols) userspace looks up. */
#define CARPIO_MAP_XSKS "carpio_xsks"
#define CARPIO_MAP_SVCS "carpio_svcs"
#define CARPIO_MAP_VIPS "carpio_vips"
#define CARPIO_MAP_STATS "carpio_stats"
#define CARPIO_PROG "carpio_xdp"

#endif
