// SPDX-License-Identifier: GPL-2.0
/* wirelens capture: raw tracepoints on syscall entry and exit, dispatching
 * on the syscall number to the network calls. Each call on a socket is
 * remembered at entry (after the cheap filters: own pid, EBPF.Pid,
 * excluded pids, socket-only, drop rules, per-connection sampling) and
 * reported at exit with its return value, addresses and up to payload_max
 * bytes of payload (iovecs included), through a ring buffer whose consumer
 * is woken only when a lot is pending (it polls every few milliseconds). */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "wirelens.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 0170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115
#define MAX_IOV 8
#define MAX_MMSG 4

/* Set by the loader before the programs are loaded. */
const volatile __u32 payload_max = 4096;
const volatile __u32 self_pid = 0;
const volatile __u32 sampling = 100;      /* percent of connections kept */
const volatile __u8 filter_pids = 0;      /* keep only pids in allow_pids */
const volatile __u8 drop_unix = 0;
const volatile __u8 drop_unknown = 0;
const volatile __u8 drop_loopback = 0;
const volatile __u64 wakeup_bytes = 256 * 1024;

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 8 << 20);
} events SEC(".maps");

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

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, WL_CNT_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

/* A call between its entry and exit. */
struct call {
    __u64 ts;
    __u64 sock;
    __u64 buf;  /* buffer, iovec array, msghdr or mmsghdr array */
    __u64 addr; /* sockaddr (sendto/recvfrom) */
    __u64 count;/* iovcnt or vlen */
    __s32 fd;
    __u16 syscall;
    __u16 family;
    __u16 sock_type;
    __u16 lport;
    __u16 rport;
    __u8 laddr[16];
    __u8 raddr[16];
};

/* The call in flight, per thread (task-local storage: a pointer away from
 * the task, much cheaper than a hash lookup on every syscall exit). An
 * entry with ts == 0 is free. Every syscall's exit follows its own entry, so
 * the next exit of the thread always consumes (and frees) what an entry
 * stored. */
struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct call);
} active SEC(".maps");

