// SPDX-License-Identifier: GPL-2.0
/* The XDP fast path (SPEC §10). The contract with userspace is lb.h.
 *
 * What it does, per packet:
 *   parse Ethernet, up to two VLAN tags, IPv4 (no options, no fragments)
 *   or IPv6 (TCP/UDP as the first next header), TCP or UDP;
 *   conntrack hit (a fresh entry for the arriving 5-tuple): rewrite and send;
 *   miss on a TCP_NAT service with a pure SYN under the per-CPU rate cap:
 *   pick the backend as userspace would (Maglev), create the flow, send;
 *   anything else: XDP_PASS, and the userspace datapath (the source of
 *   truth) handles it as if this program were not there.
 *
 * Return path: NAT both ways, no DSR. A new flow gets two entries:
 *   forward  client:cport -> listener:lport   becomes  listener:natport -> backend:bport
 *   reverse  backend:bport -> listener:natport becomes  listener:lport -> client:cport
 * so the backend answers the gateway (its own address, a port in
 * EG_NAT_PORT_MIN..MAX, above the kernel's ephemeral range), and the
 * client only ever sees the listener address. Entries live until idle
 * longer than their state's timeout or evicted by the LRU (lb.h,
 * EG_TCP_*): a SYN's pair is embryonic (EG_TCP_SYN_TIMEOUT_S) until the
 * backend answers, then established (config.flow_idle_timeout_s); a FIN
 * or RST either way cuts both entries to EG_TCP_CLOSE_LINGER_S, so late
 * retransmissions still find the backend and the NAT port comes back.
 * A pure SYN on a closing pair, or on one whose reverse entry is gone or
 * stale, is a new connection: the pair is removed and the SYN placed again.
 * A stale reverse entry's port is free to a new flow (its partner goes).
 *
 * Egress: bpf_fib_lookup on the rewritten destination. SUCCESS: MACs from
 * the FIB, XDP_TX on the ingress interface, else bpf_redirect (VLAN-tagged
 * packets only leave the way they came: a redirect would need the tag of
 * another device). NO_NEIGH: "one-arm": the gateway sits on one segment
 * with client and backend behind the same neighbour (a router), so the
 * frame goes back where it came from with its Ethernet addresses swapped
 * (XDP_TX). Any other answer (no route, forwarding disabled on the
 * interface, MTU): XDP_PASS of the untouched packet. The answer is kept in
 * the flow entry for EG_FIB_CACHE_NS (a lookup costs more than the rest of
 * the hit path together); a backend on the local segment must have a
 * resolved neighbour (userspace's health checks resolve it), else it would
 * be taken for one-arm.
 *
 * Time is bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE): idle timeouts
 * and the rate window are seconds, and the precise clock costs ~50 ns.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define NS_PER_SEC 1000000000ULL
/* NAT ports tried (each a fresh hash) before a new flow gives up and
 * passes: with a backend's ports 60% taken by live flows, 16 tries fail
 * once in 3500 new flows. */
#define NAT_TRIES 16

/* ---- maps (lb.h lists them) ---- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EG_MAX_SERVICES);
	__type(key, struct eg_service_key);
	__type(value, struct eg_service);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EG_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct eg_backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EG_MAX_SERVICES * EG_MAGLEV_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* userspace sets the size at load */
	__type(key, struct eg_flow_key);
	__type(value, struct eg_flow);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct eg_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct eg_rate);
} rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EG_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* ---- what the parser found ---- */

struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip4;    /* one of ip4 / ip6 is set */
	struct ipv6hdr *ip6;
	__be16 *ports;        /* sport, dport: the first 4 bytes of TCP or UDP */
	__sum16 *l4_check;
	struct eg_flow_key key;
	__u32 frame_len;
	__u16 l3_len;         /* IP total length, host order */
	__u8 vlan;            /* tags seen (0..2) */
	__u8 syn_only;        /* TCP SYN without ACK, RST, FIN */
	__u8 fin_rst;         /* TCP FIN or RST */
	__u8 quic_long;       /* UDP payload empty or first byte & 0x80 */
};

/* ---- stats ---- */

static __always_inline void count(__u32 stat, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		*v += n; /* per-CPU: no other writer */
}

