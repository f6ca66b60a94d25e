/* The few kernel types the capture reads, declared with
 * preserve_access_index so clang emits CO-RE relocations: the loader fixes
 * every field offset against the running kernel's BTF
 * (/sys/kernel/btf/vmlinux). Only the fields used are declared. */
#ifndef WIRELENS_VMLINUX_MIN_H
#define WIRELENS_VMLINUX_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;

enum bpf_map_type {
    BPF_MAP_TYPE_HASH = 1,
    BPF_MAP_TYPE_ARRAY = 2,
    BPF_MAP_TYPE_PERCPU_ARRAY = 6,
    BPF_MAP_TYPE_LRU_HASH = 9,
    BPF_MAP_TYPE_SK_STORAGE = 24,
    BPF_MAP_TYPE_RINGBUF = 27,
    BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
    BPF_F_NO_PREALLOC = 1,
};

enum {
    BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
    BPF_SK_STORAGE_GET_F_CREATE = 1,
};

enum {
    BPF_ANY = 0,
    BPF_NOEXIST = 1,
};

enum {
    BPF_RB_NO_WAKEUP = 1,
    BPF_RB_FORCE_WAKEUP = 2,
};

enum {
    BPF_RB_AVAIL_DATA = 0,
    BPF_RB_CONS_POS = 2,
    BPF_RB_PROD_POS = 3,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
    union {
        __u8 u6_addr8[16];
    } in6_u;
};

struct sock_common {
    union {
        __u64 skc_addrpair;
        struct {
            __be32 skc_daddr;
            __be32 skc_rcv_saddr;
        };
    };
    union {
        unsigned int skc_hash;
        __u16 skc_u16hashes[2];
    };
    union {
        __u32 skc_portpair;
        struct {
            __be16 skc_dport;
            __u16 skc_num;
        };
    };
    unsigned short skc_family;
    volatile unsigned char skc_state;
    struct in6_addr skc_v6_daddr;
    struct in6_addr skc_v6_rcv_saddr;
};

struct sk_buff;

struct sk_buff_head {
    struct sk_buff *next;
    struct sk_buff *prev;
};

struct sock {
    struct sock_common __sk_common;
    struct sk_buff_head sk_receive_queue;
    __u16 sk_type;
    __u16 sk_protocol;
};

struct unix_address;

struct unix_sock {
    struct unix_address *addr;
    struct sock *peer;
};

struct sk_buff {
    struct sock *sk;
    unsigned char *head;
    __u16 transport_header;
    __u16 network_header;
};

struct mm_struct {
    unsigned long arg_start;
    unsigned long arg_end;
};

struct task_struct {
    unsigned int flags;
    int pid;
    int tgid;
    struct task_struct *group_leader;
    struct mm_struct *mm;
    __u64 start_time; /* ns, CLOCK_MONOTONIC, when the task was created */
    char comm[16];
};

/* The context of an `iter/tcp` program (one call per TCP socket). */
struct seq_file;

struct bpf_iter_meta {
    struct seq_file *seq;
    __u64 session_id;
    __u64 seq_num;
};

struct bpf_iter__tcp {
    struct bpf_iter_meta *meta;
    struct sock_common *sk_common;
    __u32 uid;
};

#pragma clang attribute pop

/* User-space ABI structs (fixed layout; read with bpf_probe_read_user): no
 * relocations needed. */
struct iovec {
    void *iov_base;
    __u64 iov_len;
};

struct user_msghdr {
    void *msg_name;
    int msg_namelen;
    struct iovec *msg_iov;
    __u64 msg_iovlen;
    void *msg_control;
    __u64 msg_controllen;
    unsigned int msg_flags;
};

struct mmsghdr {
    struct user_msghdr msg_hdr;
    unsigned int msg_len;
};

struct sockaddr_in {
    unsigned short sin_family;
    __be16 sin_port;
    __be32 sin_addr;
};

struct sockaddr_in6 {
    unsigned short sin6_family;
    __be16 sin6_port;
    __be32 sin6_flowinfo;
    struct in6_addr sin6_addr;
};

#endif