struct scratch {
    struct wl_event ev;
    __u8 payload[2 * WL_MAX_PAYLOAD];
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

static __always_inline bool pid_wanted(__u32 pid) {
    if (pid == self_pid)
        return false;
    if (filter_pids && !pid_in(&allow_pids, pid))
        return false;
    if (pid_in(&deny_pids, pid)) {
        count(WL_CNT_DENIED);
        return false;
    }
    return true;
}

/* Field offsets as the running kernel has them (CO-RE relocations: the
 * loader patches each into a constant the verifier sees). */
#define OFF(type, field) ((__u32)bpf_core_field_offset(type, field))

/* Copy `size` bytes at `src + at`, where `at` and `size` come from OFF(),
 * out of a block read from the kernel. */
#define FROM_BLOCK(dst, blk, at, size) __builtin_memcpy((dst), (blk) + (at), (size))

/* What the capture needs from a socket, read with as few helper calls as
 * the kernel's layout allows: each bpf_probe_read_kernel costs tens of ns
 * and this runs on every socket call, so neighbouring fields are read as
 * one block (a fallback reads them one by one on layouts where they are
 * far apart). Everything reachable from the current task is loaded
 * directly through its BTF pointer, with no helper at all. */

/* The struct sock behind fd, or NULL when fd is not a socket. Also gives
 * the socket's type (struct socket's copy of sk_type). */
static __always_inline struct sock *sock_of_fd(int fd, __u16 *sock_type) {
    struct task_struct *task = bpf_get_current_task_btf();
    struct fdtable *fdt = task->files->fdt;
    if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
        return 0;
    struct file **fds = fdt->fd;
    struct file *f = 0;
    bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
    if (!f)
        return 0;

    /* file: private_data and f_inode, next to each other. */
    __u8 blk[32];
    __u32 pd = OFF(struct file, private_data), ino = OFF(struct file, f_inode);
    __u32 lo = pd < ino ? pd : ino;
    __u32 span = (pd < ino ? ino : pd) + 8 - lo;
    struct inode *inode = 0;
    struct socket *s = 0;
    if (span <= sizeof(blk)) {
        if (bpf_probe_read_kernel(blk, span, (void *)f + lo) != 0)
            return 0;
        FROM_BLOCK(&inode, blk, ino - lo, 8);
        FROM_BLOCK(&s, blk, pd - lo, 8);
    } else {
        inode = BPF_CORE_READ(f, f_inode);
        s = BPF_CORE_READ(f, private_data);
    }
    unsigned short mode = BPF_CORE_READ(inode, i_mode);
    if ((mode & S_IFMT) != S_IFSOCK || !s)
        return 0;

    /* socket: type and sk. */
    __u32 ty = OFF(struct socket, type), skp = OFF(struct socket, sk);
    struct sock *sk = 0;
    short type = 0;
    if (ty < skp && skp + 8 - ty <= sizeof(blk)) {
        if (bpf_probe_read_kernel(blk, skp + 8 - ty, (void *)s + ty) != 0)
            return 0;
        FROM_BLOCK(&type, blk, 0, 2);
        FROM_BLOCK(&sk, blk, skp - ty, 8);
    } else {
        type = BPF_CORE_READ(s, type);
        sk = BPF_CORE_READ(s, sk);
    }
    *sock_type = type;
    return sk;
}

/* Family and addresses of a socket: every field lies in sock_common's
 * first ~90 bytes on the kernels we know, read as one block. */
static __always_inline void describe(struct sock *sk, __u16 sock_type, struct call *c) {
    c->sock = (__u64)sk;
    c->sock_type = sock_type;
    __u32 fam = OFF(struct sock_common, skc_family), daddr = OFF(struct sock_common, skc_daddr),
          saddr = OFF(struct sock_common, skc_rcv_saddr), dport = OFF(struct sock_common, skc_dport),
          num = OFF(struct sock_common, skc_num), d6 = OFF(struct sock_common, skc_v6_daddr),
          s6 = OFF(struct sock_common, skc_v6_rcv_saddr);
    __u8 blk[96];
    /* One block from the start of sock_common (the fields are at fixed
     * offsets from it) when the last field ends within the buffer. */
    if (fam + 2 <= sizeof(blk) && daddr + 4 <= sizeof(blk) && saddr + 4 <= sizeof(blk) &&
        dport + 2 <= sizeof(blk) && num + 2 <= sizeof(blk) && d6 + 16 <= sizeof(blk) &&
        s6 + 16 <= sizeof(blk)) {
        __u32 span = fam + 2;
        span = span < d6 + 16 ? d6 + 16 : span;
        span = span < s6 + 16 ? s6 + 16 : span;
        span = span < daddr + 4 ? daddr + 4 : span;
        span = span < saddr + 4 ? saddr + 4 : span;
        span = span < dport + 2 ? dport + 2 : span;
        span = span < num + 2 ? num + 2 : span;
        if (bpf_probe_read_kernel(blk, span, (void *)sk + OFF(struct sock, __sk_common)) != 0)
            return;
        __u16 port = 0;
        FROM_BLOCK(&c->family, blk, fam, 2);
        if (c->family == AF_INET) {
            FROM_BLOCK(c->laddr, blk, saddr, 4);
            FROM_BLOCK(c->raddr, blk, daddr, 4);
        } else if (c->family == AF_INET6) {
            FROM_BLOCK(c->laddr, blk, s6, 16);
            FROM_BLOCK(c->raddr, blk, d6, 16);
        }
        if (c->family == AF_INET || c->family == AF_INET6) {
            FROM_BLOCK(&c->lport, blk, num, 2);
            FROM_BLOCK(&port, blk, dport, 2);
            c->rport = __builtin_bswap16(port);
        }
        return;
    }
    c->family = BPF_CORE_READ(sk, __sk_common.skc_family);
    if (c->family == AF_INET) {
        __u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
        __u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
        __builtin_memcpy(c->laddr, &l, 4);
        __builtin_memcpy(c->raddr, &r, 4);
    } else if (c->family == AF_INET6) {
        BPF_CORE_READ_INTO(&c->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
        BPF_CORE_READ_INTO(&c->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
    }
    if (c->family == AF_INET || c->family == AF_INET6) {
        c->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
        c->rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
    }
}

static __always_inline bool is_loopback(const struct call *c) {
    if (c->family == AF_INET)
        return c->raddr[0] == 127;
    if (c->family == AF_INET6) {
        __u64 hi, lo;
        __builtin_memcpy(&hi, c->raddr, 8);
        __builtin_memcpy(&lo, c->raddr + 8, 8);
        if (hi == 0 && lo == 0x0100000000000000ULL) /* ::1 */
            return true;
        /* ::ffff:127.x.x.x */
        return hi == 0 && c->raddr[10] == 0xff && c->raddr[11] == 0xff && c->raddr[12] == 127;
    }
    return false;
}

/* Drop rules and per-connection sampling: false drops the call. */
static __always_inline bool sock_wanted(const struct call *c) {
    if (c->family == AF_UNIX && drop_unix)
        return false;
    if (c->family != AF_UNIX && c->family != AF_INET && c->family != AF_INET6 && drop_unknown)
        return false;
    if (drop_loopback && c->rport != 0 && is_loopback(c))
        return false;
    if (sampling < 100) {
        /* Decided per socket, so a sampled connection is seen whole. */
        __u64 h = (c->sock >> 6) * 0x9E3779B97F4A7C15ULL;
        if ((h >> 32) % 100 >= sampling)
            return false;
    }
    return true;
}

/* Entry of a call on fd: remember it if it passes the filters. */
static __always_inline int enter(int fd, __u16 syscall, __u64 buf, __u64 addr, __u64 cnt) {
    __u16 type = 0;
    struct sock *sk = sock_of_fd(fd, &type);
    if (!sk)
        return 0;
    struct call c = {};
    describe(sk, type, &c);
    if (syscall != WL_SYS_CONNECT && !sock_wanted(&c)) {
        count(WL_CNT_FILTERED);
        return 0;
    }
    c.ts = bpf_ktime_get_ns();
    c.fd = fd;
    c.syscall = syscall;
    c.buf = buf;
    c.addr = addr;
    c.count = cnt;
    struct call *slot = bpf_task_storage_get(&active, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (slot)
        *slot = c;
    return 0;
}

/* The event header for call c, written in place (scratch or ring). */
static __always_inline void fill_header(struct wl_event *e, const struct call *c, __u16 kind, long ret) {
    __u64 id = bpf_get_current_pid_tgid();
    e->ts_enter = c->ts;
    e->ts_exit = bpf_ktime_get_ns();
    e->sock = c->sock;
    e->ret = ret;
    e->real_len = ret > 0 ? ret : 0;
    e->pid = id >> 32;
    e->tid = (__u32)id;
    e->fd = c->fd;
    e->captured = 0;
    e->kind = kind;
    e->syscall = c->syscall;
    e->family = c->family;
    e->sock_type = c->sock_type;
    e->lport = c->lport;
    e->rport = c->rport;
    e->direction = WL_EGRESS;
    __builtin_memset(e->pad, 0, sizeof(e->pad));
    __builtin_memcpy(e->laddr, c->laddr, 16);
    __builtin_memcpy(e->raddr, c->raddr, 16);
    /* The process's name (its main thread's), not this thread's; the
     * kernel keeps it NUL-padded, so 16 bytes is the whole string. */
    struct task_struct *task = bpf_get_current_task_btf();
    __builtin_memcpy(e->comm, task->group_leader->comm, sizeof(e->comm));
}

static __always_inline struct scratch *start_event(const struct call *c, __u16 kind, long ret) {
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
    if (s)
        fill_header(&s->ev, c, kind, ret);
    return s;
}

/* Wake the reader only when this record of `size` bytes takes what is
 * pending past wakeup_bytes: the reader drains every few milliseconds
 * anyway. Not on every record while above the mark: each wake-up is an
 * interrupt (a VM exit under virtualisation), and a reader busy with a
 * burst would otherwise get one per record until it catches up. */
static __always_inline __u64 wakeup_flag(__u64 size) {
    __u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
    return pending < wakeup_bytes && pending + size >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void submit(struct scratch *s) {
    __u64 size = s->ev.captured;
    if (size > WL_MAX_PAYLOAD)
        size = WL_MAX_PAYLOAD;
    /* Keep the compiler from folding the bound away: the verifier needs it
     * on the very register passed to the helper. */
    barrier_var(size);
    size &= (2 * WL_MAX_PAYLOAD - 1);
    size += sizeof(struct wl_event);
    if (bpf_ringbuf_output(&events, s, size, wakeup_flag(size)) == 0)
        count(WL_CNT_EVENTS);
    else
        count(WL_CNT_LOST);
}

static __always_inline __u32 cap_len(__u64 n) {
    __u32 max = payload_max;
    if (max > WL_MAX_PAYLOAD)
        max = WL_MAX_PAYLOAD;
    return n > max ? max : (__u32)n;
}

/* Copy from one user buffer at payload offset off. */
static __always_inline __u32 copy_flat(struct scratch *s, __u32 off, __u64 src, __u64 len) {
    __u32 room = cap_len(off + len);
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

/* Copy up to `total` bytes from an iovec array. */
static __always_inline __u32 copy_iov(struct scratch *s, __u64 iovs, __u64 cnt, __u64 total) {
    __u32 off = 0;
    for (int i = 0; i < MAX_IOV; i++) {
        if (i >= cnt || off >= total)
            break;
        struct iovec iov = {};
        if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iovs + i * sizeof(struct iovec))) != 0)
            break;
        __u64 len = iov.iov_len;
        if (len > total - off)
            len = total - off;
        __u32 got = copy_flat(s, off, (__u64)iov.iov_base, len);
        if (got == 0)
            break;
        off += got;
    }
    return off;
}

/* A peer address given with the call (unconnected datagram sockets). */
static __always_inline void peer_from_sockaddr(struct wl_event *e, __u64 addr) {
    if (!addr || e->rport != 0)
        return;
    unsigned short family = 0;
    bpf_probe_read_user(&family, sizeof(family), (void *)addr);
    if (family == AF_INET) {
        struct sockaddr_in sa = {};
        bpf_probe_read_user(&sa, sizeof(sa), (void *)addr);
        __builtin_memcpy(e->raddr, &sa.sin_addr, 4);
        e->rport = __builtin_bswap16(sa.sin_port);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 sa = {};
        bpf_probe_read_user(&sa, sizeof(sa), (void *)addr);
        __builtin_memcpy(e->raddr, &sa.sin6_addr, 16);
        e->rport = __builtin_bswap16(sa.sin6_port);
    }
}

/* The call is over: free the thread's slot. */
static __always_inline void end_call(struct call *c) {
    c->ts = 0;
}

/* Send a data event whose payload holds `n` of the call's `len` bytes; the
 * peer comes from `sockaddr` when the socket has none (datagrams). */
static __always_inline void finish_data(struct scratch *s, __u32 n, long len, __u64 sockaddr) {
    s->ev.captured = n;
    if (n < len && s->ev.syscall != WL_SYS_SENDFILE)
        count(WL_CNT_TRUNCATED);
    peer_from_sockaddr(&s->ev, sockaddr);
    submit(s);
}

/* A data event of one flat buffer (read/write/sendto/recvfrom): written
 * straight into the ring buffer, with no copy through the scratch buffer.
 * A reservation's size must be a constant, so the record is the smallest
 * of a few size classes that holds the payload (waste under 2x). */
#define RESERVE_CLASS(room)                                                                    \
    if (n <= (room)) {                                                                         \
        __u64 wake = wakeup_flag(sizeof(struct wl_event) + (room));                            \
        struct wl_event *e = bpf_ringbuf_reserve(&events, sizeof(struct wl_event) + (room), 0); \
        if (!e) {                                                                              \
            count(WL_CNT_LOST);                                                                \
            return;                                                                            \
        }                                                                                      \
        fill_header(e, c, WL_EV_DATA, ret);                                                    \
        e->direction = direction;                                                              \
        /* Bound the length again where the verifier sees it (clang would                     \
         * otherwise reuse the register checked against cap_len's bound only). */              \
        __u64 len = n;                                                                         \
        barrier_var(len);                                                                      \
        if (len > (room))                                                                      \
            len = (room);                                                                      \
        if (bpf_probe_read_user(e + 1, len, (void *)c->buf) == 0)                              \
            e->captured = len;                                                                 \
        if (e->captured < ret)                                                                 \
            count(WL_CNT_TRUNCATED);                                                           \
        peer_from_sockaddr(e, c->addr);                                                        \
        bpf_ringbuf_submit(e, wake);                                                           \
        count(WL_CNT_EVENTS);                                                                  \
        return;                                                                                \
    }

static __always_inline void flat_data_event(struct call *c, long ret, __u8 direction) {
    __u32 n = cap_len(ret);
    RESERVE_CLASS(128)
    RESERVE_CLASS(512)
    RESERVE_CLASS(2048)
    RESERVE_CLASS(4096)
    RESERVE_CLASS(WL_MAX_PAYLOAD)
}

/* Exit of a data call whose payload is one buffer or an iovec array. */
static __always_inline int exit_data(struct call *c, long ret, __u8 direction, bool iov) {
    if (ret > 0 && !iov) {
        flat_data_event(c, ret, direction);
    } else if (ret > 0) {
        struct scratch *s = start_event(c, WL_EV_DATA, ret);
        if (s) {
            s->ev.direction = direction;
            finish_data(s, copy_iov(s, c->buf, c->count, ret), ret, c->addr);
        }
    }
    end_call(c);
    return 0;
}

/* Exit of sendmsg/recvmsg: the msghdr holds the iovecs and the peer. */
static __always_inline int exit_msg(struct call *c, long ret, __u8 direction) {
    if (ret > 0) {
        struct user_msghdr msg = {};
        struct scratch *s = start_event(c, WL_EV_DATA, ret);
        if (s && bpf_probe_read_user(&msg, sizeof(msg), (void *)c->buf) == 0) {
            s->ev.direction = direction;
            finish_data(s, copy_iov(s, (__u64)msg.msg_iov, msg.msg_iovlen, ret), ret, (__u64)msg.msg_name);
        }
    }
    end_call(c);
    return 0;
}

/* Exit of sendmmsg/recvmmsg: one event per message (the first MAX_MMSG). */
static __always_inline int exit_mmsg(struct call *c, long ret, __u8 direction) {
    for (int i = 0; i < MAX_MMSG; i++) {
        if (i >= ret)
            break;
        struct mmsghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (void *)(c->buf + i * sizeof(struct mmsghdr))) != 0)
            break;
        struct scratch *s = start_event(c, WL_EV_DATA, m.msg_len);
        if (!s)
            break;
        s->ev.direction = direction;
        finish_data(s, copy_iov(s, (__u64)m.msg_hdr.msg_iov, m.msg_hdr.msg_iovlen, m.msg_len), m.msg_len,
                    (__u64)m.msg_hdr.msg_name);
    }
    end_call(c);
    return 0;
}

/* x86_64 syscall numbers. */
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_accept4 288
#define NR_recvmmsg 299
#define NR_sendmmsg 307

static __always_inline int exit_sendfile(struct call *c, long ret) {
    if (ret > 0) {
        struct scratch *s = start_event(c, WL_EV_DATA, ret);
        if (s)
            submit(s);
    }
    end_call(c);
    return 0;
}

/* Report a connection event (connect, accept), or count it as filtered. */
static __always_inline void report_conn(struct call *c, __u16 kind, long ret) {
    if (!sock_wanted(c)) {
        count(WL_CNT_FILTERED);
        return;
    }
    struct scratch *s = start_event(c, kind, ret);
    if (s)
        submit(s);
}

static __always_inline int exit_connect(struct call *c, long ret) {
    if (ret == 0 || ret == -EINPROGRESS) {
        /* The peer is known only now. */
        struct sock *sk = (struct sock *)c->sock;
        describe(sk, c->sock_type, c);
        report_conn(c, WL_EV_CONNECT, ret);
    }
    end_call(c);
    return 0;
}

static __always_inline int enter_accept_common(__u16 syscall) {
    struct call *slot = bpf_task_storage_get(&active, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (slot) {
        __builtin_memset(slot, 0, sizeof(*slot));
        slot->syscall = syscall;
        slot->ts = bpf_ktime_get_ns();
    }
    return 0;
}

static __always_inline int exit_accept_common(struct call *c, long ret) {
    if (ret >= 0) {
        __u16 type = 0;
        struct sock *sk = sock_of_fd(ret, &type);
        if (sk) {
            describe(sk, type, c);
            c->fd = ret;
            report_conn(c, WL_EV_ACCEPT, ret);
        }
    }
    end_call(c);
    return 0;
}

/* close of a socket: reported at entry (the fd is gone at exit). */
static __always_inline int enter_close(int fd) {
    __u16 type = 0;
    struct sock *sk = sock_of_fd(fd, &type);
    if (!sk)
        return 0;
    struct call c = {};
    describe(sk, type, &c);
    if (!sock_wanted(&c))
        return 0;
    c.ts = bpf_ktime_get_ns();
    c.fd = fd;
    c.syscall = WL_SYS_CLOSE;
    struct scratch *s = start_event(&c, WL_EV_CLOSE, 0);
    if (s)
        submit(s);
    return 0;
}

/* One raw tracepoint each on syscall entry and exit (cheaper per hit than
 * a classic tracepoint per syscall): a switch on the syscall number sends
 * the network calls on and returns at once for every other syscall. */
SEC("raw_tracepoint/sys_enter")
int sys_enter(struct bpf_raw_tracepoint_args *ctx) {
    long nr = ctx->args[1];
    switch (nr) {
    case NR_read: case NR_write: case NR_readv: case NR_writev: case NR_sendto: case NR_recvfrom:
    case NR_sendmsg: case NR_recvmsg: case NR_sendmmsg: case NR_recvmmsg: case NR_sendfile:
    case NR_connect: case NR_accept: case NR_accept4: case NR_close:
        break;
    default:
        return 0;
    }
    /* The pid filters come before anything is read. */
    if (!pid_wanted(bpf_get_current_pid_tgid() >> 32))
        return 0;
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    /* The first three arguments (di, si, dx) in one read when adjacent. */
    __u32 o_di = OFF(struct pt_regs, di), o_si = OFF(struct pt_regs, si), o_dx = OFF(struct pt_regs, dx);
    __u64 args[3] = {};
    if (o_dx + 8 == o_si && o_si + 8 == o_di) {
        bpf_probe_read_kernel(args, sizeof(args), (void *)regs + o_dx);
    } else {
        args[0] = BPF_CORE_READ(regs, dx);
        args[1] = BPF_CORE_READ(regs, si);
        args[2] = BPF_CORE_READ(regs, di);
    }
    int fd = args[2];
    /* Map the call to its arguments here and run one copy of enter(): a
     * call per syscall would inline enter() fifteen times, and that much
     * code falls out of the instruction cache between a write and a read. */
    __u16 sys;
    __u64 buf = args[1], addr = 0, cnt = 0;
    switch (nr) {
    case NR_read:
        sys = WL_SYS_READ;
        break;
    case NR_write:
        sys = WL_SYS_WRITE;
        break;
    case NR_readv:
        sys = WL_SYS_READV;
        cnt = args[0];
        break;
    case NR_writev:
        sys = WL_SYS_WRITEV;
        cnt = args[0];
        break;
    case NR_sendto:
        sys = WL_SYS_SENDTO;
        addr = BPF_CORE_READ(regs, r8);
        break;
    case NR_recvfrom:
        sys = WL_SYS_RECVFROM;
        addr = BPF_CORE_READ(regs, r8);
        break;
    case NR_sendmsg:
        sys = WL_SYS_SENDMSG;
        break;
    case NR_recvmsg:
        sys = WL_SYS_RECVMSG;
        break;
    case NR_sendmmsg:
        sys = WL_SYS_SENDMMSG;
        cnt = args[0];
        break;
    case NR_recvmmsg:
        sys = WL_SYS_RECVMMSG;
        cnt = args[0];
        break;
    case NR_sendfile:
        sys = WL_SYS_SENDFILE;
        buf = 0;
        break;
    case NR_connect:
        sys = WL_SYS_CONNECT;
        buf = 0;
        break;
    case NR_accept:
        return enter_accept_common(WL_SYS_ACCEPT);
    case NR_accept4:
        return enter_accept_common(WL_SYS_ACCEPT4);
    case NR_close:
        return enter_close(fd);
    default:
        return 0;
    }
    return enter(fd, sys, buf, addr, cnt);
}

SEC("raw_tracepoint/sys_exit")
int sys_exit(struct bpf_raw_tracepoint_args *ctx) {
    /* Only threads with a call in flight go further: the entry decided. */
    struct call *c = bpf_task_storage_get(&active, bpf_get_current_task_btf(), 0, 0);
    if (!c || !c->ts)
        return 0;
    long ret = ctx->args[1];
    __u16 sys = c->syscall;
    /* One copy of each exit path (see sys_enter for why). */
    __u8 dir = sys == WL_SYS_READ || sys == WL_SYS_RECVFROM || sys == WL_SYS_READV || sys == WL_SYS_RECVMSG ||
                       sys == WL_SYS_RECVMMSG
                   ? WL_INGRESS
                   : WL_EGRESS;
    switch (sys) {
    case WL_SYS_READ:
    case WL_SYS_RECVFROM:
    case WL_SYS_WRITE:
    case WL_SYS_SENDTO:
    case WL_SYS_READV:
    case WL_SYS_WRITEV:
        return exit_data(c, ret, dir, sys == WL_SYS_READV || sys == WL_SYS_WRITEV);
    case WL_SYS_SENDMSG:
    case WL_SYS_RECVMSG:
        return exit_msg(c, ret, dir);
    case WL_SYS_SENDMMSG:
    case WL_SYS_RECVMMSG:
        return exit_mmsg(c, ret, dir);
    case WL_SYS_SENDFILE:
        return exit_sendfile(c, ret);
    case WL_SYS_CONNECT:
        return exit_connect(c, ret);
    case WL_SYS_ACCEPT:
    case WL_SYS_ACCEPT4:
        return exit_accept_common(c, ret);
    }
    end_call(c);
    return 0;
}