static __always_inline int pass(void)
{
	count(EG_STAT_PASS, 1);
	return XDP_PASS;
}

/* ---- hashing: eg_balancer::hash, bit for bit ---- */

static __always_inline __u64 mix(__u64 z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* hash_bytes over the client address octets in wire order (4 or 16). */
static __always_inline __u64 client_key(const struct eg_flow_key *k)
{
	const __u8 *b = (const __u8 *)k->src;
	__u32 n = k->family == EG_FAMILY_V4 ? 4 : 16;
	__u64 h = 0xcbf29ce484222325ULL;

#pragma unroll
	for (__u32 i = 0; i < 16; i++) {
		if (i < n) {
			h ^= b[i];
			h *= 0x00000100000001b3ULL;
		}
	}
	return mix(h);
}

/* ---- parsing: every access checked against data_end ---- */

/* Ethernet and up to two VLAN tags; returns the L3 start or NULL. */
static __always_inline void *parse_l2(void *data, void *end, struct pkt *p, __u16 *proto)
{
	struct ethhdr *eth = data;
	void *cur = eth + 1;

	if (cur > end)
		return NULL;
	p->eth = eth;
	*proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (*proto != bpf_htons(ETH_P_8021Q_) && *proto != bpf_htons(ETH_P_8021AD_))
			break;
		/* tag: TCI (2 bytes), then the encapsulated EtherType */
		__be16 *tag = cur;
		if ((void *)(tag + 2) > end)
			return NULL;
		*proto = tag[1];
		cur = tag + 2;
		p->vlan++;
	}
	if (*proto == bpf_htons(ETH_P_8021Q_) || *proto == bpf_htons(ETH_P_8021AD_))
		return NULL; /* a third tag */
	return cur;
}

/* IPv4 without options or fragmentation; returns the L4 start or NULL. */
static __always_inline void *parse_ipv4(void *cur, void *end, struct pkt *p)
{
	struct iphdr *ip = cur;

	if ((void *)(ip + 1) > end)
		return NULL;
	if (ip->version != 4 || ip->ihl != 5)
		return NULL;
	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
		return NULL;
	__u16 len = bpf_ntohs(ip->tot_len);
	if (len < sizeof(*ip) || (void *)ip + len > end)
		return NULL; /* claims more than arrived: never forward it */
	p->ip4 = ip;
	p->l3_len = len;
	p->key.family = EG_FAMILY_V4;
	p->key.proto = ip->protocol;
	p->key.src[0] = ip->saddr;
	p->key.dst[0] = ip->daddr;
	return ip + 1;
}

