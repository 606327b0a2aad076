// The far end of the bench's veth pair: every frame is dropped at once, so
// the load generator's namespace spends nothing on what comes back, and
// the veth has NAPI on (XDP_TX and redirects into it need that).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int drop_all(struct xdp_md *ctx) { return XDP_DROP; }
char LICENSE[] SEC("license") = "GPL";
