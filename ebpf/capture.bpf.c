// SPDX-License-Identifier: GPL-2.0
/* wirelens capture: BTF tracepoints of the socket layer.
 *
 * sock:sock_send_length and sock:sock_recv_length fire at the end of every
 * send and receive on a socket (sock_sendmsg and sock_recvmsg, which the
 * read/write, readv/writev, send/recv, sendmsg/recvmsg and sendmmsg/recvmmsg
 * system calls all go through, once per message), with the socket and the
 * bytes moved. The system call's own arguments (the user buffers) come from
 * the registers saved at its entry, so the payload is read there. Nothing
 * runs on any other system call: hooking syscall entry and exit instead puts
 * every syscall of every process on the kernel's slow path (measured here:
 * +95-195 ns on each getppid, with the program doing nothing).
 *
 * sock:inet_sock_set_state marks TCP sockets client (SYN_SENT: connect) or
 * server (SYN_RECV: accepted) in socket-local storage, and reports the close
 * of those that carried data. sock:sk_data_ready notes the source of each
 * datagram queued on an unconnected UDP socket, whose peer is in no socket
 * field and reaches user space only after the receive.
 *
 * Filters come first (own pid, EBPF.Pid, excluded pids, kernel threads, drop
 * rules, per-connection sampling), then a record goes into a ring buffer
 * whose consumer is woken only when a lot is pending (it polls every few
 * milliseconds). */
#include "vmlinux_min.h"
#include "arch.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "wirelens.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2
#define PF_IO_WORKER 0x00000010
#define PF_KTHREAD 0x00200000
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
/* Iovec headers read from a call's array at once: grpcio (chttp2) writes a
 * new connection's first request in 24 (HPACK slices). A record walks any
 * number of iovecs, up to the system's limit. */
#define MAX_IOV 32
#define UIO_MAXIOV 1024
_Static_assert((MAX_IOV & (MAX_IOV - 1)) == 0, "the scratch's iovec headers are indexed by a mask");

/* Set by the loader before the programs are loaded. */
const volatile __u32 payload_max = 4096;
const volatile __u32 self_pid = 0;
const volatile __u32 sampling = 100;      /* percent of connections kept */
const volatile __u8 filter_pids = 0;      /* keep only pids in allow_pids */
const volatile __u8 drop_unix = 0;
const volatile __u8 drop_unknown = 0;
const volatile __u8 drop_loopback = 0;
const volatile __u8 l4_default = 0;       /* TCP sockets start counted in the kernel (ProtocolProcess: false) */
const volatile __u64 wakeup_bytes = 256 * 1024;

/* Two rings, one for even CPUs and one for odd: producers on two CPUs do
 * not contend for one ring's lock and producer position (redis GET at 50k
 * calls/s, load on both CPUs: the programs 444-492 ns net per observed call
 * against 525-568 with one ring). The daemon merges them in time order. */
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 8 << 20);
} events_even SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 8 << 20);
} events_odd SEC(".maps");

/* The ring of this CPU (a program does not move between CPUs). */
static __always_inline int odd_cpu(void) {
    return bpf_get_smp_processor_id() & 1;
}

/* A reservation in, or a copy to, this CPU's ring (a helper's map must be
 * a constant: one call per ring). */
#define RING_RESERVE(odd, size) \
    ((odd) ? bpf_ringbuf_reserve(&events_odd, (size), 0) : bpf_ringbuf_reserve(&events_even, (size), 0))
#define RING_OUTPUT(odd, data, size, flags)                                 \
    ((odd) ? bpf_ringbuf_output(&events_odd, (data), (size), (flags)) \
           : bpf_ringbuf_output(&events_even, (data), (size), (flags)))

/* Pid sets as bitmaps (bit pid % 64 of word pid / 64, for pids up to 2^22):
 * array lookups are inlined by the verifier, so the per-call filter costs a
 * few instructions. allow_pids is EBPF.Pid; deny_pids holds processes the
 * daemon's filters exclude (filled from userspace). */
#define PID_WORDS (1 << 16)
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, PID_WORDS);
    __type(key, __u32);
    __type(value, __u64);
} allow_pids SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, PID_WORDS);
    __type(key, __u32);
    __type(value, __u64);
} deny_pids SEC(".maps");

/* The start time of each denied process: a deny bit is kept only for the
 * process the daemon decided on. The daemon writes this before the bit; a
 * bit whose process is gone (exited before the daemon's write landed, its
 * pid now another process's) is stale and is cleared at the next call. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH); /* full: the oldest denial goes to the daemon's filter */
    __uint(max_entries, 1 << 16);
    __type(key, __u32);
    __type(value, __u64);
} deny_starts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, WL_CNT_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

/* Sources of the datagrams queued on an unconnected UDP socket, oldest
 * first: a ring filled as they arrive (on_data_ready) and drained as they
 * are received. */
#define DGRAM_QUEUE 8
struct dgram_src {
    __u8 addr[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d */
    __be16 port;
    __u16 len;     /* payload bytes */
};

/* What a record says about its socket. */
struct sock_desc {
    __u64 cookie;
    __u16 family;
    __u16 type;
    __u16 lport;
    __u16 rport;
    __u8 laddr[16];
    __u8 raddr[16];
    __u8 role;
};

#define VERDICT_UNSEEN 0
#define VERDICT_KEEP 1
#define VERDICT_DROP 2

/* Per socket, in socket-local storage (freed with the socket, a pointer
 * away from it): described once at its first call (addresses, ports,
 * family, type, cookie, the drop rules' and sampling's verdict), how the
 * daemon wants its calls treated, its stream positions, what it moved
 * while counted here, and its last user. TCP: how it began, and whether
 * data of it was reported (so its close is). UDP without a peer: its
 * datagrams' sources. */
struct sock_info {
    __u8 role;
    __u8 reported;
    __u8 verdict;
    __u8 mode;
    __u32 ctl_gen;               /* the control generation last looked at */
    __u32 budget[2];             /* payload bytes copied per call and direction (0: payload_max) */
    __u64 pos[2];                /* stream position per direction */
    __u64 skip_until[2];         /* bodies: no copy before these positions */
    struct wl_counts counts;     /* moved while counted here, not reported yet */
    __u32 owner_pid;             /* its last user, for records made outside its calls */
    __u8 tls;                    /* carries TLS that the uprobes read in plaintext: its own bytes are
                                  * counted here (layer 4), never parsed */
    __u8 pad[3];
    __u64 owner_start;
    char owner_comm[16];
    struct sock_desc desc;
    __u32 dgram_head;
    __u32 dgram_tail;
    struct dgram_src dgrams[DGRAM_QUEUE];
};

struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct sock_info);
} sock_infos SEC(".maps");

/* What the daemon asks of sockets (struct wl_ctl), by cookie, and a
 * generation it bumps after writing: a socket looks its entry up only when
 * the generation moved since its last call, so the common call pays one
 * array read. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, struct wl_ctl);
} conn_ctl SEC(".maps");

/* A socket's counts as the daemon reads them: by the iterator (kind
 * stats) or, when the ring buffer was full at its close, from
 * closed_counts (kind close). */
struct stats_record {
    struct wl_event ev;
    struct wl_counts counts;
};

/* Closes whose record found the ring buffer full, by cookie: the daemon
 * takes them at its next flush, so what a socket counted in the kernel is
 * not lost with its close. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct stats_record);
} closed_counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} ctl_gen SEC(".maps");

/* Per thread: the sendmmsg/recvmmsg call in progress (the tracepoints fire
 * once per message; this tells which message of the vector it is). */
struct thread_info {
    __u64 mmsg_vec;
    __u32 mmsg_next;
    __u32 mmsg_vlen;
};

struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct thread_info);
} thread_infos SEC(".maps");

/* TLS: per thread, the SSL_write/SSL_read call in progress (its uprobe
 * saw the entry; its uretprobe reads the plaintext), and the socket the
 * thread used inside it (the library writes and reads its socket within the
 * call: that is how plaintext finds its connection). */