/* IPv6 whose first next header is TCP or UDP (no extension headers). */
static __always_inline void *parse_ipv6(void *cur, void *end, struct pkt *p)
{
	struct ipv6hdr *ip6 = cur;

	if ((void *)(ip6 + 1) > end)
		return NULL;
	if (ip6->version != 6)
		return NULL;
	__u16 payload = bpf_ntohs(ip6->payload_len);
	if ((void *)(ip6 + 1) + payload > end)
		return NULL;
	p->ip6 = ip6;
	p->l3_len = sizeof(*ip6) + payload;
	p->key.family = EG_FAMILY_V6;
	p->key.proto = ip6->nexthdr;
	__builtin_memcpy(p->key.src, ip6->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(p->key.dst, ip6->daddr.in6_u.u6_addr32, 16);
	return ip6 + 1;
}

static __always_inline int parse_tcp(void *cur, void *end, __u32 l4_len, struct pkt *p)
{
	struct tcphdr *th = cur;

	if ((void *)(th + 1) > end)
		return -1;
	if (th->doff < 5 || (__u32)th->doff * 4 > l4_len)
		return -1;
	p->ports = &th->source;
	p->key.sport = th->source;
	p->key.dport = th->dest;
	p->l4_check = &th->check;
	p->syn_only = th->syn && !th->ack && !th->rst && !th->fin;
	p->fin_rst = th->fin || th->rst;
	return 0;
}

static __always_inline int parse_udp(void *cur, void *end, __u32 l4_len, struct pkt *p)
{
	struct udphdr *uh = cur;

	if ((void *)(uh + 1) > end)
		return -1;
	__u16 len = bpf_ntohs(uh->len);
	if (len < sizeof(*uh) || len > l4_len)
		return -1;
	p->ports = &uh->source;
	p->key.sport = uh->source;
	p->key.dport = uh->dest;
	p->l4_check = &uh->check;
	__u8 *first = (__u8 *)(uh + 1);
	p->quic_long = 1; /* an empty datagram is no short header either */
	if (len > sizeof(*uh) && (void *)(first + 1) <= end)
		p->quic_long = (*first & 0x80) != 0;
	return 0;
}

/* The whole packet up to L4; -1: not ours to touch (XDP_PASS). */
static __always_inline int parse(void *data, void *end, struct pkt *p)
{
	__u16 proto;
	void *l3 = parse_l2(data, end, p, &proto);
	void *l4;

	if (!l3)
		return -1;
	if (proto == bpf_htons(ETH_P_IP))
		l4 = parse_ipv4(l3, end, p);
	else if (proto == bpf_htons(ETH_P_IPV6))
		l4 = parse_ipv6(l3, end, p);
	else
		return -1;
	if (!l4)
		return -1;
	__u32 l4_len = p->l3_len - (__u32)(l4 - l3);
	if (l4_len > 0xffff) /* underflow: shorter than its own header */
		return -1;
	p->frame_len = (__u32)(end - data);
	if (p->key.proto == IPPROTO_TCP)
		return parse_tcp(l4, end, l4_len, p);
	if (p->key.proto == IPPROTO_UDP)
		return parse_udp(l4, end, l4_len, p);
	return -1;
}

/* ---- lookups ---- */

static __always_inline struct eg_service *find_service(const struct eg_flow_key *k)
{
	struct eg_service_key sk = {};
	struct eg_service *svc;

	__builtin_memcpy(sk.addr, k->dst, sizeof(sk.addr));
	sk.port = k->dport;
	sk.proto = k->proto;
	sk.family = k->family;
	svc = bpf_map_lookup_elem(&services, &sk);
	if (svc)
		return svc;
	__builtin_memset(sk.addr, 0, sizeof(sk.addr)); /* the wildcard listener */
	return bpf_map_lookup_elem(&services, &sk);
}

/* How long f may be idle: its TCP state's timeout, never longer than the
 * configured idle timeout. */
static __always_inline __u64 timeout_s(const struct eg_flow *f, const struct eg_config *cfg)
{
	__u64 idle = cfg->flow_idle_timeout_s;
	__u64 t = idle;

	if (f->from_user)
		return idle;
	if (f->tcp_state == EG_TCP_SYN)
		t = EG_TCP_SYN_TIMEOUT_S;
	else if (f->tcp_state == EG_TCP_CLOSING)
		t = EG_TCP_CLOSE_LINGER_S;
	return t < idle ? t : idle;
}

static __always_inline int is_fresh(const struct eg_flow *f, const struct eg_config *cfg, __u64 now)
{
	/* A stamp ahead of now (userspace read the clock a moment later) is fresh. */
	return now <= f->last_seen_ns || now - f->last_seen_ns <= timeout_s(f, cfg) * NS_PER_SEC;
}

/* The key of f's other entry: f's rewrite turned around (lb.h). */
static __always_inline void partner_key(const struct eg_flow_key *k, const struct eg_flow *f,
					struct eg_flow_key *out)
{
	__builtin_memcpy(out->src, f->new_dst, sizeof(out->src));
	__builtin_memcpy(out->dst, f->new_src, sizeof(out->dst));
	out->sport = f->new_dport;
	out->dport = f->new_sport;
	out->proto = k->proto;
	out->family = k->family;
	out->pad = 0;
}

static __always_inline int same_addr(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* The entry at pk when it is k's partner (its rewrite points back at k:
 * a client that reused its port since may have left another flow there). */
static __always_inline struct eg_flow *partner_of(const struct eg_flow_key *k,
						  const struct eg_flow_key *pk)
{
	struct eg_flow *g = bpf_map_lookup_elem(&conntrack, pk);

	if (!g || g->from_user || !same_addr(g->new_dst, k->src) ||
	    !same_addr(g->new_src, k->dst) || g->new_dport != k->sport || g->new_sport != k->dport)
		return NULL;
	return g;
}

/* The backend at `offset` within the service, when userspace would pick it. */
static __always_inline struct eg_backend *eligible_at(const struct eg_service *svc, __u32 offset)
{
	if (offset >= svc->backend_count)
		return NULL;
	__u32 idx = svc->backend_base + offset;
	struct eg_backend *b = bpf_map_lookup_elem(&backends, &idx);

	return b && b->eligible ? b : NULL;
}

struct scan_ctx {
	const struct eg_service *svc;
	__u32 start;
	__u32 found; /* offset, or backend_count when none */
};

static long scan_step(__u32 i, void *data)
{
	struct scan_ctx *s = data;
	__u32 n = s->svc->backend_count;
	__u32 off = n ? (s->start + i) % n : 0;

	if (eligible_at(s->svc, off)) {
		s->found = off;
		return 1;
	}
	return 0;
}

/* Userspace's Maglev pick (policy/maglev.rs): the key's slot, then
 * EG_MAGLEV_PROBES re-probes mix(key + p), then a scan from key % n.
 * Returns the offset in the service, or -1 when none is eligible. */
static __always_inline long maglev_pick(const struct eg_service *svc, __u64 key)
{
	__u32 size = svc->table_size;
	__u32 n = svc->backend_count;

	if (size == 0 || size > EG_MAGLEV_SLOTS || svc->id >= EG_MAX_SERVICES || n == 0 ||
	    n > EG_MAX_BACKENDS)
		return -1;
	for (__u64 p = 0; p <= EG_MAGLEV_PROBES; p++) {
		__u64 h = p == 0 ? key : mix(key + p);
		__u32 slot = svc->id * EG_MAGLEV_SLOTS + (__u32)(h % size);
		__u32 *off = bpf_map_lookup_elem(&maglev, &slot);

		if (!off)
			return -1;
		if (eligible_at(svc, *off))
			return *off;
	}
	struct scan_ctx s = { .svc = svc, .start = (__u32)(key % n), .found = n };

	bpf_loop(n, scan_step, &s, 0);
	return s.found < n ? (long)s.found : -1;
}

/* The per-CPU new-flow cap: at most new_flows_per_cpu_per_sec per
 * one-second window on this CPU. */
static __always_inline int rate_allows(const struct eg_config *cfg, __u64 now)
{
	__u32 zero = 0;
	struct eg_rate *r = bpf_map_lookup_elem(&rate, &zero);

	if (!r)
		return 0;
	if (now - r->window_start_ns >= NS_PER_SEC) {
		r->window_start_ns = now;
		r->count = 0;
	}
	if (r->count >= cfg->new_flows_per_cpu_per_sec)
		return 0;
	r->count++;
	return 1;
}

/* ---- checksums (RFC 1624: HC' = ~(~HC + ~m + m')) ---- */

/* All values are as loaded from the packet; the one's complement sum does
 * not care about byte order as long as every term is loaded the same way. */
static __always_inline __u64 delta32(__u32 from, __u32 to)
{
	__u32 nf = ~from;

	return (nf & 0xffff) + (nf >> 16) + (to & 0xffff) + (to >> 16);
}

static __always_inline __u64 delta16(__u16 from, __u16 to)
{
	return (__u16)~from + (__u64)to;
}

static __always_inline __u16 csum_apply(__u16 check, __u64 delta)
{
	__u64 acc = (__u16)~check + delta;

	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return (__u16)~acc;
}

/* ---- rewriting ---- */

/* Addresses (and the IPv4 header checksum); returns the pseudo-header
 * part of the L4 checksum change. */
static __always_inline __u64 rewrite_addrs(struct pkt *p, const struct eg_flow *f)
{
	__u64 d = 0;

	if (p->ip4) {
		struct iphdr *ip = p->ip4;

		d += delta32(ip->saddr, f->new_src[0]);
		d += delta32(ip->daddr, f->new_dst[0]);
		ip->saddr = f->new_src[0];
		ip->daddr = f->new_dst[0];
		ip->check = csum_apply(ip->check, d);
		return d;
	}
	if (p->ip6) {
		__u32 *s = p->ip6->saddr.in6_u.u6_addr32;
		__u32 *t = p->ip6->daddr.in6_u.u6_addr32;

#pragma unroll
		for (int i = 0; i < 4; i++) {
			d += delta32(s[i], f->new_src[i]) + delta32(t[i], f->new_dst[i]);
			s[i] = f->new_src[i];
			t[i] = f->new_dst[i];
		}
	}
	return d;
}

static __always_inline void rewrite(struct pkt *p, const struct eg_flow *f)
{
	__u64 d = rewrite_addrs(p, f);
	__be16 *ports = p->ports;
	__u16 check = *p->l4_check;

	d += delta16(ports[0], f->new_sport) + delta16(ports[1], f->new_dport);
	ports[0] = f->new_sport;
	ports[1] = f->new_dport;
	if (p->key.proto == IPPROTO_UDP && check == 0 && p->ip4)
		return; /* IPv4 UDP without a checksum stays without one */
	check = csum_apply(check, d);
	if (p->key.proto == IPPROTO_UDP && check == 0)
		check = 0xffff; /* a computed zero is sent as all ones (RFC 768) */
	*p->l4_check = check;
}

/* ---- sending ---- */

static __always_inline long fib_route(struct xdp_md *ctx, const struct pkt *p,
				      const struct eg_flow *f, struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->ifindex = ctx->ingress_ifindex;
	fib->l4_protocol = p->key.proto;
	fib->sport = f->new_sport;
	fib->dport = f->new_dport;
	fib->tot_len = p->l3_len;
	if (p->ip4) {
		fib->family = AF_INET;
		fib->tos = p->ip4->tos;
		fib->ipv4_src = f->new_src[0];
		fib->ipv4_dst = f->new_dst[0];
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, f->new_src, 16);
		__builtin_memcpy(fib->ipv6_dst, f->new_dst, 16);
	}
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* Ask the FIB where f's packets go, unless f holds a recent answer; -1
 * when it has none (the packet passes). Writes only f, never the packet. */
static __always_inline int refresh_egress(struct xdp_md *ctx, const struct pkt *p,
					  struct eg_flow *f, __u64 now)
{
	struct bpf_fib_lookup fib;

	if (f->fib_kind != EG_FIB_NONE && now >= f->fib_at_ns &&
	    now - f->fib_at_ns < EG_FIB_CACHE_NS)
		return 0;
	long rc = fib_route(ctx, p, f, &fib);

	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		f->fib_kind = EG_FIB_MACS;
		f->fib_ifindex = fib.ifindex;
		__builtin_memcpy(f->fib_dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(f->fib_smac, fib.smac, ETH_ALEN);
	} else if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		f->fib_kind = EG_FIB_ONEARM; /* back through the neighbour it came from */
	} else {
		f->fib_kind = EG_FIB_NONE;
		return -1;
	}
	f->fib_at_ns = now;
	return 0;
}

