/* The contract between the XDP program (lb.c) and its Rust controller
 * (src/maps.rs mirrors every struct here, #[repr(C)], field for field).
 * All addresses and ports are in network byte order, as on the wire.
 * An IPv4 address is stored in addr[0] with addr[1..3] zero. */
#ifndef EG_XDP_LB_H
#define EG_XDP_LB_H

#include <linux/types.h>

/* One Maglev table per service, the size the balancer uses (a prime,
 * 65 537 by default): userspace writes the table it built, so the kernel
 * and userspace map a key to the same backend. */
#define EG_MAGLEV_SLOTS 65537
/* Services (listener address/port/protocol) the plane serves: the maglev
 * map holds EG_MAX_SERVICES * EG_MAGLEV_SLOTS entries (16 MiB at 64). */
#define EG_MAX_SERVICES 64
/* Backends over all services; a service owns a contiguous range. */
#define EG_MAX_BACKENDS 4096
/* Userspace's Maglev re-probes an ineligible backend's key this many
 * times (mix(key + probe)) before scanning; the kernel does the same. */
#define EG_MAGLEV_PROBES 16
/* The Maglev key of a flow is the balancer's client-IP key
 * (eg_balancer::hash::hash_bytes over the 4 or 16 address octets in
 * wire order: FNV-1a 64 finished with SplitMix64); slot = key % table_size,
 * probe p >= 1 uses mix(key + p), then a scan from key % backend_count. */
/* Source ports for NATed flows: above Linux's default ephemeral range
 * (32768-60999), so they never collide with the kernel's own sockets. */
#define EG_NAT_PORT_MIN 61000
#define EG_NAT_PORT_MAX 65535

#define EG_FAMILY_V4 4
#define EG_FAMILY_V6 6

/* service.flags */
#define EG_SVC_TCP_NAT    1 /* tcp listener: the kernel takes new flows (SYN) */
#define EG_SVC_QUIC_MODEA 2 /* Mode A: only flows userspace installed; long headers pass */

struct eg_service_key {
	__u32 addr[4]; /* all zero: any local address (a wildcard listener) */
	__u16 port;
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;   /* EG_FAMILY_V4 or EG_FAMILY_V6 */
};

struct eg_service {
	__u32 id;            /* 0..EG_MAX_SERVICES: its maglev table is slots [id*EG_MAGLEV_SLOTS, ...) */
	__u32 backend_base;  /* first index in the backends map */
	__u32 backend_count;
	__u32 table_size;    /* this service's Maglev size (<= EG_MAGLEV_SLOTS) */
	__u32 flags;         /* EG_SVC_* */
};

struct eg_backend {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 eligible; /* 1 when userspace would pick it (healthy, not drained) */
};

/* A conntrack key: the packet's own 5-tuple as it arrives. */
struct eg_flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad; /* zero */
};

/* What to rewrite a packet of this flow to. A NATed flow has two
 * entries: client->listener becomes nat->backend, backend->nat becomes
 * listener->client. */
struct eg_flow {
	__u32 new_src[4];
	__u32 new_dst[4];
	__u16 new_sport;
	__u16 new_dport;
	__u32 backend;  /* index in the backends map (passive health, stats) */
	__u64 last_seen_ns; /* bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC_COARSE) of the last packet */
	__u8 reverse;   /* 1 on the backend->client entry */
	__u8 from_user; /* 1 when userspace installed it (Mode A) */
	__u8 tcp_state; /* EG_TCP_*: kernel-created TCP flows; userspace writes 0 */
	__u8 pad;
	__u32 pad2;
	/* Kernel-owned (userspace writes zeros): the egress bpf_fib_lookup
	 * gave for new_dst, asked again once older than EG_FIB_CACHE_NS, so
	 * route and neighbour changes apply within that time. A FIB lookup
	 * costs more than the rest of the hit path together. */
	__u64 fib_at_ns;
	__u32 fib_ifindex;
	__u8 fib_kind;   /* EG_FIB_* */
	__u8 fib_pad;
	__u8 fib_dmac[6];
	__u8 fib_smac[6];
	__u16 fib_pad2;
	__u32 fib_pad3;
};