struct ssl_call {
    __u64 ssl;    /* the SSL object; 0: no call in progress */
    __u64 buf;    /* the plaintext buffer */
    __u64 moved;  /* _ex calls: where the library puts the bytes moved (size_t *); 0: the return value */
    __u8 dir;     /* WL_EGRESS (write) or WL_INGRESS (read) */
    __u8 has_sock;
    __u8 pad[6];
    struct sock_desc d; /* the socket used in the call (has_sock) */
};

struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct ssl_call);
} ssl_calls SEC(".maps");

/* SSL calls in progress on the whole machine (entered, not yet returned,
 * by threads that still live). While there are none, a TCP call skips the
 * thread-storage lookup that asks whether it runs inside one (measured:
 * 33-39 ns a call), so a hooked TLS library costs the other sockets
 * nothing between its calls. A thread sees its own call counted: it
 * counted it itself before its socket calls. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __s64);
} ssl_in_flight SEC(".maps");

static __always_inline void ssl_in_flight_add(__s64 n) {
    __u32 zero = 0;
    __s64 *in_flight = bpf_map_lookup_elem(&ssl_in_flight, &zero);
    if (in_flight)
        __sync_fetch_and_add(in_flight, n);
}

/* Per SSL object of a process: its socket (calls served from the library's
 * buffer touch no socket) and its plaintext stream positions. */
struct ssl_key {
    __u64 ssl;
    __u32 tgid;
    __u32 pad;
};

struct ssl_conn {
    struct sock_desc d;
    __u64 pos[2];
    /* What the daemon wants of the plaintext (conn_ctl, keyed by the
     * socket's cookie with WL_TLS_COOKIE set), as sock_info keeps it for a
     * socket's own bytes. */
    __u64 skip_until[2];
    __u32 budget[2];
    __u32 ctl_gen;
    __u8 mode;
    __u8 pad[3];
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct ssl_key);
    __type(value, struct ssl_conn);
} ssl_conns SEC(".maps");

/* Where iovec payloads are gathered before they go out in one record. */
/* Where a copy from an iovec array stands: iovec `idx` begins at byte `at`
 * of the call. A long call's records go on from where the last one stopped
 * instead of walking the array from its start each time. It is kept in the
 * scratch map, not on the stack: the verifier does not follow values in map
 * memory, so the continuation callback's states converge at once. */
struct iov_cursor {
    __u64 idx;
    __u64 at;
};

/* A copy from an iovec array under way: the bytes wanted next, the end of
 * those the record takes, and where they go in its payload (at most max,
 * the bytes it takes in all). */
struct iov_copy {
    __u64 want;
    __u64 end;
    __u32 off;
    __u32 max;
};

