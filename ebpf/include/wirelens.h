/* The event layout shared by the kernel programs and the daemon. The Rust
 * mirror is host/src/capture/event.rs; its test reads the _Static_assert
 * lines below and checks every size and offset against the Rust struct. */
#ifndef WIRELENS_H
#define WIRELENS_H

/* Most payload bytes one event can carry (the configured size is capped
 * to it). */
#define WL_MAX_PAYLOAD 8192
/* A call longer than one record on a socket that wants whole calls: up to
 * this many more records of WL_MAX_PAYLOAD bytes carry the rest (see
 * flat_call): 128 KiB past the first record (a Redis server writes at most
 * 64 KiB per event loop turn; hiredis reads 16 KiB at a time). */
#define WL_CONT_RECORDS 16
/* Data event flag: this record continues the previous one's call (the same
 * system call, bytes from `pos` on): one call, not another. */
#define WL_F_CONT 1
/* Data event flag: plaintext of a TLS connection, read at the TLS
 * library's SSL_write/SSL_read (uprobes), not at the socket. */
#define WL_F_TLS 2
/* conn_ctl key of a TLS connection's plaintext: the socket's cookie with
 * this bit set (cookies never reach it). */
#define WL_TLS_COOKIE (1ULL << 63)

/* event.kind */
#define WL_EV_DATA 1  /* bytes moved through a socket (one send or receive) */
#define WL_EV_CLOSE 2 /* a TCP socket that carried data closed; its payload is a wl_counts */
#define WL_EV_STATS 3 /* a socket counted in the kernel (layer 4 only): its payload is a wl_counts */

/* How the kernel treats a socket's calls (sock_info.mode, wl_ctl.mode). */
#define WL_MODE_COPY 0 /* a record per call, with up to its budget of payload */
#define WL_MODE_L4 1   /* TCP: counted in the socket's storage, no record per call (read at each
                        * flush by the iterator and at close); other sockets: records without payload */
#define WL_MODE_DROP 2 /* nothing (the daemon's drop rules) */

/* event.direction */
#define WL_EGRESS 0
#define WL_INGRESS 1

/* event.role: what the process is on the connection, where the kernel
 * saw it begin (TCP connect or accept after the capture started). */
#define WL_ROLE_UNKNOWN 0
#define WL_ROLE_CLIENT 1
#define WL_ROLE_SERVER 2

/* event.syscall: the system call that moved the bytes */
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
#define WL_SYS_SENDFILE 11 /* sendfile and splice: size only */
#define WL_SYS_OTHER 12    /* io_uring and the like: size only */
#define WL_SYS_SSL_WRITE 13 /* OpenSSL's SSL_write(_ex): plaintext (WL_F_TLS) */
#define WL_SYS_SSL_READ 14  /* OpenSSL's SSL_read(_ex): plaintext (WL_F_TLS) */

/* counters[] indexes (per-CPU array "counters") */
#define WL_CNT_EVENTS 0      /* events written to the ring buffer */
#define WL_CNT_LOST 1        /* events the ring buffer had no room for */
#define WL_CNT_FILTERED 2    /* socket calls skipped by pid, sampling, drop rules or kernel threads */
#define WL_CNT_TRUNCATED 3   /* events whose payload was cut to the capture size */
#define WL_CNT_DENIED 4      /* calls of processes the filters excluded (deny_pids) */
#define WL_CNT_COUNTED 5     /* calls counted in socket storage without a record (layer 4 only) */
#define WL_CNT_SKIPPED 6     /* calls whose payload was not copied: all of it in a body a plugin skips */
#define WL_CNT_TLS 7         /* SSL_write/SSL_read calls that moved plaintext (recorded or not) */
#define WL_CNT_TLS_NO_SOCKET 8 /* of those, calls whose socket is unknown (no socket call seen under the SSL object) */
#define WL_CNT_SLOTS 9

struct wl_event {
    __u64 ts;        /* ns, CLOCK_MONOTONIC (bpf_ktime_get_ns): when the bytes moved */
    __u64 sock;      /* the socket's cookie: its identity, never reused */
    __u64 start_ns;  /* when the process (its main thread) started, ns, CLOCK_MONOTONIC:
                      * with pid, the process's identity (a reused pid has another) */
    __u64 real_len;  /* bytes of this message (data events) */
    __u64 pos;       /* where the call's bytes start in the socket's stream in this direction
                      * (bytes moved before it since the kernel first saw the socket) */
    __u32 pid;       /* process (tgid); close and stats events: the socket's last user */
    __u32 captured;  /* payload bytes following this header */
    __u16 kind;
    __u16 syscall;
    __u16 family;    /* AF_INET, AF_INET6, AF_UNIX, ... */
    __u16 sock_type; /* SOCK_STREAM, SOCK_DGRAM, ... */
    __u16 lport;     /* host order */
    __u16 rport;
    __u8 direction;
    __u8 role;
    __u8 flags;      /* WL_F_*: continuation records of one call, TLS plaintext */
    __u8 pad;
    __u8 laddr[16];  /* IPv4 in the first 4 bytes */
    __u8 raddr[16];
    char comm[16];   /* the process's name (main thread) */
};

