/* The event layout shared by the kernel programs and the daemon. The Rust
 * mirror is host/src/capture/event.rs; its test reads the _Static_assert
 * lines below and checks every size and offset against the Rust struct. */
#ifndef WIRELENS_H
#define WIRELENS_H

/* Most payload bytes one event can carry (the configured size is capped
 * to it). */
#define WL_MAX_PAYLOAD 8192

/* event.kind */
#define WL_EV_DATA 1    /* bytes moved: read/write/send/recv families, sendfile */
#define WL_EV_CONNECT 2 /* connect returned (0 or -EINPROGRESS): client side */
#define WL_EV_ACCEPT 3  /* accept returned a new socket: server side */
#define WL_EV_CLOSE 4   /* close of a socket fd */

/* event.direction */
#define WL_EGRESS 0
#define WL_INGRESS 1

/* event.syscall */
#define WL_SYS_READ 1
#define WL_SYS_WRITE 2
#define WL_SYS_READV 3
#define WL_SYS_WRITEV 4
#define WL_SYS_SENDTO 5
#define WL_SYS_RECVFROM 6
#define WL_SYS_SENDMSG 7
#define WL_SYS_RECVMSG 8
#define WL_SYS_SENDMMSG 9
#define WL_SYS_RECVMMSG 10
#define WL_SYS_SENDFILE 11
#define WL_SYS_CONNECT 12
#define WL_SYS_ACCEPT 13
#define WL_SYS_ACCEPT4 14
#define WL_SYS_CLOSE 15

/* counters[] indexes (per-CPU array "counters") */
#define WL_CNT_EVENTS 0      /* events written to the ring buffer */
#define WL_CNT_LOST 1        /* events the ring buffer had no room for */
#define WL_CNT_FILTERED 2    /* socket calls skipped by pid, sampling or drop rules */
#define WL_CNT_TRUNCATED 3   /* events whose payload was cut to the capture size */
#define WL_CNT_DENIED 4      /* calls of processes the filters excluded (deny_pids) */
#define WL_CNT_SLOTS 5

struct wl_event {
    __u64 ts_enter;  /* ns, CLOCK_MONOTONIC (bpf_ktime_get_ns) */
    __u64 ts_exit;
    __u64 sock;      /* kernel address of the struct sock: the socket's identity */
    __s64 ret;       /* syscall return value */
    __u64 real_len;  /* bytes the call moved (data events) */
    __u32 pid;       /* process (tgid) */
    __u32 tid;
    __s32 fd;
    __u32 captured;  /* payload bytes following this header */
    __u16 kind;
    __u16 syscall;
    __u16 family;    /* AF_INET, AF_INET6, AF_UNIX, ... */
    __u16 sock_type; /* SOCK_STREAM, SOCK_DGRAM, ... */
    __u16 lport;     /* host order */
    __u16 rport;
    __u8 direction;
    __u8 pad[3];
    __u8 laddr[16];  /* IPv4 in the first 4 bytes */
    __u8 raddr[16];
    char comm[16];   /* the process's name (main thread) */
};

_Static_assert(sizeof(struct wl_event) == 120, "size");
_Static_assert(__builtin_offsetof(struct wl_event, ts_enter) == 0, "ts_enter");
_Static_assert(__builtin_offsetof(struct wl_event, ts_exit) == 8, "ts_exit");
_Static_assert(__builtin_offsetof(struct wl_event, sock) == 16, "sock");
_Static_assert(__builtin_offsetof(struct wl_event, ret) == 24, "ret");
_Static_assert(__builtin_offsetof(struct wl_event, real_len) == 32, "real_len");
_Static_assert(__builtin_offsetof(struct wl_event, pid) == 40, "pid");
_Static_assert(__builtin_offsetof(struct wl_event, tid) == 44, "tid");
_Static_assert(__builtin_offsetof(struct wl_event, fd) == 48, "fd");
_Static_assert(__builtin_offsetof(struct wl_event, captured) == 52, "captured");
_Static_assert(__builtin_offsetof(struct wl_event, kind) == 56, "kind");
_Static_assert(__builtin_offsetof(struct wl_event, syscall) == 58, "syscall");
_Static_assert(__builtin_offsetof(struct wl_event, family) == 60, "family");
_Static_assert(__builtin_offsetof(struct wl_event, sock_type) == 62, "sock_type");
_Static_assert(__builtin_offsetof(struct wl_event, lport) == 64, "lport");
_Static_assert(__builtin_offsetof(struct wl_event, rport) == 66, "rport");
_Static_assert(__builtin_offsetof(struct wl_event, direction) == 68, "direction");
_Static_assert(__builtin_offsetof(struct wl_event, laddr) == 72, "laddr");
_Static_assert(__builtin_offsetof(struct wl_event, raddr) == 88, "raddr");
_Static_assert(__builtin_offsetof(struct wl_event, comm) == 104, "comm");

#endif