struct scratch {
    struct wl_event ev;
    __u8 payload[2 * WL_MAX_PAYLOAD];
    struct iov_cursor cur; /* of the gathered call being recorded */
    /* The gathered call's iovec array (cnt iovecs at iovs), and `heads` of
     * its headers from iovec head_at on, read from it in one read rather
     * than one read per iovec. Then the copy under way. All for iov_step. */
    __u64 iovs;
    __u64 cnt;
    __u64 head_at;
    __u64 heads;
    struct iovec head[MAX_IOV];
    struct iov_copy copy;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline void count(__u32 slot) {
    __u64 *c = bpf_map_lookup_elem(&counters, &slot);
    if (c)
        *c += 1;
}

static __always_inline bool pid_in(void *set, __u32 pid) {
    __u32 word = pid >> 6;
    __u64 *bits = bpf_map_lookup_elem(set, &word);
    return bits && ((*bits >> (pid & 63)) & 1);
}

/* A denied pid is let through again (its process exited, or the pid is
 * another process's now). */
static __always_inline void undeny_pid(__u32 pid) {
    __u32 word = pid >> 6;
    __u64 *bits = bpf_map_lookup_elem(&deny_pids, &word);
    if (bits && ((*bits >> (pid & 63)) & 1))
        __sync_fetch_and_and(bits, ~(1ULL << (pid & 63)));
    bpf_map_delete_elem(&deny_starts, &pid);
}

static __always_inline bool pid_wanted(__u32 pid) {
    if (pid == self_pid)
        return false;
    if (filter_pids && !pid_in(&allow_pids, pid))
        return false;
    if (pid_in(&deny_pids, pid)) {
        /* Only denied calls pay for the start-time check. */
        __u64 *start = bpf_map_lookup_elem(&deny_starts, &pid);
        if (start && *start == bpf_get_current_task_btf()->group_leader->start_time) {
            count(WL_CNT_DENIED);
            return false;
        }
        undeny_pid(pid);
    }
    return true;
}

/* The socket's family, type, addresses and ports: plain loads through its
 * BTF pointer (no helper calls), at offsets CO-RE fixes for this kernel. */
static __always_inline void describe(struct sock *sk, struct sock_desc *d) {
    d->family = sk->__sk_common.skc_family;
    d->type = sk->sk_type;
    if (d->family == AF_INET) {
        __u32 l = sk->__sk_common.skc_rcv_saddr, r = sk->__sk_common.skc_daddr;
        __builtin_memcpy(d->laddr, &l, 4);
        __builtin_memcpy(d->raddr, &r, 4);
    } else if (d->family == AF_INET6) {
        BPF_CORE_READ_INTO(&d->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
        BPF_CORE_READ_INTO(&d->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
    }
    if (d->family == AF_INET || d->family == AF_INET6) {
        d->lport = sk->__sk_common.skc_num;
        d->rport = __builtin_bswap16(sk->__sk_common.skc_dport);
    }
}

static __always_inline bool is_loopback(const struct sock_desc *d) {
    if (d->family == AF_INET)
        return d->raddr[0] == 127;
    if (d->family == AF_INET6) {
        __u64 hi, lo;
        __builtin_memcpy(&hi, d->raddr, 8);
        __builtin_memcpy(&lo, d->raddr + 8, 8);
        if (hi == 0 && lo == 0x0100000000000000ULL) /* ::1 */
            return true;
        /* ::ffff:127.x.x.x */
        return hi == 0 && d->raddr[10] == 0xff && d->raddr[11] == 0xff && d->raddr[12] == 127;
    }
    return false;
}

/* Drop rules and per-connection sampling: false drops the call. */
static __always_inline bool sock_wanted(const struct sock_desc *d) {
    if (d->family == AF_UNIX && drop_unix)
        return false;
    if (d->family != AF_UNIX && d->family != AF_INET && d->family != AF_INET6 && drop_unknown)
        return false;
    if (drop_loopback && d->rport != 0 && is_loopback(d))
        return false;
    if (sampling < 100) {
        /* Decided per socket, so a sampled connection is seen whole. */
        __u64 h = d->cookie * 0x9E3779B97F4A7C15ULL;
        if ((h >> 32) % 100 >= sampling)
            return false;
    }
    return true;
}

/* A unix stream socket is the server end when it carries the listener's
 * address (accepted sockets inherit it) and its peer has none.
 *
 * `us` comes from the tracepoint's own socket and is trusted, but its
 * `peer` field is a plain pointer the verifier does not trust: helpers
 * that take socket pointers (bpf_skc_to_unix_sock) refuse it on some
 * kernel builds ("R1 type=untrusted_ptr_"). The peer is therefore read
 * with probe reads (BPF_CORE_READ), which any kernel with BTF accepts; a
 * unix_sock begins with its struct sock, so the peer pointer is the peer's
 * unix_sock. */
static __always_inline __u8 unix_role(struct sock *sk) {
    if (sk->sk_type != SOCK_STREAM)
        return WL_ROLE_UNKNOWN;
    struct unix_sock *us = bpf_skc_to_unix_sock(sk);
    if (!us)
        return WL_ROLE_UNKNOWN;
    struct unix_sock *ps = (struct unix_sock *)BPF_CORE_READ(us, peer);
    if (!ps)
        return WL_ROLE_UNKNOWN;
    bool mine = BPF_CORE_READ(us, addr) != 0, theirs = BPF_CORE_READ(ps, addr) != 0;
    if (mine && !theirs)
        return WL_ROLE_SERVER;
    if (!mine && theirs)
        return WL_ROLE_CLIENT;
    return WL_ROLE_UNKNOWN;
}

/* The event header, written in place (scratch or ring), for the current
 * process. `ret`: the bytes the call moved; `pos`: where they start in the
 * stream. */
static __always_inline void fill_sock(struct wl_event *e, const struct sock_desc *d, __u16 kind, __u16 sys,
                                      long ret, __u8 direction, __u64 pos) {
    e->ts = bpf_ktime_get_ns();
    e->sock = d->cookie;
    e->real_len = ret > 0 ? ret : 0;
    e->pos = pos;
    e->captured = 0;
    e->kind = kind;
    e->syscall = sys;
    e->family = d->family;
    e->sock_type = d->type;
    e->lport = d->lport;
    e->rport = d->rport;
    e->direction = direction;
    e->role = d->role;
    e->flags = 0;
    e->pad = 0;
    __builtin_memcpy(e->laddr, d->laddr, 16);
    __builtin_memcpy(e->raddr, d->raddr, 16);
}

static __always_inline void fill_header(struct wl_event *e, const struct sock_desc *d, __u16 kind, __u16 sys,
                                        long ret, __u8 direction, __u64 pos) {
    fill_sock(e, d, kind, sys, ret, direction, pos);
    e->pid = bpf_get_current_pid_tgid() >> 32;
    /* The process's name and start (its main thread's), not this thread's;
     * the kernel keeps the name NUL-padded, so 16 bytes is the whole string. */
    struct task_struct *leader = bpf_get_current_task_btf()->group_leader;
    e->start_ns = leader->start_time;
    __builtin_memcpy(e->comm, leader->comm, sizeof(e->comm));
}

/* A header on behalf of the socket's last user (close, stats). */
static __always_inline void fill_owner(struct wl_event *e, const struct sock_info *info, __u16 kind) {
    fill_sock(e, &info->desc, kind, 0, 0, WL_EGRESS, 0);
    e->pid = info->owner_pid;
    e->start_ns = info->owner_start;
    __builtin_memcpy(e->comm, info->owner_comm, sizeof(e->comm));
}

/* Per CPU: where the ring's producer stood when this CPU last woke the
 * reader (see wakeup_flag). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} woke SEC(".maps");

/* Records a CPU writes between two looks at what is pending. */
#define WAKE_CHECK_EVERY 16
_Static_assert((WAKE_CHECK_EVERY & (WAKE_CHECK_EVERY - 1)) == 0, "checked by a mask");

/* Wake the reader when what is pending, with this record of `size` bytes,
 * reaches wakeup_bytes: the reader drains every few milliseconds anyway.
 * Looked at on every WAKE_CHECK_EVERY-th record of a CPU only: the query
 * reads the ring's producer and consumer positions, which the other CPU
 * and the reader write, and took 1.6% of the machine under redis GET
 * (`perf`), more than the reservation; without it a captured call cost
 * 16-45 ns less in the programs. So the mark is passed by at most that
 * many records per CPU.
 *
 * A CPU wakes the reader again only once the reader has read past what
 * was written when this CPU last woke it: until then the reader is still
 * draining (it reads until the ring is empty, these records too), and each
 * wake-up is an interrupt (a VM exit under virtualisation) that a reader
 * busy with a burst would otherwise get on every look until it caught up.
 * (The flag this replaces was cleared only by a look that found the ring
 * below the mark: a CPU whose looks kept finding it above, the other CPU
 * writing meanwhile, never woke the reader again, which then drained once
 * per poll interval; a 64 KiB ring at 15k redis calls/s lost records.) */
static __always_inline __u64 wakeup_flag(int odd, __u64 size) {
    __u32 slot = WL_CNT_EVENTS, zero = 0;
    __u64 *written = bpf_map_lookup_elem(&counters, &slot);
    if (written && (*written & (WAKE_CHECK_EVERY - 1)) != 0)
        return BPF_RB_NO_WAKEUP;
    __u64 *w = bpf_map_lookup_elem(&woke, &zero);
    if (!w)
        return BPF_RB_NO_WAKEUP;
    void *ring = odd ? (void *)&events_odd : (void *)&events_even;
    if (bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) + size < wakeup_bytes)
        return BPF_RB_NO_WAKEUP;
    if (bpf_ringbuf_query(ring, BPF_RB_CONS_POS) < *w)
        return BPF_RB_NO_WAKEUP;
    *w = bpf_ringbuf_query(ring, BPF_RB_PROD_POS);
    return BPF_RB_FORCE_WAKEUP;
}

/* Send the scratch record with its `captured` payload bytes (0: the ring
 * buffer was full). */
static __always_inline int submit(struct scratch *s) {
    __u64 size = s->ev.captured;
    if (size > WL_MAX_PAYLOAD)
        size = WL_MAX_PAYLOAD;
    /* Keep the compiler from folding the bound away: the verifier needs it
     * on the very register passed to the helper. */
    barrier_var(size);
    size &= (2 * WL_MAX_PAYLOAD - 1);
    size += sizeof(struct wl_event);
    int odd = odd_cpu();
    if (RING_OUTPUT(odd, s, size, wakeup_flag(odd, size)) == 0) {
        count(WL_CNT_EVENTS);
        return 1;
    }
    count(WL_CNT_LOST);
    return 0;
}

/* At most n bytes, the socket's budget (0: none of its own) and the
 * capture size. */
static __always_inline __u32 cap_len(__u64 n, __u32 budget) {
    __u32 max = payload_max;
    if (budget && budget < max)
        max = budget;
    if (max > WL_MAX_PAYLOAD)
        max = WL_MAX_PAYLOAD;
    return n > max ? max : (__u32)n;
}

/* Copy from one user buffer at payload offset off, up to `max` bytes of
 * payload in all (at most WL_MAX_PAYLOAD). */
static __always_inline __u32 copy_flat(struct scratch *s, __u32 off, __u64 src, __u64 len, __u32 max) {
    __u64 end = (__u64)off + len;
    __u32 room = end > max ? max : (__u32)end;
    if (room > WL_MAX_PAYLOAD)
        room = WL_MAX_PAYLOAD;
    if (room <= off)
        return 0;
    /* off < room <= WL_MAX_PAYLOAD, so neither test below ever fails; they
     * give the verifier bounds on the registers the helper gets. */
    __u64 n = room - off;
    barrier_var(n);
    if (n > WL_MAX_PAYLOAD)
        return 0;
    __u64 at = off;
    barrier_var(at);
    at &= WL_MAX_PAYLOAD - 1;
    if (bpf_probe_read_user(&s->payload[at], n, (void *)src) != 0)
        return 0;
    return n;
}

/* Copy what the scratch's copy under way wants of the iovec at its cursor
 * (base, len); true: go on to the next iovec (the cursor moved past this
 * one). */
static __always_inline bool take_iov(struct scratch *s, __u64 base, __u64 len) {
    struct iov_cursor *cur = &s->cur;
    struct iov_copy *c = &s->copy;
    if (c->want < cur->at + len) {
        __u64 in = c->want - cur->at, n = len - in;
        if (n > c->end - c->want)
            n = c->end - c->want;
        __u32 got = copy_flat(s, c->off, base + in, n, c->max);
        if (got == 0)
            return false;
        c->off += got;
        c->want += got;
        if (c->want < cur->at + len)
            return false; /* the rest of this iovec is the next record's */
    }
    cur->at += len;
    cur->idx++;
    return true;
}

/* A peer address given with a send (unconnected datagram sockets). */
static __always_inline void peer_from_sockaddr(struct sock_desc *d, __u64 addr) {
    if (!addr || d->rport != 0)
        return;
    unsigned short family = 0;
    bpf_probe_read_user(&family, sizeof(family), (void *)addr);
    if (family == AF_INET) {
        struct sockaddr_in sa = {};
        bpf_probe_read_user(&sa, sizeof(sa), (void *)addr);
        __builtin_memcpy(d->raddr, &sa.sin_addr, 4);
        d->rport = __builtin_bswap16(sa.sin_port);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 sa = {};
        bpf_probe_read_user(&sa, sizeof(sa), (void *)addr);
        __builtin_memcpy(d->raddr, &sa.sin6_addr, 16);
        d->rport = __builtin_bswap16(sa.sin6_port);
    }
}

/* The source of the datagram of `len` bytes just received on an
 * unconnected UDP socket: the oldest queued source of that length (see
 * on_data_ready). Matching the length skips the source of a datagram the
 * kernel dropped at receive (bad checksum); when none matches (a buffer
 * shorter than the datagram, or more queued than the queue of sources
 * holds) the peer stays unknown rather than wrong. */
static __always_inline void peer_from_datagram(struct sock_desc *d, struct sock *sk, long len) {
    if (d->rport != 0 || sk->sk_protocol != IPPROTO_UDP)
        return;
    struct sock_info *info = bpf_sk_storage_get(&sock_infos, sk, 0, 0);
    if (!info)
        return;
    __u32 head = info->dgram_head, tail = info->dgram_tail;
    if (tail - head > DGRAM_QUEUE)
        head = tail - DGRAM_QUEUE;
    for (int i = 0; i < DGRAM_QUEUE; i++) {
        if (head == tail)
            break;
        struct dgram_src *e = &info->dgrams[head & (DGRAM_QUEUE - 1)];
        head++;
        if (e->len != len)
            continue;
        info->dgram_head = head;
        if (d->family == AF_INET)
            __builtin_memcpy(d->raddr, e->addr + 12, 4);
        else
            __builtin_memcpy(d->raddr, e->addr, 16);
        d->rport = __builtin_bswap16(e->port);
        return;
    }
}

/* A data record of one flat buffer's first n bytes, written straight into
 * the ring buffer with no copy through the scratch buffer; `real`: the bytes
 * of the call it stands for. A reservation's size must be a constant, so
 * the record is the smallest of a few size classes that holds the payload
 * (waste under 2x). 0: the ring buffer was full (counted as lost). */
#define RESERVE_CLASS(room)                                                                    \
    if (n <= (room)) {                                                                         \
        int odd = odd_cpu();                                                                   \
        __u64 wake = wakeup_flag(odd, sizeof(struct wl_event) + (room));                       \
        struct wl_event *e = RING_RESERVE(odd, sizeof(struct wl_event) + (room));              \
        if (!e) {                                                                              \
            count(WL_CNT_LOST);                                                                \
            return 0;                                                                          \
        }                                                                                      \
        fill_header(e, d, WL_EV_DATA, sys, real, direction, pos);                              \
        e->flags = flags;                                                                      \
        /* Bound the length again where the verifier sees it (clang would                     \
         * otherwise reuse the register checked against cap_len's bound only). */              \
        __u64 len = n;                                                                         \
        barrier_var(len);                                                                      \
        if (len > (room))                                                                      \
            len = (room);                                                                      \
        if (bpf_probe_read_user(e + 1, len, (void *)buf) == 0)                                 \
            e->captured = len;                                                                 \
        if (e->captured < real)                                                                \
            count(WL_CNT_TRUNCATED);                                                           \
        bpf_ringbuf_submit(e, wake);                                                           \
        count(WL_CNT_EVENTS);                                                                  \
        return 1;                                                                              \
    }

static __always_inline int flat_record(const struct sock_desc *d, __u16 sys, long real, __u8 direction, __u64 pos,
                                       __u32 n, __u64 buf, __u8 flags) {
    RESERVE_CLASS(128)
    RESERVE_CLASS(512)
    RESERVE_CLASS(2048)
    RESERVE_CLASS(4096)
    RESERVE_CLASS(WL_MAX_PAYLOAD)
    return 0;
}

/* Fewer classes for continuation records: every class is one more path
 * the verifier explores in the bpf_loop callback below. */
static __always_inline int cont_record(const struct sock_desc *d, __u16 sys, long real, __u8 direction, __u64 pos,
                                       __u32 n, __u64 buf, __u8 flags) {
    RESERVE_CLASS(0)
    RESERVE_CLASS(1024)
    RESERVE_CLASS(4096)
    RESERVE_CLASS(WL_MAX_PAYLOAD)
    return 0;
}

/* Where continuation record i of a call of `len` bytes starts (`*off`) and
 * how many bytes it copies (`*m`); false past the call's end. The first
 * record held the capture size (a call continues only when it is longer),
 * every later one WL_MAX_PAYLOAD bytes: derived from i alone, so the
 * bpf_loop callbacks write no state back and their verification converges
 * at once. `*last`: the record that stands for every byte left. */
static __always_inline bool cont_span(__u64 i, __u64 len, __u64 *off, __u32 *m, bool *last) {
    *off = cap_len(~0ULL, 0) + i * WL_MAX_PAYLOAD;
    if (*off >= len)
        return false;
    __u64 left = len - *off;
    *m = left > WL_MAX_PAYLOAD ? WL_MAX_PAYLOAD : (__u32)left;
    *last = i >= WL_CONT_RECORDS - 1 || left <= WL_MAX_PAYLOAD;
    return true;
}

/* One call on a flat buffer, as flat_call takes it beside its socket (a
 * BPF function takes at most five arguments). */
struct flat_args {
    __u64 pos;
    __u64 buf;
    __u64 buf_len;
    __u64 len;   /* bytes to copy in all */
    __u64 skip_until; /* a body a plugin skips ends there: not copied */
    long ret;
    __u32 budget;
    __u16 sys;
    __u8 direction;
    __u8 flags; /* WL_F_TLS or 0: on every record of the call */
};

/* The call and its socket, as its continuation loop takes them. */
struct flat {
    struct sock_desc d;
    struct flat_args a;
};

/* Per thread: the call whose continuation records flat_records' bpf_loop
 * writes. Not a copy on the stack: the verifier adds a bpf_loop callback's
 * frame to its caller's (512 bytes for the chain), and a build of 6.18.44
 * refused on_send when the copy and the loop were in flat_call (312 + 184
 * + 72 bytes). The chain is now the program and flat_call or cont_step
 * (tests/ebpf_arches.rs keeps it 64 bytes under the limit). Per thread, not
 * per CPU: an uprobe program can be preempted. */
struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct flat);
} flat_conts SEC(".maps");