_Static_assert(sizeof(struct wl_event) == 112, "size");
_Static_assert(__builtin_offsetof(struct wl_event, ts) == 0, "ts");
_Static_assert(__builtin_offsetof(struct wl_event, sock) == 8, "sock");
_Static_assert(__builtin_offsetof(struct wl_event, start_ns) == 16, "start_ns");
_Static_assert(__builtin_offsetof(struct wl_event, real_len) == 24, "real_len");
_Static_assert(__builtin_offsetof(struct wl_event, pos) == 32, "pos");
_Static_assert(__builtin_offsetof(struct wl_event, pid) == 40, "pid");
_Static_assert(__builtin_offsetof(struct wl_event, captured) == 44, "captured");
_Static_assert(__builtin_offsetof(struct wl_event, kind) == 48, "kind");
_Static_assert(__builtin_offsetof(struct wl_event, syscall) == 50, "syscall");
_Static_assert(__builtin_offsetof(struct wl_event, family) == 52, "family");
_Static_assert(__builtin_offsetof(struct wl_event, sock_type) == 54, "sock_type");
_Static_assert(__builtin_offsetof(struct wl_event, lport) == 56, "lport");
_Static_assert(__builtin_offsetof(struct wl_event, rport) == 58, "rport");
_Static_assert(__builtin_offsetof(struct wl_event, direction) == 60, "direction");
_Static_assert(__builtin_offsetof(struct wl_event, role) == 61, "role");
_Static_assert(__builtin_offsetof(struct wl_event, flags) == 62, "flags");
_Static_assert(__builtin_offsetof(struct wl_event, laddr) == 64, "laddr");
_Static_assert(__builtin_offsetof(struct wl_event, raddr) == 80, "raddr");
_Static_assert(__builtin_offsetof(struct wl_event, comm) == 96, "comm");

/* What a socket moved while counted in the kernel (WL_MODE_L4), per
 * direction (index WL_EGRESS, WL_INGRESS): the payload of close and stats
 * events. */
struct wl_counts {
    __u64 bytes[2];
    __u64 calls[2];
};

_Static_assert(sizeof(struct wl_counts) == 32, "counts size");

/* What the daemon asks of one socket (map "conn_ctl", keyed by its cookie;
 * the kernel applies it at the socket's next call once "ctl_gen" moved,
 * and removes it). */
struct wl_ctl {
    __u8 mode;           /* WL_MODE_* */
    __u8 pad[3];
    __u32 budget[2];     /* payload bytes copied per call, per direction (0: the capture size) */
    __u64 skip_until[2]; /* per direction: bytes before this stream position are not copied
                          * (bodies a plugin skips); a call wholly before it gets a record without payload */
};

_Static_assert(sizeof(struct wl_ctl) == 32, "ctl size");
_Static_assert(__builtin_offsetof(struct wl_ctl, budget) == 4, "ctl budget");
_Static_assert(__builtin_offsetof(struct wl_ctl, skip_until) == 16, "ctl skip_until");

/* Process identity, recorded as processes are born (exec, fork), in the
 * map "procs" keyed by pid (tgid): the command line from the kernel, so a
 * process that exits within milliseconds is still described. */
#define WL_ARGV_MAX 256

struct wl_proc {
    __u64 start_ns;  /* as wl_event.start_ns */
    __u64 exited_ns; /* 0 while it runs; when it exited (the daemon drops the entry later) */
    __u32 argv_len;  /* bytes of argv below (NUL-separated arguments) */
    __u32 argv_full; /* the whole argument area's length (more than argv_len: cut) */
    __u8 argv[WL_ARGV_MAX];
};

_Static_assert(sizeof(struct wl_proc) == 280, "proc size");
_Static_assert(__builtin_offsetof(struct wl_proc, start_ns) == 0, "proc start_ns");
_Static_assert(__builtin_offsetof(struct wl_proc, exited_ns) == 8, "proc exited_ns");
_Static_assert(__builtin_offsetof(struct wl_proc, argv_len) == 16, "proc argv_len");
_Static_assert(__builtin_offsetof(struct wl_proc, argv_full) == 20, "proc argv_full");
_Static_assert(__builtin_offsetof(struct wl_proc, argv) == 24, "proc argv");

#endif