/* The verdict for a packet of f (its egress known): XDP_TX, XDP_REDIRECT,
 * or XDP_PASS for a tagged frame that would leave by another interface. */
static __always_inline int egress_action(struct xdp_md *ctx, const struct pkt *p,
					 const struct eg_flow *f)
{
	if (f->fib_kind == EG_FIB_ONEARM || f->fib_ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return p->vlan ? XDP_PASS : XDP_REDIRECT;
}

static __always_inline void set_macs(struct pkt *p, const struct eg_flow *f)
{
	struct ethhdr *eth = p->eth;
	unsigned char tmp[ETH_ALEN];

	if (f->fib_kind == EG_FIB_MACS) {
		__builtin_memcpy(eth->h_dest, f->fib_dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, f->fib_smac, ETH_ALEN);
		return;
	}
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
}

/* Rewrite to f and send with `action`; counts the forward. */
static __always_inline int send(struct pkt *p, const struct eg_flow *f, int action)
{
	rewrite(p, f);
	set_macs(p, f);
	count(EG_STAT_FWD_PACKETS, 1);
	count(EG_STAT_FWD_BYTES, p->frame_len);
	if (action == XDP_REDIRECT)
		return bpf_redirect(f->fib_ifindex, 0);
	return action;
}

/* ---- TCP state (lb.h EG_TCP_*) ---- */

/* The state a forwarded packet moves f's pair to: FIN/RST closes both,
 * the backend's first packet (on the reverse entry) establishes both. */
static __always_inline void track_tcp(const struct pkt *p, struct eg_flow *f, __u64 now)
{
	__u8 to;

	if (p->fin_rst)
		to = EG_TCP_CLOSING;
	else if (f->reverse && f->tcp_state == EG_TCP_SYN)
		to = EG_TCP_ESTABLISHED;
	else
		return;
	if (f->tcp_state == to)
		return;
	f->tcp_state = to;
	struct eg_flow_key pk;

	partner_key(&p->key, f, &pk);
	struct eg_flow *g = partner_of(&p->key, &pk);
	if (g) {
		g->tcp_state = to;
		g->last_seen_ns = now; /* its linger counts from the close too */
	}
}

/* A pure SYN on a kernel TCP forward entry that no longer carries a live
 * connection (closing, or its reverse entry gone or stale): remove the
 * pair so the SYN is placed again. Returns 1 when it did. */
static __always_inline int syn_restarts(const struct pkt *p, const struct eg_flow *f,
					const struct eg_config *cfg, __u64 now)
{
	struct eg_flow_key pk;

	if (!p->syn_only || f->from_user || f->reverse || p->key.proto != IPPROTO_TCP)
		return 0;
	partner_key(&p->key, f, &pk);
	struct eg_flow *g = partner_of(&p->key, &pk);
	if (f->tcp_state != EG_TCP_CLOSING && g && is_fresh(g, cfg, now))
		return 0; /* a retransmitted SYN of the live flow */
	if (g)
		bpf_map_delete_elem(&conntrack, &pk);
	bpf_map_delete_elem(&conntrack, &p->key);
	return 1;
}

/* ---- the two ways a packet is forwarded ---- */

static __always_inline int on_hit(struct xdp_md *ctx, struct pkt *p, struct eg_flow *f, __u64 now)
{
	/* Mode A: QUIC long headers (handshakes, new connection IDs) are
	 * userspace's in both directions, even on an installed flow. */
	if (f->from_user && p->key.proto == IPPROTO_UDP && p->quic_long)
		return pass();
	if (refresh_egress(ctx, p, f, now) < 0)
		return pass();
	int action = egress_action(ctx, p, f);

	if (action == XDP_PASS)
		return pass();
	f->last_seen_ns = now;
	if (!f->from_user && p->key.proto == IPPROTO_TCP)
		track_tcp(p, f, now);
	count(EG_STAT_CT_HIT, 1);
	return send(p, f, action);
}

/* The reverse entry, under a free NAT port; returns the port (host
 * order) or 0 when NAT_TRIES ports were all taken by live flows. */
static __always_inline __u16 insert_reverse(const struct pkt *p, const struct eg_backend *b,
					    __u32 bidx, __u64 key, const struct eg_config *cfg,
					    __u64 now)
{
	struct eg_flow_key rk = {};
	struct eg_flow rev = {};
	__u64 seed = mix(key ^ ((__u64)p->key.sport << 32) ^ p->key.dport);

	__builtin_memcpy(rk.src, b->addr, sizeof(rk.src));
	__builtin_memcpy(rk.dst, p->key.dst, sizeof(rk.dst));
	rk.sport = b->port;
	rk.proto = p->key.proto;
	rk.family = p->key.family;
	__builtin_memcpy(rev.new_src, p->key.dst, sizeof(rev.new_src));
	__builtin_memcpy(rev.new_dst, p->key.src, sizeof(rev.new_dst));
	rev.new_sport = p->key.dport;
	rev.new_dport = p->key.sport;
	rev.backend = bidx;
	rev.last_seen_ns = now;
	rev.reverse = 1;
	rev.tcp_state = EG_TCP_SYN;
	for (int t = 0; t < NAT_TRIES; t++) {
		__u16 port = EG_NAT_PORT_MIN + (__u16)(mix(seed + t) %
						       (EG_NAT_PORT_MAX - EG_NAT_PORT_MIN + 1));
		rk.dport = bpf_htons(port);
		if (bpf_map_update_elem(&conntrack, &rk, &rev, BPF_NOEXIST) == 0)
			return port;
		/* Taken: reuse it only if that flow is stale (past its state's
		 * timeout), and take its forward entry with it, which would
		 * otherwise send a client into the new flow's port. */
		struct eg_flow *old = bpf_map_lookup_elem(&conntrack, &rk);
		if (!old || is_fresh(old, cfg, now))
			continue;
		if (!old->from_user) {
			struct eg_flow_key fk;

			partner_key(&rk, old, &fk);
			if (partner_of(&rk, &fk))
				bpf_map_delete_elem(&conntrack, &fk);
		}
		/* Delete, then insert only if absent: of two CPUs taking the
		 * same stale port at once, one wins and the other tries on. */
		bpf_map_delete_elem(&conntrack, &rk);
		if (bpf_map_update_elem(&conntrack, &rk, &rev, BPF_NOEXIST) == 0)
			return port;
	}
	return 0;
}

static __always_inline int new_flow(struct xdp_md *ctx, struct pkt *p,
				    const struct eg_service *svc, const struct eg_config *cfg,
				    __u64 now)
{
	struct eg_flow fwd = {};

	if (!rate_allows(cfg, now)) {
		count(EG_STAT_RATE_CAP, 1);
		return pass();
	}
	__u64 key = client_key(&p->key);
	long off = maglev_pick(svc, key);
	if (off < 0)
		return pass(); /* nothing eligible: userspace answers */
	__u32 bidx = svc->backend_base + (__u32)off;
	struct eg_backend *b = bpf_map_lookup_elem(&backends, &bidx);
	if (!b || b->family != p->key.family)
		return pass(); /* a cross-family backend: userspace connects to it */

	__builtin_memcpy(fwd.new_src, p->key.dst, sizeof(fwd.new_src));
	__builtin_memcpy(fwd.new_dst, b->addr, sizeof(fwd.new_dst));
	fwd.new_dport = b->port;
	fwd.backend = bidx;
	fwd.last_seen_ns = now;
	fwd.tcp_state = EG_TCP_SYN;
	/* Routed before the NAT port exists (sport 0): a policy rule on
	 * the source port would not see it. */
	if (refresh_egress(ctx, p, &fwd, now) < 0)
		return pass();
	int action = egress_action(ctx, p, &fwd);
	if (action == XDP_PASS)
		return pass();
	__u16 port = insert_reverse(p, b, bidx, key, cfg, now);
	if (!port)
		return pass();
	fwd.new_sport = bpf_htons(port);
	if (bpf_map_update_elem(&conntrack, &p->key, &fwd, BPF_ANY) != 0) {
		struct eg_flow_key rk = {};

		__builtin_memcpy(rk.src, b->addr, sizeof(rk.src));
		__builtin_memcpy(rk.dst, p->key.dst, sizeof(rk.dst));
		rk.sport = b->port;
		rk.dport = fwd.new_sport;
		rk.proto = p->key.proto;
		rk.family = p->key.family;
		bpf_map_delete_elem(&conntrack, &rk);
		return pass();
	}
	count(EG_STAT_NEW_FLOWS, 1);
	return send(p, &fwd, action);
}

SEC("xdp")
int eg_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	__u32 zero = 0;

	if (parse(data, end, &p) < 0)
		return pass();
	struct eg_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return pass();
	__u64 now = bpf_ktime_get_coarse_ns();
	/* Every parsed packet looks up conntrack first: reverse entries
	 * (backend -> NAT port) match no service. */
	struct eg_flow *f = bpf_map_lookup_elem(&conntrack, &p.key);
	if (f && is_fresh(f, cfg, now) && !syn_restarts(&p, f, cfg, now))
		return on_hit(ctx, &p, f, now);
	struct eg_service *svc = find_service(&p.key);
	if (!svc)
		return pass(); /* not a listener of ours */
	count(EG_STAT_CT_MISS, 1);
	/* Mode A flows come only from userspace; a miss is its business. */
	if ((svc->flags & EG_SVC_TCP_NAT) && p.key.proto == IPPROTO_TCP && p.syn_only)
		return new_flow(ctx, &p, svc, cfg, now);
	return pass();
}

char LICENSE[] SEC("license") = "GPL";