/* Continuation record i; 1 stops the loop (the last one, or the ring
 * buffer is full). A bpf_loop callback is verified until its states
 * converge: it writes nothing back and takes where it is from i alone
 * (every record before the last holds WL_MAX_PAYLOAD bytes), so they do
 * at once. (Inline, the loop was verified once per iteration and call site,
 * past the verifier's limit.) */
static long cont_step(__u64 i, void *arg) {
    const struct flat *c = bpf_task_storage_get(&flat_conts, bpf_get_current_task_btf(), 0, 0);
    if (!c) {
        /* Never seen (flat_call wrote it just before): the rest is lost. */
        count(WL_CNT_LOST);
        return 1;
    }
    __u64 off;
    __u32 m;
    bool last;
    const struct flat_args *a = &c->a;
    if (!cont_span(i, a->len, &off, &m, &last))
        return 1;
    long real = last ? a->ret - (long)off : (long)m;
    /* Inside a body a plugin skips: the size only. */
    if (a->pos + off + m <= a->skip_until)
        m = 0;
    if (!cont_record(&c->d, a->sys, real, a->direction, a->pos + off, m, a->buf + off, WL_F_CONT | a->flags))
        return 1;
    return last;
}

/* A data event of one flat buffer. A call longer than what one record
 * copies (the capture size), on a stream socket that wants whole calls (no
 * budget of its own: a plugin that needs every byte, e.g. to frame a
 * pipelined batch of replies, or a socket not yet detected), is not cut:
 * the rest follows in up to WL_CONT_RECORDS continuation records of
 * WL_MAX_PAYLOAD bytes (whatever the capture size: counts must not depend
 * on it), and only bytes past those are left uncopied (the last record
 * counts them). Cutting it would cost the messages inside the
 * uncopied bytes, and with them calls.
 *
 * 1: continuation records follow; the call stands in the thread's
 * flat_conts entry, for flat_records' loop. A global function: verified
 * once, not at each of its call sites (inlined, with the loop, it took
 * on_send past the verifier's limit of a million instructions). What it is
 * given is checked here. */