/* eg_flow.tcp_state. The two entries of a kernel TCP flow find each
 * other: the partner's key is this entry's rewrite turned around
 * (src = new_dst, dst = new_src, sport = new_dport, dport = new_sport).
 * ESTABLISHED is 0 so entries userspace installs (Mode A, UDP) keep the
 * plain idle timeout. */
#define EG_TCP_ESTABLISHED 0 /* the backend answered: config.flow_idle_timeout_s */
#define EG_TCP_SYN         1 /* created by a SYN, the backend has not answered yet */
#define EG_TCP_CLOSING     2 /* a FIN or RST was forwarded either way */
/* An embryonic flow lives this long: a SYN flood's entries free their NAT
 * ports after seconds, not after the idle timeout (the LRU still evicts by
 * recency alone, so a flood within the rate cap can push idle flows out);
 * a client's SYN retransmissions (1 s, 3 s) still find it. */
#define EG_TCP_SYN_TIMEOUT_S 10
/* After a FIN or RST both entries linger this long past their last
 * packet, so the closing handshake and late retransmissions are
 * forwarded, and then free the NAT port. At least a backend's TIME_WAIT
 * (60 s on Linux): a port handed to a new flow sooner could meet the old
 * connection's TIME_WAIT on the backend. */
#define EG_TCP_CLOSE_LINGER_S 120

/* eg_flow.fib_kind */
#define EG_FIB_NONE   0 /* not asked yet (or it had no answer) */
#define EG_FIB_MACS   1 /* FIB success: its MACs, out fib_ifindex */
#define EG_FIB_ONEARM 2 /* no neighbour: swap the MACs, XDP_TX */
#define EG_FIB_CACHE_NS 1000000000ULL

/* Index 0 of the config array map. */
struct eg_config {
	__u32 new_flows_per_cpu_per_sec; /* rate cap; 0 = no new flows in the kernel */
	__u32 flow_idle_timeout_s;       /* an entry idle longer is a miss */
};

/* Per-CPU token state for the new-flow rate cap (index 0). */
struct eg_rate {
	__u64 window_start_ns;
	__u32 count;
	__u32 pad;
};

/* Index into the per-CPU stats array. */
enum eg_stat {
	EG_STAT_FWD_PACKETS = 0, /* forwarded in the kernel (conntrack hit or new flow) */
	EG_STAT_FWD_BYTES,
	EG_STAT_PASS,            /* handed to the kernel stack / userspace */
	EG_STAT_DROP,
	EG_STAT_RATE_CAP,        /* new flows passed to userspace over the cap */
	EG_STAT_NEW_FLOWS,
	EG_STAT_CT_HIT,
	EG_STAT_CT_MISS,
	EG_STAT_MAX,
};

/* Map names, as userspace finds them in the object. */
/* services:  BPF_MAP_TYPE_HASH       eg_service_key -> eg_service, EG_MAX_SERVICES */
/* backends:  BPF_MAP_TYPE_ARRAY      u32 -> eg_backend, EG_MAX_BACKENDS */
/* maglev:    BPF_MAP_TYPE_ARRAY      u32 -> u32 (backend offset within the service), EG_MAX_SERVICES*EG_MAGLEV_SLOTS */
/* conntrack: BPF_MAP_TYPE_LRU_HASH   eg_flow_key -> eg_flow, max_entries set by userspace at load */
/* config:    BPF_MAP_TYPE_ARRAY      u32 -> eg_config, 1 */
/* rate:      BPF_MAP_TYPE_PERCPU_ARRAY u32 -> eg_rate, 1 */
/* stats:     BPF_MAP_TYPE_PERCPU_ARRAY u32 -> u64, EG_STAT_MAX */

#endif
