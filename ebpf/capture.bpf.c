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

/* The struct sock behind fd, or NULL when fd is not a socket. */
static __always_inline struct sock *sock_of_fd(int fd) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
    if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
        return 0;
    struct file **fds = BPF_CORE_READ(fdt, fd);
    struct file *f = 0;
    bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
    if (!f)
        return 0;
    unsigned short mode = BPF_CORE_READ(f, f_inode, i_mode);
    if ((mode & S_IFMT) != S_IFSOCK)
        return 0;
    struct socket *s = BPF_CORE_READ(f, private_data);
    return BPF_CORE_READ(s, sk);
}

/* Family, type and addresses of a socket. */
static __always_inline void describe(struct sock *sk, struct call *c) {
    c->sock = (__u64)sk;
    c->family = BPF_CORE_READ(sk, __sk_common.skc_family);
    c->sock_type = BPF_CORE_READ(sk, sk_type);
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
    struct sock *sk = sock_of_fd(fd);
    if (!sk)
        return 0;
    struct call c = {};
    describe(sk, &c);
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

static __always_inline struct scratch *start_event(const struct call *c, __u16 kind, long ret) {
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
    if (!s)
        return 0;
    __u64 id = bpf_get_current_pid_tgid();
    struct wl_event *e = &s->ev;
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
    __builtin_memcpy(e->laddr, c->laddr, 16);
    __builtin_memcpy(e->raddr, c->raddr, 16);
    /* The process's name (its main thread's), not this thread's. */
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    BPF_CORE_READ_STR_INTO(&e->comm, task, group_leader, comm);
    return s;
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
    __u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
    __u64 flags = pending >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
    if (bpf_ringbuf_output(&events, s, size, flags) == 0)
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

/* Exit of a data call whose payload is one buffer or an iovec array. */
static __always_inline int exit_data(struct call *c, long ret, __u8 direction, bool iov) {
    if (ret > 0) {
        struct scratch *s = start_event(c, WL_EV_DATA, ret);
        if (s) {
            s->ev.direction = direction;
            __u32 n = iov ? copy_iov(s, c->buf, c->count, ret) : copy_flat(s, 0, c->buf, ret);
            finish_data(s, n, ret, c->addr);
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
        describe(sk, c);
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
        struct sock *sk = sock_of_fd(ret);
        if (sk) {
            describe(sk, c);
            c->fd = ret;
            report_conn(c, WL_EV_ACCEPT, ret);
        }
    }
    end_call(c);
    return 0;
}

/* close of a socket: reported at entry (the fd is gone at exit). */
static __always_inline int enter_close(int fd) {
    struct sock *sk = sock_of_fd(fd);
    if (!sk)
        return 0;
    struct call c = {};
    describe(sk, &c);
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
    int fd = BPF_CORE_READ(regs, di);
    __u64 a1 = BPF_CORE_READ(regs, si);
    switch (nr) {
    case NR_read:
        return enter(fd, WL_SYS_READ, a1, 0, 0);
    case NR_write:
        return enter(fd, WL_SYS_WRITE, a1, 0, 0);
    case NR_readv:
        return enter(fd, WL_SYS_READV, a1, 0, BPF_CORE_READ(regs, dx));
    case NR_writev:
        return enter(fd, WL_SYS_WRITEV, a1, 0, BPF_CORE_READ(regs, dx));
    case NR_sendto:
        return enter(fd, WL_SYS_SENDTO, a1, BPF_CORE_READ(regs, r8), 0);
    case NR_recvfrom:
        return enter(fd, WL_SYS_RECVFROM, a1, BPF_CORE_READ(regs, r8), 0);
    case NR_sendmsg:
        return enter(fd, WL_SYS_SENDMSG, a1, 0, 0);
    case NR_recvmsg:
        return enter(fd, WL_SYS_RECVMSG, a1, 0, 0);
    case NR_sendmmsg:
        return enter(fd, WL_SYS_SENDMMSG, a1, 0, BPF_CORE_READ(regs, dx));
    case NR_recvmmsg:
        return enter(fd, WL_SYS_RECVMMSG, a1, 0, BPF_CORE_READ(regs, dx));
    case NR_sendfile:
        return enter(fd, WL_SYS_SENDFILE, 0, 0, 0);
    case NR_connect:
        return enter(fd, WL_SYS_CONNECT, 0, 0, 0);
    case NR_accept:
        return enter_accept_common(WL_SYS_ACCEPT);
    case NR_accept4:
        return enter_accept_common(WL_SYS_ACCEPT4);
    case NR_close:
        return enter_close(fd);
    }
    return 0;
}

SEC("raw_tracepoint/sys_exit")
int sys_exit(struct bpf_raw_tracepoint_args *ctx) {
    /* Only threads with a call in flight go further: the entry decided. */
    struct call *c = bpf_task_storage_get(&active, bpf_get_current_task_btf(), 0, 0);
    if (!c || !c->ts)
        return 0;
    long ret = ctx->args[1];
    switch (c->syscall) {
    case WL_SYS_READ:
    case WL_SYS_RECVFROM:
        return exit_data(c, ret, WL_INGRESS, false);
    case WL_SYS_WRITE:
    case WL_SYS_SENDTO:
        return exit_data(c, ret, WL_EGRESS, false);
    case WL_SYS_READV:
        return exit_data(c, ret, WL_INGRESS, true);
    case WL_SYS_WRITEV:
        return exit_data(c, ret, WL_EGRESS, true);
    case WL_SYS_SENDMSG:
        return exit_msg(c, ret, WL_EGRESS);
    case WL_SYS_RECVMSG:
        return exit_msg(c, ret, WL_INGRESS);
    case WL_SYS_SENDMMSG:
        return exit_mmsg(c, ret, WL_EGRESS);
    case WL_SYS_RECVMMSG:
        return exit_mmsg(c, ret, WL_INGRESS);
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