__noinline int flat_call(const struct sock_desc *d, const struct flat_args *call) {
    if (!d || !call || call->ret <= 0)
        return 0;
    /* A datagram longer than the buffer (MSG_TRUNC) moved only buf_len. */
    __u64 len = (__u64)call->ret < call->buf_len ? (__u64)call->ret : call->buf_len;
    __u32 n = cap_len(len, call->budget);
    bool more = call->budget == 0 && len > n && d->type == SOCK_STREAM;
    struct flat *c = NULL;
    if (more) {
        c = bpf_task_storage_get(&flat_conts, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
        /* No room for the thread's entry: one record, cut (counted). */
        more = c != NULL;
    }
    if (!flat_record(d, call->sys, more ? (long)n : call->ret, call->direction, call->pos, n, call->buf,
                     call->flags) ||
        !more || !c)
        return 0;
    c->d = *d;
    c->a = *call;
    c->a.len = len;
    return 1;
}

/* A call on a flat buffer: its first record, then its continuation records
 * if it has any. The loop runs here, not in flat_call, so that cont_step's
 * frame adds to the program's alone (see flat_conts). */
static __always_inline void flat_records(const struct sock_desc *d, const struct flat_args *call) {
    if (flat_call(d, call) > 0)
        bpf_loop(WL_CONT_RECORDS, cont_step, NULL, 0);
}

static __always_inline void flat_event(const struct sock_desc *d, __u16 sys, long ret, __u8 direction, __u64 pos,
                                       __u32 budget, __u64 skip_until, __u64 buf, __u64 buf_len) {
    struct flat_args c = {
        .pos = pos, .buf = buf, .buf_len = buf_len, .skip_until = skip_until, .ret = ret, .budget = budget,
        .sys = sys, .direction = direction,
    };
    flat_records(d, &c);
}

/* An event in the per-CPU scratch record, header filled, no payload yet
 * (send it with submit()); NULL only if the map lookup fails. */
static __always_inline struct scratch *scratch_event(const struct sock_desc *d, __u16 kind, __u16 sys, long ret,
                                                     __u8 direction, __u64 pos) {
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
    if (s)
        fill_header(&s->ev, d, kind, sys, ret, direction, pos);
    return s;
}

/* One call on an iovec array, as its continuation loop takes it. */
struct gathered {
    struct sock_desc d;
    __u64 pos;
    __u64 skip_until;
    long ret;
    __u16 sys;
    __u8 direction;
};

/* The next iovec of the copy under way (s->copy, from the cursor); 1
 * stops the loop. Headers are read MAX_IOV at a time. A bpf_loop callback
 * that keeps all it knows in the scratch (map memory, which the verifier
 * does not follow), so it is verified once, however many iovecs a call
 * has: inline, a walk over MAX_IOV headers was verified turn by turn at
 * each call site (about 200,000 instructions per socket program). */
static long iov_step(__u64 k, void *arg) {
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
    if (!s)
        return 1;
    __u64 idx = s->cur.idx;
    if (idx >= s->cnt || s->copy.want >= s->copy.end)
        return 1;
    if (idx - s->head_at >= s->heads) {
        __u64 n = s->cnt - idx < MAX_IOV ? s->cnt - idx : MAX_IOV;
        barrier_var(n);
        if (n > MAX_IOV)
            n = MAX_IOV;
        s->heads = 0;
        if (bpf_probe_read_user(s->head, n * sizeof(struct iovec), (void *)(s->iovs + idx * sizeof(struct iovec))))
            return 1;
        s->head_at = idx;
        s->heads = n;
    }
    const struct iovec *h = &s->head[(idx - s->head_at) & (MAX_IOV - 1)];
    return take_iov(s, (__u64)h->iov_base, h->iov_len) ? 0 : 1;
}

/* Copy up to `total` bytes (at most WL_MAX_PAYLOAD) of the gathered call
 * in the scratch, from byte `start` of the bytes its iovecs hold end to
 * end, into the record's payload, walking on from the cursor. If headers
 * cannot be read (the array unmapped since the call), the record carries
 * fewer bytes or none: its size still counts. */
static __always_inline __u32 copy_iov(struct scratch *s, __u64 start, __u32 total) {
    s->copy.want = start;
    s->copy.end = start + total;
    s->copy.off = 0;
    s->copy.max = total;
    bpf_loop(UIO_MAXIOV, iov_step, NULL, 0);
    return s->copy.off;
}

/* Continuation record i of a gathered call (see cont_step: the same rules). */
static long iov_cont_step(__u64 i, void *arg) {
    const struct gathered *c = arg;
    __u64 off;
    __u32 m;
    bool last;
    if (!cont_span(i, (__u64)c->ret, &off, &m, &last))
        return 1;
    struct scratch *s =
        scratch_event(&c->d, WL_EV_DATA, c->sys, last ? c->ret - (long)off : (long)m, c->direction, c->pos + off);
    if (!s)
        return 1;
    s->ev.flags = WL_F_CONT;
    /* Inside a body a plugin skips: the size only. */
    s->ev.captured = c->pos + off + m <= c->skip_until ? 0 : copy_iov(s, off, m);
    if (s->ev.captured < s->ev.real_len)
        count(WL_CNT_TRUNCATED);
    return submit(s) ? last : 1;
}

/* A data event whose payload is gathered from an iovec array; a long call
 * on a socket that wants whole calls continues as flat_records' does. */
static __always_inline void iov_event(const struct sock_desc *d, __u16 sys, long ret, __u8 direction, __u64 pos,
                                      __u32 budget, __u64 skip_until, __u64 iovs, __u64 cnt) {
    __u32 n = cap_len(ret, budget);
    bool more = budget == 0 && (__u64)ret > n && d->type == SOCK_STREAM;
    struct scratch *s = scratch_event(d, WL_EV_DATA, sys, more ? (long)n : ret, direction, pos);
    if (!s)
        return;
    s->iovs = iovs;
    s->cnt = cnt;
    s->heads = 0;
    s->cur.idx = 0;
    s->cur.at = 0;
    s->ev.captured = copy_iov(s, 0, n);
    if (s->ev.captured < s->ev.real_len)
        count(WL_CNT_TRUNCATED);
    if (!submit(s) || !more)
        return;
    struct gathered c = {
        .d = *d, .pos = pos, .skip_until = skip_until, .ret = ret, .sys = sys, .direction = direction,
    };
    bpf_loop(WL_CONT_RECORDS, iov_cont_step, &c, 0);
}

/* A data event without payload (sendfile, splice, io_uring, skipped
 * bodies). A fixed-size reservation straight in the ring. */
static __always_inline void size_event_flagged(const struct sock_desc *d, __u16 sys, long ret, __u8 direction,
                                               __u64 pos, __u8 flags) {
    int odd = odd_cpu();
    __u64 wake = wakeup_flag(odd, sizeof(struct wl_event));
    struct wl_event *e = RING_RESERVE(odd, sizeof(struct wl_event));
    if (!e) {
        count(WL_CNT_LOST);
        return;
    }
    fill_header(e, d, WL_EV_DATA, sys, ret, direction, pos);
    e->flags = flags;
    bpf_ringbuf_submit(e, wake);
    count(WL_CNT_EVENTS);
}

static __always_inline void size_event(const struct sock_desc *d, __u16 sys, long ret, __u8 direction, __u64 pos) {
    size_event_flagged(d, sys, ret, direction, pos, 0);
}

/* Which message of a sendmmsg/recvmmsg vector this one is. The calls hand
 * the messages to the socket in order and stop at the first error, so the
 * index runs on from the previous message of the same call; a new call
 * starts at 0. (A call that ends early without an error, followed by one
 * on the same vector from the same thread, would be misnumbered.) */
static __always_inline __u32 mmsg_index(struct task_struct *task, __u64 vec, __u32 vlen, long ret) {
    struct thread_info *t = bpf_task_storage_get(&thread_infos, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!t)
        return 0;
    __u32 i = t->mmsg_vec == vec && t->mmsg_next < t->mmsg_vlen ? t->mmsg_next : 0;
    t->mmsg_vec = vec;
    t->mmsg_vlen = vlen;
    t->mmsg_next = ret < 0 ? vlen : i + 1;
    return i;
}

/* A socket's first call: describe it once (what records say about it, the
 * drop rules' and sampling's verdict) and set how its calls are treated. */
static __always_inline void first_sight(struct sock *sk, struct sock_info *info) {
    struct sock_desc *d = &info->desc;
    describe(sk, d);
    d->cookie = bpf_get_socket_cookie(sk);
    if (!sock_wanted(d)) {
        info->verdict = VERDICT_DROP;
        return;
    }
    if (d->family == AF_UNIX)
        d->role = unix_role(sk);
    /* Nothing needs the bytes: TCP sockets are counted here, others get
     * records without payload. */
    if (l4_default)
        info->mode = WL_MODE_L4;
    info->verdict = VERDICT_KEEP;
}

/* What the daemon asked of this socket since its last call, if anything:
 * one array read unless the daemon wrote since. */
/* Take the daemon's wishes under `key` (conn_ctl) into a socket's state,
 * once the control generation moved past `*seen_gen`: mode and budgets
 * replace the old ones, skips only ever move forward. */
static __always_inline void take_wishes(__u64 key, __u32 *seen_gen, __u8 *mode, __u32 *budget, __u64 *skip_until) {
    __u32 zero = 0;
    __u32 *gen = bpf_map_lookup_elem(&ctl_gen, &zero);
    if (!gen || *gen == *seen_gen)
        return;
    *seen_gen = *gen;
    struct wl_ctl *c = bpf_map_lookup_elem(&conn_ctl, &key);
    if (!c)
        return;
    *mode = c->mode;
    budget[0] = c->budget[0];
    budget[1] = c->budget[1];
    if (c->skip_until[0] > skip_until[0])
        skip_until[0] = c->skip_until[0];
    if (c->skip_until[1] > skip_until[1])
        skip_until[1] = c->skip_until[1];
    bpf_map_delete_elem(&conn_ctl, &key);
}

static __always_inline void apply_ctl(struct sock_info *info) {
    take_wishes(info->desc.cookie, &info->ctl_gen, &info->mode, info->budget, info->skip_until);
}

/* The socket's last user, for the records made outside its calls. */
static __always_inline void note_owner(struct sock_info *info, __u32 pid) {
    if (info->owner_pid == pid)
        return;
    struct task_struct *leader = bpf_get_current_task_btf()->group_leader;
    info->owner_pid = pid;
    info->owner_start = leader->start_time;
    __builtin_memcpy(info->owner_comm, leader->comm, sizeof(info->owner_comm));
}

/* A socket call made inside an SSL_write/SSL_read: the socket is TLS, and
 * it is the call's socket. */
static __always_inline void note_ssl_socket(struct task_struct *task, struct sock_info *info) {
    __u32 zero = 0;
    __s64 *in_flight = bpf_map_lookup_elem(&ssl_in_flight, &zero);
    if (!in_flight || *in_flight <= 0)
        return;
    struct ssl_call *c = bpf_task_storage_get(&ssl_calls, task, 0, 0);
    if (!c || !c->ssl)
        return;
    info->tls = 1;
    if (c->has_sock)
        return;
    c->d = info->desc;
    c->d.role = info->role;
    c->has_sock = 1;
}

/* One send or receive of `ret` bytes on sk, at the end of sock_sendmsg or
 * sock_recvmsg, in the context of the process that made it. */
static __always_inline int on_data(struct sock *sk, long ret, int flags, __u8 direction) {
    /* The pid filters come before anything is read. */
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!pid_wanted(pid))
        return 0;
    struct task_struct *task = bpf_get_current_task_btf();
    if (ret <= 0) {
        /* Nothing moved. An error ends a sendmmsg/recvmmsg call. */
        if (ret < 0 && !(task->flags & PF_IO_WORKER)) {
            struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
            long nr = SYSCALL_NR(regs);
            if (nr == NR_sendmmsg || nr == NR_recvmmsg)
                mmsg_index(task, SYSCALL_ARG(regs, 2), SYSCALL_ARG(regs, 3), ret);
        }
        return 0;
    }
    /* Bytes peeked at are received again; kernel threads (NFS, kTLS
     * workers) send on nobody's behalf. */
    if ((direction == WL_INGRESS && (flags & MSG_PEEK)) || (task->flags & PF_KTHREAD)) {
        count(WL_CNT_FILTERED);
        return 0;
    }
    struct sock_info *info = bpf_sk_storage_get(&sock_infos, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!info) {
        count(WL_CNT_LOST);
        return 0;
    }
    if (info->verdict == VERDICT_UNSEEN)
        first_sight(sk, info);
    if (info->verdict != VERDICT_KEEP) {
        count(WL_CNT_FILTERED);
        return 0;
    }
    apply_ctl(info);
    note_owner(info, pid);
    __u8 dir = direction & 1;
    bool tcp = sk->sk_protocol == IPPROTO_TCP;
    if (tcp)
        info->reported = 1;
    if (info->mode == WL_MODE_DROP) {
        count(WL_CNT_FILTERED);
        return 0;
    }
    if (tcp)
        note_ssl_socket(task, info);
    if ((info->mode == WL_MODE_L4 || info->tls) && tcp) {
        /* Counted here; the daemon reads it at its next flush (the
         * iterator below) or when the socket closes. A TLS socket's own
         * bytes are ciphertext: its calls are read in plaintext at the
         * library (below), never from here. */
        __sync_fetch_and_add(&info->counts.bytes[dir], ret);
        __sync_fetch_and_add(&info->counts.calls[dir], 1);
        count(WL_CNT_COUNTED);
        return 0;
    }

    /* A record. What the socket is was read at its first call; a UDP
     * socket's peer may change (connect again), so it is read again. */
    struct sock_desc d = info->desc;
    if (sk->sk_protocol == IPPROTO_UDP) {
        describe(sk, &d);
        d.cookie = info->desc.cookie;
    }
    if (tcp)
        d.role = info->role;
    __u64 pos = info->pos[dir];
    info->pos[dir] = pos + ret;
    __u32 budget = info->budget[dir];
    __u64 skip = info->skip_until[dir];
    /* No payload: the daemon counts this call from its size alone (all of
     * it inside a body a plugin skips, or a socket left to layer 4). */
    bool no_copy = pos + ret <= skip || info->mode == WL_MODE_L4;

    /* io_uring's worker threads run no system call of their own: their
     * saved registers name no buffer (size only, below). */
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
    long nr = (task->flags & PF_IO_WORKER) ? -1 : SYSCALL_NR(regs);
    /* Every call told apart below takes its buffer (or vector, or message)
     * second and its length (or count) third. */
    __u64 arg2 = SYSCALL_ARG(regs, 2), arg3 = SYSCALL_ARG(regs, 3);
    if (no_copy) {
        /* The vector index of sendmmsg/recvmmsg still moves on. */
        if (nr == NR_sendmmsg || nr == NR_recvmmsg)
            mmsg_index(task, arg2, arg3, ret);
        if (nr == NR_recvfrom || nr == NR_recvmsg || nr == NR_recvmmsg)
            peer_from_datagram(&d, sk, ret);
        if (info->mode != WL_MODE_L4)
            count(WL_CNT_SKIPPED);
        size_event(&d, WL_SYS_OTHER, ret, direction, pos);
        return 0;
    }

    switch (nr) {
    case NR_read:
    case NR_write:
        flat_event(&d, nr == NR_read ? WL_SYS_READ : WL_SYS_WRITE, ret, direction, pos, budget, skip, arg2, arg3);
        break;
    case NR_sendto:
        peer_from_sockaddr(&d, SYSCALL_ARG(regs, 5));
        flat_event(&d, WL_SYS_SENDTO, ret, direction, pos, budget, skip, arg2, arg3);
        break;
    case NR_recvfrom:
        peer_from_datagram(&d, sk, ret);
        flat_event(&d, WL_SYS_RECVFROM, ret, direction, pos, budget, skip, arg2, arg3);
        break;
    case NR_readv:
    case NR_writev:
        iov_event(&d, nr == NR_readv ? WL_SYS_READV : WL_SYS_WRITEV, ret, direction, pos, budget, skip, arg2, arg3);
        break;
    case NR_sendmsg:
    case NR_recvmsg:
    case NR_sendmmsg:
    case NR_recvmmsg: {
        __u64 msg = arg2;
        __u16 sys = nr == NR_sendmsg ? WL_SYS_SENDMSG : nr == NR_recvmsg ? WL_SYS_RECVMSG
                  : nr == NR_sendmmsg ? WL_SYS_SENDMMSG : WL_SYS_RECVMMSG;
        if (nr == NR_sendmmsg || nr == NR_recvmmsg)
            msg += (__u64)mmsg_index(task, arg2, arg3, ret) * sizeof(struct mmsghdr);
        struct user_msghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (void *)msg) != 0) {
            size_event(&d, sys, ret, direction, pos);
            break;
        }
        if (direction == WL_EGRESS)
            peer_from_sockaddr(&d, (__u64)m.msg_name);
        else
            peer_from_datagram(&d, sk, ret);
        iov_event(&d, sys, ret, direction, pos, budget, skip, (__u64)m.msg_iov, m.msg_iovlen);
        break;
    }
    case NR_sendfile:
    case NR_splice:
        size_event(&d, WL_SYS_SENDFILE, ret, direction, pos);
        break;
    default:
        /* Not a system call on the socket (io_uring, a kernel path on the
         * process's behalf): the size only. */
        size_event(&d, WL_SYS_OTHER, ret, direction, pos);
        break;
    }
    return 0;
}

