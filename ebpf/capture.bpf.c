// SPDX-License-Identifier: GPL-2.0
/* wirelens capture: syscall tracepoints on the network calls. Each call on a
 * socket is remembered at entry (after the cheap filters: own pid, EBPF.Pid,
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

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u8);
} allow_pids SEC(".maps");

/* Processes the daemon's filters exclude (filled from userspace). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u8);
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

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
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

static __always_inline bool pid_wanted(__u32 pid) {
    if (pid == self_pid)
        return false;
    if (filter_pids && !bpf_map_lookup_elem(&allow_pids, &pid))
        return false;
    if (bpf_map_lookup_elem(&deny_pids, &pid))
        return false;
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
    __u64 id = bpf_get_current_pid_tgid();
    if (!pid_wanted(id >> 32))
        return 0;
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
    bpf_map_update_elem(&active, &id, &c, BPF_ANY);
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
    bpf_get_current_comm(e->comm, sizeof(e->comm));
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

static __always_inline struct call *take_call(__u64 id) {
    return bpf_map_lookup_elem(&active, &id);
}

/* Exit of a data call whose payload is one buffer or an iovec array. */
static __always_inline int exit_data(long ret, __u8 direction, bool iov) {
    __u64 id = bpf_get_current_pid_tgid();
    struct call *c = take_call(id);
    if (!c)
        return 0;
    if (ret > 0) {
        struct scratch *s = start_event(c, WL_EV_DATA, ret);
        if (s) {
            s->ev.direction = direction;
            __u32 n = iov ? copy_iov(s, c->buf, c->count, ret) : copy_flat(s, 0, c->buf, ret);
            s->ev.captured = n;
            if (n < ret && c->syscall != WL_SYS_SENDFILE)
                count(WL_CNT_TRUNCATED);
            if (c->syscall == WL_SYS_SENDTO || c->syscall == WL_SYS_RECVFROM)
                peer_from_sockaddr(&s->ev, c->addr);
            submit(s);
        }
    }
    bpf_map_delete_elem(&active, &id);
    return 0;
}

/* Exit of sendmsg/recvmsg: the msghdr holds the iovecs and the peer. */
static __always_inline int exit_msg(long ret, __u8 direction) {
    __u64 id = bpf_get_current_pid_tgid();
    struct call *c = take_call(id);
    if (!c)
        return 0;
    if (ret > 0) {
        struct user_msghdr msg = {};
        struct scratch *s = start_event(c, WL_EV_DATA, ret);
        if (s && bpf_probe_read_user(&msg, sizeof(msg), (void *)c->buf) == 0) {
            s->ev.direction = direction;
            s->ev.captured = copy_iov(s, (__u64)msg.msg_iov, msg.msg_iovlen, ret);
            if (s->ev.captured < ret)
                count(WL_CNT_TRUNCATED);
            peer_from_sockaddr(&s->ev, (__u64)msg.msg_name);
            submit(s);
        }
    }
    bpf_map_delete_elem(&active, &id);
    return 0;
}

/* Exit of sendmmsg/recvmmsg: one event per message (the first MAX_MMSG). */
static __always_inline int exit_mmsg(long ret, __u8 direction) {
    __u64 id = bpf_get_current_pid_tgid();
    struct call *c = take_call(id);
    if (!c)
        return 0;
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
        s->ev.captured = copy_iov(s, (__u64)m.msg_hdr.msg_iov, m.msg_hdr.msg_iovlen, m.msg_len);
        peer_from_sockaddr(&s->ev, (__u64)m.msg_hdr.msg_name);
        submit(s);
    }
    bpf_map_delete_elem(&active, &id);
    return 0;
}

#define ARG(ctx, i) ((ctx)->args[i])

SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_READ, ARG(ctx, 1), 0, 0); }
SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, WL_INGRESS, false); }

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_WRITE, ARG(ctx, 1), 0, 0); }
SEC("tracepoint/syscalls/sys_exit_write")
int exit_write(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, WL_EGRESS, false); }

SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_READV, ARG(ctx, 1), 0, ARG(ctx, 2)); }
SEC("tracepoint/syscalls/sys_exit_readv")
int exit_readv(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, WL_INGRESS, true); }

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_WRITEV, ARG(ctx, 1), 0, ARG(ctx, 2)); }
SEC("tracepoint/syscalls/sys_exit_writev")
int exit_writev(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, WL_EGRESS, true); }

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_SENDTO, ARG(ctx, 1), ARG(ctx, 4), 0); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int exit_sendto(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, WL_EGRESS, false); }

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_RECVFROM, ARG(ctx, 1), ARG(ctx, 4), 0); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, WL_INGRESS, false); }

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_SENDMSG, ARG(ctx, 1), 0, 0); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int exit_sendmsg(struct trace_event_raw_sys_exit *ctx) { return exit_msg(ctx->ret, WL_EGRESS); }

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_RECVMSG, ARG(ctx, 1), 0, 0); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(struct trace_event_raw_sys_exit *ctx) { return exit_msg(ctx->ret, WL_INGRESS); }

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int enter_sendmmsg(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_SENDMMSG, ARG(ctx, 1), 0, ARG(ctx, 2)); }
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int exit_sendmmsg(struct trace_event_raw_sys_exit *ctx) { return exit_mmsg(ctx->ret, WL_EGRESS); }

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int enter_recvmmsg(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_RECVMMSG, ARG(ctx, 1), 0, ARG(ctx, 2)); }
SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int exit_recvmmsg(struct trace_event_raw_sys_exit *ctx) { return exit_mmsg(ctx->ret, WL_INGRESS); }

/* sendfile(out_fd, in_fd, offset, count): the size only. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int enter_sendfile(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_SENDFILE, 0, 0, 0); }
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int exit_sendfile(struct trace_event_raw_sys_exit *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    struct call *c = take_call(id);
    if (!c)
        return 0;
    if (ctx->ret > 0) {
        struct scratch *s = start_event(c, WL_EV_DATA, ctx->ret);
        if (s)
            submit(s);
    }
    bpf_map_delete_elem(&active, &id);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect(struct trace_event_raw_sys_enter *ctx) { return enter(ARG(ctx, 0), WL_SYS_CONNECT, 0, 0, 0); }
SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    struct call *c = take_call(id);
    if (!c)
        return 0;
    long ret = ctx->ret;
    if (ret == 0 || ret == -EINPROGRESS) {
        /* The peer is known only now. */
        struct sock *sk = (struct sock *)c->sock;
        describe(sk, c);
        if (sock_wanted(c)) {
            struct scratch *s = start_event(c, WL_EV_CONNECT, ret);
            if (s)
                submit(s);
        } else {
            count(WL_CNT_FILTERED);
        }
    }
    bpf_map_delete_elem(&active, &id);
    return 0;
}

static __always_inline int enter_accept_common(void) {
    __u64 id = bpf_get_current_pid_tgid();
    if (!pid_wanted(id >> 32))
        return 0;
    struct call c = {};
    c.ts = bpf_ktime_get_ns();
    bpf_map_update_elem(&active, &id, &c, BPF_ANY);
    return 0;
}

static __always_inline int exit_accept_common(long ret, __u16 syscall) {
    __u64 id = bpf_get_current_pid_tgid();
    struct call *c = take_call(id);
    if (!c)
        return 0;
    if (ret >= 0) {
        struct sock *sk = sock_of_fd(ret);
        if (sk) {
            describe(sk, c);
            c->fd = ret;
            c->syscall = syscall;
            if (sock_wanted(c)) {
                struct scratch *s = start_event(c, WL_EV_ACCEPT, ret);
                if (s)
                    submit(s);
            } else {
                count(WL_CNT_FILTERED);
            }
        }
    }
    bpf_map_delete_elem(&active, &id);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_accept")
int enter_accept(struct trace_event_raw_sys_enter *ctx) { return enter_accept_common(); }
SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept(struct trace_event_raw_sys_exit *ctx) { return exit_accept_common(ctx->ret, WL_SYS_ACCEPT); }
SEC("tracepoint/syscalls/sys_enter_accept4")
int enter_accept4(struct trace_event_raw_sys_enter *ctx) { return enter_accept_common(); }
SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx) { return exit_accept_common(ctx->ret, WL_SYS_ACCEPT4); }

/* close of a socket: reported at entry (the fd is gone at exit). */
SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    if (!pid_wanted(id >> 32))
        return 0;
    int fd = ARG(ctx, 0);
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
