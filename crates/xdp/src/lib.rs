//! The optional XDP plane (SPEC §10): a BPF program in C (`bpf/lb.c`,
//! its contract with userspace in `bpf/lb.h`) that forwards established
//! L4 flows in the kernel, and its controller.