/* What the socket moved while counted here, into out, subtracted from its
 * pending counts (a call on another CPU meanwhile stays pending). */
static __always_inline void take_counts(struct sock_info *info, struct wl_counts *out) {
    for (int i = 0; i < 2; i++) {
        __u64 b = info->counts.bytes[i], c = info->counts.calls[i];
        out->bytes[i] = b;
        out->calls[i] = c;
        __sync_fetch_and_add(&info->counts.bytes[i], -b);
        __sync_fetch_and_add(&info->counts.calls[i], -c);
    }
}

/* A record of `kind` (close or stats) with what the socket moved while
 * counted here, said on behalf of its last user. */
static __always_inline void counts_record(struct wl_event *ev, struct wl_counts *counts, struct sock_info *info,
                                          __u16 kind) {
    fill_owner(ev, info, kind);
    ev->role = info->role;
    ev->captured = sizeof(struct wl_counts);
    take_counts(info, counts);
}

SEC("tp_btf/sock_send_length")
int on_send(__u64 *ctx) {
    return on_data((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], WL_EGRESS);
}

SEC("tp_btf/sock_recv_length")
int on_recv(__u64 *ctx) {
    return on_data((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], WL_INGRESS);
}

/* TLS plaintext at OpenSSL 3's SSL_write, SSL_read, SSL_write_ex and
 * SSL_read_ex (uprobes on every libssl.so.3 the daemon finds mapped, by
 * file: one attachment serves every process that maps it). The entry saves
 * the buffer; the return reads what moved into a data record of the
 * connection under the SSL object, flagged WL_F_TLS, with its own stream
 * positions. The same filters apply as at the socket (pids first; a socket
 * sampled out or dropped is never tied to an SSL object, so its plaintext
 * is not recorded either). */
static __always_inline int ssl_enter(struct pt_regs *ctx, __u8 dir, bool ex) {
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!pid_wanted(pid))
        return 0;
    struct task_struct *task = bpf_get_current_task_btf();
    struct ssl_call *c = bpf_task_storage_get(&ssl_calls, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!c)
        return 0;
    /* (A call whose return was missed is still counted: not twice.) */
    if (!c->ssl)
        ssl_in_flight_add(1);
    c->ssl = FUNC_ARG_1(ctx);
    c->buf = FUNC_ARG_2(ctx);
    c->moved = ex ? FUNC_ARG_4(ctx) : 0;
    c->dir = dir;
    c->has_sock = 0;
    return 0;
}

/* The daemon's wishes for a TLS connection's plaintext, as apply_ctl for
 * a socket's own bytes. */
static __always_inline void ssl_apply_ctl(struct ssl_conn *sc) {
    take_wishes(sc->d.cookie | WL_TLS_COOKIE, &sc->ctl_gen, &sc->mode, sc->budget, sc->skip_until);
}

static __always_inline int ssl_exit(struct pt_regs *ctx) {
    struct task_struct *task = bpf_get_current_task_btf();
    struct ssl_call *c = bpf_task_storage_get(&ssl_calls, task, 0, 0);
    if (!c || !c->ssl)
        return 0;
    struct ssl_key k = {.ssl = c->ssl, .tgid = bpf_get_current_pid_tgid() >> 32};
    c->ssl = 0;
    ssl_in_flight_add(-1);
    long ret = (int)FUNC_RET(ctx);
    long n = ret;
    if (c->moved) {
        /* _ex: 1 on success, the bytes in *moved. */
        __u64 m = 0;
        if (ret != 1 || bpf_probe_read_user(&m, sizeof(m), (void *)c->moved) != 0)
            return 0;
        n = (long)m;
    }
    if (n <= 0)
        return 0;
    count(WL_CNT_TLS);
    struct ssl_conn *sc = bpf_map_lookup_elem(&ssl_conns, &k);
    if (c->has_sock && (!sc || sc->d.cookie != c->d.cookie)) {
        /* First seen, or the object was reused for another socket: its
         * plaintext streams start here. */
        struct ssl_conn fresh = {.d = c->d};
        bpf_map_update_elem(&ssl_conns, &k, &fresh, BPF_ANY);
        sc = bpf_map_lookup_elem(&ssl_conns, &k);
    }
    if (!sc) {
        count(WL_CNT_TLS_NO_SOCKET);
        return 0;
    }
    ssl_apply_ctl(sc);
    __u8 dir = c->dir & 1;
    __u64 pos = sc->pos[dir];
    sc->pos[dir] = pos + n;
    /* No plugin parses it: the socket's layer 4 is counted already. */
    if (sc->mode != WL_MODE_COPY) {
        count(WL_CNT_COUNTED);
        return 0;
    }
    __u16 sys = dir == WL_EGRESS ? WL_SYS_SSL_WRITE : WL_SYS_SSL_READ;
    __u64 skip = sc->skip_until[dir];
    /* All of it inside a body a plugin skips: the size only. */
    if (pos + n <= skip) {
        count(WL_CNT_SKIPPED);
        size_event_flagged(&sc->d, sys, n, dir, pos, WL_F_TLS);
        return 0;
    }
    struct sock_desc d = sc->d;
    struct flat_args call = {
        .pos = pos, .buf = c->buf, .buf_len = n, .ret = n, .skip_until = skip,
        .budget = sc->budget[dir], .sys = sys, .direction = dir, .flags = WL_F_TLS,
    };
    flat_records(&d, &call);
    return 0;
}

SEC("uprobe")
int ssl_write_enter(struct pt_regs *ctx) {
    return ssl_enter(ctx, WL_EGRESS, false);
}

SEC("uretprobe")
int ssl_write_exit(struct pt_regs *ctx) {
    return ssl_exit(ctx);
}

SEC("uprobe")
int ssl_read_enter(struct pt_regs *ctx) {
    return ssl_enter(ctx, WL_INGRESS, false);
}

SEC("uretprobe")
int ssl_read_exit(struct pt_regs *ctx) {
    return ssl_exit(ctx);
}

SEC("uprobe")
int ssl_write_ex_enter(struct pt_regs *ctx) {
    return ssl_enter(ctx, WL_EGRESS, true);
}

SEC("uretprobe")
int ssl_write_ex_exit(struct pt_regs *ctx) {
    return ssl_exit(ctx);
}

SEC("uprobe")
int ssl_read_ex_enter(struct pt_regs *ctx) {
    return ssl_enter(ctx, WL_INGRESS, true);
}

SEC("uretprobe")
int ssl_read_ex_exit(struct pt_regs *ctx) {
    return ssl_exit(ctx);
}

/* TCP state changes: the role a socket starts in, and the close of one
 * whose data was reported. */
SEC("tp_btf/inet_sock_set_state")
int on_state(__u64 *ctx) {
    struct sock *sk = (struct sock *)ctx[0];
    int old = ctx[1], state = ctx[2];
    if (sk->sk_protocol != IPPROTO_TCP)
        return 0;
    if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || (old == TCP_SYN_RECV && state == TCP_ESTABLISHED)) {
        struct sock_info *info = bpf_sk_storage_get(&sock_infos, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (info && info->role == WL_ROLE_UNKNOWN)
            info->role = state == TCP_SYN_SENT ? WL_ROLE_CLIENT : WL_ROLE_SERVER;
        return 0;
    }
    if (state != TCP_CLOSE)
        return 0;
    struct sock_info *info = bpf_sk_storage_get(&sock_infos, sk, 0, 0);
    if (!info || !info->reported)
        return 0;
    info->reported = 0;
    /* A control the socket never read again is of no use now. */
    __u64 cookie = info->desc.cookie;
    bpf_map_delete_elem(&conn_ctl, &cookie);
    /* Said on behalf of the socket's last user (this runs in whatever
     * context closed it), with what it moved while counted here. On the
     * stack, not in scratch_map: a close can come in softirq (a reset)
     * while a program on the same CPU is filling a record there. */
    struct stats_record r = {};
    struct wl_counts *counts = &r.counts;
    counts_record(&r.ev, counts, info, WL_EV_CLOSE);
    __u64 size = sizeof(r);
    int odd = odd_cpu();
    if (RING_OUTPUT(odd, &r, size, wakeup_flag(odd, size)) == 0) {
        count(WL_CNT_EVENTS);
        return 0;
    }
    /* The ring is full: what the socket counted waits for the daemon's
     * next flush (a close without counts is only a close). */
    if ((counts->calls[0] | counts->calls[1]) == 0 ||
        bpf_map_update_elem(&closed_counts, &cookie, &r, BPF_ANY) != 0)
        count(WL_CNT_LOST);
    return 0;
}

/* A datagram was queued on an unconnected UDP socket (softirq, after the
 * enqueue): note its source, from the IP and UDP headers of the skb at the
 * queue's tail, in the socket's queue of sources; each receive takes the
 * oldest (see peer_from_datagram). */
SEC("tp_btf/sk_data_ready")
int on_data_ready(__u64 *ctx) {
    struct sock *sk = (struct sock *)ctx[0];
    if (sk->sk_protocol != IPPROTO_UDP || sk->__sk_common.skc_dport != 0)
        return 0;
    struct sk_buff *skb = sk->sk_receive_queue.prev;
    if (!skb || (void *)skb == (void *)&sk->sk_receive_queue)
        return 0;
    unsigned char *head = skb->head;
    __u16 nh = skb->network_header, th = skb->transport_header;
    __u8 ip[24];
    if (bpf_probe_read_kernel(ip, sizeof(ip), head + nh) != 0)
        return 0;
    __be16 udp[4];
    if (bpf_probe_read_kernel(udp, sizeof(udp), head + th) != 0)
        return 0;
    struct sock_info *info = bpf_sk_storage_get(&sock_infos, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!info)
        return 0;
    __u32 tail = info->dgram_tail;
    struct dgram_src *e = &info->dgrams[tail & (DGRAM_QUEUE - 1)];
    __u8 version = ip[0] >> 4;
    if (version == 4) {
        /* As ::ffff:a.b.c.d, which stands for itself on IPv6 sockets and
         * is read back as IPv4 by the daemon. */
        __builtin_memset(e->addr, 0, 10);
        e->addr[10] = 0xff;
        e->addr[11] = 0xff;
        __builtin_memcpy(e->addr + 12, ip + 12, 4);
    } else {
        __builtin_memcpy(e->addr, ip + 8, 16);
    }
    e->port = udp[0];
    e->len = __builtin_bswap16(udp[2]) - 8;
    barrier();
    info->dgram_tail = tail + 1;
    return 0;
}

/* The daemon's flush: every TCP socket with calls counted here (not yet
 * reported) gives a stats record, read by the daemon from the iterator's
 * file; what is read is subtracted. */

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct stats_record);
} stats_scratch SEC(".maps");

SEC("iter/tcp")
int dump_tcp_counts(struct bpf_iter__tcp *ctx) {
    struct sock_common *skc = ctx->sk_common;
    if (!skc)
        return 0;
    /* Listening, time-wait and request sockets are not full sockets: no
     * storage. */
    struct sock_info *info = bpf_sk_storage_get(&sock_infos, (struct sock *)skc, 0, 0);
    if (!info || (info->counts.calls[0] | info->counts.calls[1]) == 0)
        return 0;
    __u32 zero = 0;
    struct stats_record *r = bpf_map_lookup_elem(&stats_scratch, &zero);
    if (!r)
        return 0;
    counts_record(&r->ev, &r->counts, info, WL_EV_STATS);
    bpf_seq_write(ctx->meta->seq, r, sizeof(*r));
    return 0;
}

/* ---------------------------------------------------------------------------
 * Process identity: the command line from the kernel as a process is born
 * (exec), inherited by forked children until they exec, marked when the
 * process exits. The daemon reads it instead of /proc, where a process that
 * exits within milliseconds is already gone, and removes exited entries
 * once their events are read (an LRU map, so a daemon that falls behind
 * never blocks a new entry). */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u32);
    __type(value, struct wl_proc);
} procs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct wl_proc);
} proc_scratch SEC(".maps");

/* The argument area of the current process (whose mm is `mm`) into p. */
static __always_inline void read_argv(struct wl_proc *p, struct mm_struct *mm) {
    unsigned long start = mm->arg_start, end = mm->arg_end;
    __u64 full = end > start ? end - start : 0;
    __u64 n = full;
    if (n > WL_ARGV_MAX)
        n = WL_ARGV_MAX;
    barrier_var(n);
    p->argv_full = full;
    p->argv_len = 0;
    if (n > 0 && n <= WL_ARGV_MAX && bpf_probe_read_user(p->argv, n, (void *)start) == 0)
        p->argv_len = n;
}

/* A new program image: its pid's entry is this process now. */
SEC("tp_btf/sched_process_exec")
int on_exec(__u64 *ctx) {
    struct task_struct *task = (struct task_struct *)ctx[0];
    __u32 zero = 0, pid = task->tgid;
    struct wl_proc *p = bpf_map_lookup_elem(&proc_scratch, &zero);
    if (!p || !task->mm)
        return 0;
    p->start_ns = task->group_leader->start_time;
    p->exited_ns = 0;
    read_argv(p, task->mm);
    bpf_map_update_elem(&procs, &pid, p, BPF_ANY);
    return 0;
}

/* A new process (not a thread) runs its parent's program until it execs:
 * it is described as its parent is (the parent's entry, else the parent's
 * current arguments: this runs in the parent). */
SEC("tp_btf/sched_process_fork")
int on_fork(__u64 *ctx) {
    struct task_struct *parent = (struct task_struct *)ctx[0], *child = (struct task_struct *)ctx[1];
    if (child->pid != child->tgid)
        return 0;
    __u32 zero = 0, ppid = parent->tgid, pid = child->tgid;
    struct wl_proc *p = bpf_map_lookup_elem(&proc_scratch, &zero);
    if (!p)
        return 0;
    struct wl_proc *from = bpf_map_lookup_elem(&procs, &ppid);
    if (from) {
        __builtin_memcpy(p, from, sizeof(*p));
    } else {
        struct task_struct *current = bpf_get_current_task_btf();
        if (!current->mm)
            return 0; /* a kernel thread's child */
        read_argv(p, current->mm);
    }
    p->start_ns = child->start_time;
    p->exited_ns = 0;
    bpf_map_update_elem(&procs, &pid, p, BPF_ANY);
    return 0;
}

/* A process ended: its entry is marked (the daemon may not have read it
 * yet), and a pid the filters denied is allowed again, since it may be
 * reused by another process. */
SEC("tp_btf/sched_process_exit")
int on_exit(__u64 *ctx) {
    struct task_struct *task = (struct task_struct *)ctx[0];
    /* A thread that ends inside an SSL call (killed while it waited in
     * SSL_read) never returns from it. */
    struct ssl_call *c = bpf_task_storage_get(&ssl_calls, task, 0, 0);
    if (c && c->ssl) {
        c->ssl = 0;
        ssl_in_flight_add(-1);
    }
    if (task->pid != task->tgid)
        return 0; /* a thread */
    __u32 pid = task->tgid;
    struct wl_proc *p = bpf_map_lookup_elem(&procs, &pid);
    if (p && p->start_ns == task->start_time)
        p->exited_ns = bpf_ktime_get_ns();
    undeny_pid(pid);
    return 0;
}
