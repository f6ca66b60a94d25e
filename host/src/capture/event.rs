//! The event layout shared with the kernel programs: a `#[repr(C)]` mirror
//! of `struct wl_event` in `ebpf/include/wirelens.h` (a test checks every
//! offset against the header), and the owned form the daemon passes on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const MAX_PAYLOAD: usize = 8192;

pub const EV_DATA: u16 = 1;
pub const EV_CLOSE: u16 = 2;
pub const EV_STATS: u16 = 3;

pub const MODE_COPY: u8 = 0;
pub const MODE_L4: u8 = 1;
pub const MODE_DROP: u8 = 2;

pub const EGRESS: u8 = 0;
pub const INGRESS: u8 = 1;

pub const ROLE_UNKNOWN: u8 = 0;
pub const ROLE_CLIENT: u8 = 1;
pub const ROLE_SERVER: u8 = 2;

/// `event.syscall` of calls whose payload is not captured (sendfile and
/// splice; io_uring and other paths that are not a system call on the
/// socket).
pub const SYS_SENDFILE: u16 = 11;
pub const SYS_OTHER: u16 = 12;
/// Plaintext read at OpenSSL's `SSL_write(_ex)` and `SSL_read(_ex)`.
pub const SYS_SSL_WRITE: u16 = 13;
pub const SYS_SSL_READ: u16 = 14;

pub const CNT_EVENTS: u32 = 0;
pub const CNT_LOST: u32 = 1;
pub const CNT_FILTERED: u32 = 2;
pub const CNT_TRUNCATED: u32 = 3;
pub const CNT_DENIED: u32 = 4;
pub const CNT_COUNTED: u32 = 5;
pub const CNT_SKIPPED: u32 = 6;
pub const CNT_TLS: u32 = 7;
pub const CNT_TLS_NO_SOCKET: u32 = 8;

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `WL_F_CONT`.
pub const F_CONT: u8 = 1;
/// `WL_F_TLS`.
pub const F_TLS: u8 = 2;

pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;

/// `struct wl_event`, exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RawEvent {
    pub ts: u64,
    pub sock: u64,
    pub start_ns: u64,
    pub real_len: u64,
    pub pos: u64,
    pub pid: u32,
    pub captured: u32,
    pub kind: u16,
    pub syscall: u16,
    pub family: u16,
    pub sock_type: u16,
    pub lport: u16,
    pub rport: u16,
    pub direction: u8,
    pub role: u8,
    pub flags: u8,
    pub pad: u8,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<RawEvent>() == 112);

/// `struct wl_counts`: what a socket moved while counted in the kernel,
/// per direction (index 0 egress, 1 ingress).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes: [u64; 2],
    pub calls: [u64; 2],
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        self.calls == [0, 0] && self.bytes == [0, 0]
    }
}

/// How the kernel treats a socket's calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// A record per call with up to the budget of payload.
    #[default]
    Copy,
    /// Layer 4 only: TCP sockets are counted in the kernel (no record per
    /// call, read at each flush and at close); others get records
    /// without payload.
    L4,
    /// Nothing (a drop rule applied by the daemon).
    Drop,
}

/// What the daemon asks of one socket in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketControl {
    pub mode: Mode,
    /// Payload bytes copied per call, [egress, ingress] (0: the capture size).
    pub budget: [u32; 2],
    /// [egress, ingress]: calls wholly before these stream positions are
    /// not copied (bodies a plugin skips).
    pub skip_until: [u64; 2],
}

impl From<SocketControl> for RawCtl {
    fn from(c: SocketControl) -> Self {
        let mode = match c.mode {
            Mode::Copy => MODE_COPY,
            Mode::L4 => MODE_L4,
            Mode::Drop => MODE_DROP,
        };
        RawCtl { mode, pad: [0; 3], budget: c.budget, skip_until: c.skip_until }
    }
}

/// `struct wl_ctl`: what the daemon asks of one socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCtl {
    pub mode: u8,
    pub pad: [u8; 3],
    pub budget: [u32; 2],
    pub skip_until: [u64; 2],
}

const _: () = assert!(std::mem::size_of::<RawCtl>() == 32);

// SAFETY: plain old data, every bit pattern valid.
unsafe impl aya::Pod for RawCtl {}

/// Most argument bytes the kernel records per process (`WL_ARGV_MAX`).
pub const ARGV_MAX: usize = 256;

/// `struct wl_proc`, exactly: a process's identity as the kernel recorded it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawProc {
    pub start_ns: u64,
    pub exited_ns: u64,
    pub argv_len: u32,
    pub argv_full: u32,
    pub argv: [u8; ARGV_MAX],
}

const _: () = assert!(std::mem::size_of::<RawProc>() == 280);

// SAFETY: plain old data, every bit pattern valid.
unsafe impl aya::Pod for RawProc {}

impl RawProc {
    /// The command line in full: from `/proc` while the process lives and
    /// the kernel's copy was cut (long command lines, like a JVM's class
    /// path, go past `ARGV_MAX`), else the kernel's copy. `/proc`'s line
    /// is taken only when it begins with the kernel's bytes: the pid may
    /// be another process's by now.
    pub fn cmdline_in_full(&self, pid: u32) -> Option<String> {
        let n = (self.argv_len as usize).min(ARGV_MAX);
        if self.argv_full as usize > n {
            if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                if raw.len() > n && raw.starts_with(&self.argv[..n]) {
                    return join_args(&raw);
                }
            }
        }
        self.cmdline()
    }

    /// The command line: arguments joined by spaces (as /proc shows them),
    /// `None` when empty. When the argument area was longer than what the
    /// kernel copied, the argument cut in the middle is left out (it could
    /// be the first half of a secret no pattern recognises any more) and
    /// the line ends in `...`.
    pub fn cmdline(&self) -> Option<String> {
        let n = (self.argv_len as usize).min(ARGV_MAX);
        let mut raw = &self.argv[..n];
        let cut = self.argv_full as usize > n;
        if cut {
            raw = &raw[..raw.iter().rposition(|&b| b == 0).unwrap_or(0)];
        }
        let text = join_args(raw)?;
        Some(if cut { format!("{text} ...") } else { text })
    }
}

/// NUL-separated arguments joined by spaces; `None` when there are none.
pub fn join_args(raw: &[u8]) -> Option<String> {
    let parts: Vec<String> =
        raw.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    Some(parts.join(" ")).filter(|c| !c.is_empty())
}

/// Which way bytes moved, seen from the observed process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent (write, send...).
    Egress,
    /// Received (read, recv...).
    Ingress,
}

/// What the observed process is on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
    Unknown,
}

impl Role {
    /// As records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Unknown => "unknown",
        }
    }

    /// What the other end is.
    pub fn peer(self) -> &'static str {
        match self {
            Role::Client => "server",
            Role::Server => "client",
            Role::Unknown => "unknown",
        }
    }
}

/// A socket's family, as records class it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// IPv4 or IPv6.
    Inet,
    Unix,
    Unknown,
}

impl SocketType {
    /// As records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Inet => "inet_socket",
            SocketType::Unix => "unix_socket",
            SocketType::Unknown => "unknown_socket",
        }
    }
}

/// How a socket carries bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A byte stream (TCP, unix stream sockets).
    Stream,
    /// Datagrams (UDP, unix datagram sockets): each call one message.
    Datagram,
    Other,
}

/// A process's identity: its pid and when it started (a pid can be reused
/// by a later process; the pair cannot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ProcKey {
    pub pid: u32,
    /// ns, CLOCK_MONOTONIC.
    pub start_ns: u64,
}

/// What happened on a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes moved (`captured` of them are in the payload).
    Data,
    /// A TCP socket whose data was reported closed (on behalf of its last
    /// user), with what it moved while counted in the kernel.
    Close,
    /// What a socket counted in the kernel (layer 4 only) moved since it
    /// was last read (on behalf of its last user).
    Stats,
}

/// One decoded event, in the daemon's own types (this file is the only
/// one that knows the kernel's numbers).
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    /// The process: pid and start time.
    pub proc: ProcKey,
    /// The socket's cookie: with the process, a connection's identity
    /// (never reused, unlike fds and kernel addresses).
    pub sock: u64,
    /// When the bytes moved (ns, CLOCK_MONOTONIC): the end of the socket's
    /// send or receive.
    pub ts: u64,
    /// Bytes the call moved.
    pub real_len: u64,
    /// Where they start in the socket's stream in this direction (bytes
    /// moved before, since the kernel first saw the socket).
    pub pos: u64,
    pub direction: Direction,
    /// What the kernel saw the connection begin as (`None`: it did not see
    /// the beginning).
    pub role: Option<Role>,
    pub socket_type: SocketType,
    pub transport: Transport,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// The process's name as the kernel keeps it (NUL-padded); see [`Event::comm`].
    pub comm: [u8; 16],
    /// The process's command line, as the capture reader found it the first
    /// time it saw the process (the kernel's record of its birth, else /proc).
    pub cmdline: Option<String>,
    /// Its `/proc/PID/cgroup`, read at the same time (the container it runs in).
    pub cgroup: Option<String>,
    /// Where the captured bytes are in the batch's buffer (see
    /// [`EventBatch::payload`]).
    pub(crate) payload: std::ops::Range<u32>,
    /// Close and stats events: what the socket moved while counted in the
    /// kernel.
    pub counts: Counts,
    /// This record continues the previous one's call (a call longer than
    /// one record, on a socket that wants whole calls): its bytes follow
    /// on, but it is not another call.
    pub continued: bool,
    /// Plaintext of a TLS connection, read at the TLS library (the socket's
    /// own bytes, ciphertext, are counted in the kernel).
    pub tls: bool,
}

/// Events as the capture hands them over: their payloads in one buffer, so
/// decoding an event allocates nothing (batches go back to the reader to
/// be refilled).
#[derive(Debug, Default)]
pub struct EventBatch {
    events: Vec<Event>,
    data: Vec<u8>,
}

impl EventBatch {
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Self { events: Vec::with_capacity(events), data: Vec::with_capacity(bytes) }
    }

    /// Append an event and its captured bytes.
    pub fn push(&mut self, mut ev: Event, payload: &[u8]) -> &mut Event {
        ev.payload = self.append(payload);
        self.events.push(ev);
        self.events.last_mut().expect("pushed")
    }

    /// Keep an event's captured bytes; where they are in the buffer.
    fn append(&mut self, payload: &[u8]) -> std::ops::Range<u32> {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(payload);
        start..self.data.len() as u32
    }

    /// A data event built by hand (tests and benches drive the collector
    /// with these, without the kernel): an inet stream socket whose
    /// beginning was seen, payload captured whole, at the stream position
    /// the kernel would give it (where the socket's last hand-built event
    /// of that direction on this thread ended).
    #[allow(clippy::too_many_arguments)]
    pub fn data(
        &mut self,
        proc: ProcKey,
        sock: u64,
        ts: u64,
        direction: Direction,
        role: Role,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        payload: &[u8],
    ) -> &mut Event {
        // (The daemon's fast hash: `l7_path` measures the host path with
        // events made here, and SipHash took 2-3% of its time.)
        thread_local! {
            static POSITIONS: std::cell::RefCell<crate::fast_hash::HashMap<(u64, bool), u64>> = Default::default();
        }
        let pos = POSITIONS.with_borrow_mut(|p| {
            let at = p.entry((sock, direction == Direction::Ingress)).or_default();
            let pos = *at;
            *at += payload.len() as u64;
            pos
        });
        let ev = Event {
            kind: EventKind::Data,
            proc,
            sock,
            ts,
            real_len: payload.len() as u64,
            pos,
            direction,
            role: Some(role),
            socket_type: SocketType::Inet,
            transport: Transport::Stream,
            local,
            remote,
            comm: [0; 16],
            cmdline: None,
            cgroup: None,
            payload: 0..0,
            counts: Counts::default(),
            continued: false,
            tls: false,
        };
        self.push(ev, payload)
    }

    /// A close event for `sock` built by hand.
    pub fn close(&mut self, sock: u64, ts: u64) -> &mut Event {
        let nowhere = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let ev = self.data(ProcKey::default(), sock, ts, Direction::Egress, Role::Unknown, nowhere, nowhere, &[]);
        ev.kind = EventKind::Close;
        ev.role = None;
        ev
    }

    /// An event's captured bytes.
    pub fn payload(&self, ev: &Event) -> &[u8] {
        &self.data[ev.payload.start as usize..ev.payload.end as usize]
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn events_mut(&mut self) -> &mut [Event] {
        &mut self.events
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Captured bytes held.
    pub fn payload_bytes(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empty, keeping the buffers.
    pub fn clear(&mut self) {
        self.events.clear();
        self.data.clear();
    }

    /// Decode one record of the kernel's into the batch; false if it is
    /// malformed (counted by the caller).
    ///
    /// The event is written straight into the batch's spare room: built
    /// elsewhere and pushed, its ~200 bytes were moved twice per record
    /// (two `memmove` calls in the reader, measured under nginx).
    pub fn decode(&mut self, bytes: &[u8]) -> bool {
        let Some((raw, payload, counts)) = Event::check(bytes) else {
            return false;
        };
        let range = self.append(payload);
        self.events.reserve(1);
        self.events.spare_capacity_mut()[0].write(Event::from_raw(&raw, range, counts));
        // SAFETY: the slot past the length was just initialised.
        unsafe { self.events.set_len(self.events.len() + 1) };
        true
    }
}

impl Event {
    /// The process name (no copy unless it is not UTF-8).
    pub fn comm(&self) -> std::borrow::Cow<'_, str> {
        let len = self.comm.iter().position(|&b| b == 0).unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..len])
    }
}

fn addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*raw);
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

impl Event {
    /// Decode one record (ring buffer or iterator) into the event and its
    /// captured bytes; `None` if it is malformed (counted by the caller).
    pub fn decode(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (raw, payload, counts) = Self::check(bytes)?;
        Some((Self::from_raw(&raw, 0..0, counts), payload))
    }

    /// A record's header, its captured bytes (none for close and stats
    /// records) and the counts those carry; `None` if it is malformed.
    #[inline(always)]
    fn check(bytes: &[u8]) -> Option<(RawEvent, &[u8], Counts)> {
        let header = std::mem::size_of::<RawEvent>();
        if bytes.len() < header {
            return None;
        }
        // SAFETY: RawEvent is plain old data and the slice holds enough bytes.
        let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let captured = (raw.captured as usize).min(MAX_PAYLOAD);
        let payload = bytes.get(header..header + captured)?;
        match raw.kind {
            EV_DATA => Some((raw, payload, Counts::default())),
            EV_CLOSE | EV_STATS => {
                if payload.len() != std::mem::size_of::<Counts>() {
                    return None;
                }
                // SAFETY: Counts is plain old data and the slice is its size.
                let counts = unsafe { std::ptr::read_unaligned(payload.as_ptr().cast()) };
                Some((raw, &[], counts))
            }
            _ => None,
        }
    }

    /// The event a checked record describes (its kind is one of the three).
    #[inline(always)]
    fn from_raw(raw: &RawEvent, payload: std::ops::Range<u32>, counts: Counts) -> Self {
        Self {
            kind: match raw.kind {
                EV_CLOSE => EventKind::Close,
                EV_STATS => EventKind::Stats,
                _ => EventKind::Data,
            },
            proc: ProcKey { pid: raw.pid, start_ns: raw.start_ns },
            sock: raw.sock,
            ts: raw.ts,
            real_len: raw.real_len,
            pos: raw.pos,
            direction: if raw.direction == INGRESS { Direction::Ingress } else { Direction::Egress },
            role: match raw.role {
                ROLE_CLIENT => Some(Role::Client),
                ROLE_SERVER => Some(Role::Server),
                _ => None,
            },
            socket_type: match raw.family {
                AF_INET | AF_INET6 => SocketType::Inet,
                AF_UNIX => SocketType::Unix,
                _ => SocketType::Unknown,
            },
            transport: match raw.sock_type {
                SOCK_STREAM => Transport::Stream,
                SOCK_DGRAM => Transport::Datagram,
                _ => Transport::Other,
            },
            local: (addr(raw.family, &raw.laddr), raw.lport),
            remote: (addr(raw.family, &raw.raddr), raw.rport),
            comm: raw.comm,
            cmdline: None,
            cgroup: None,
            payload,
            counts,
            continued: raw.flags & F_CONT != 0,
            tls: raw.flags & F_TLS != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Every `_Static_assert` of the C header holds for the Rust struct.
    #[test]
    fn layout_matches_the_c_header() {
        let header = include_str!("../../../ebpf/include/wirelens.h");
        let rust: &[(&str, usize)] = &[
            ("ts", offset_of!(RawEvent, ts)),
            ("sock", offset_of!(RawEvent, sock)),
            ("start_ns", offset_of!(RawEvent, start_ns)),
            ("real_len", offset_of!(RawEvent, real_len)),
            ("pos", offset_of!(RawEvent, pos)),
            ("pid", offset_of!(RawEvent, pid)),
            ("captured", offset_of!(RawEvent, captured)),
            ("kind", offset_of!(RawEvent, kind)),
            ("syscall", offset_of!(RawEvent, syscall)),
            ("family", offset_of!(RawEvent, family)),
            ("sock_type", offset_of!(RawEvent, sock_type)),
            ("lport", offset_of!(RawEvent, lport)),
            ("rport", offset_of!(RawEvent, rport)),
            ("direction", offset_of!(RawEvent, direction)),
            ("role", offset_of!(RawEvent, role)),
            ("flags", offset_of!(RawEvent, flags)),
            ("laddr", offset_of!(RawEvent, laddr)),
            ("raddr", offset_of!(RawEvent, raddr)),
            ("comm", offset_of!(RawEvent, comm)),
        ];
        let procs: &[(&str, usize)] = &[
            ("start_ns", offset_of!(RawProc, start_ns)),
            ("exited_ns", offset_of!(RawProc, exited_ns)),
            ("argv_len", offset_of!(RawProc, argv_len)),
            ("argv_full", offset_of!(RawProc, argv_full)),
            ("argv", offset_of!(RawProc, argv)),
        ];
        let ctl: &[(&str, usize)] =
            &[("budget", offset_of!(RawCtl, budget)), ("skip_until", offset_of!(RawCtl, skip_until))];
        let mut checked = 0;
        for line in header.lines().filter(|l| l.starts_with("_Static_assert(")) {
            let n: usize = line.split("==").nth(1).unwrap().split(',').next().unwrap().trim().parse().unwrap();
            if line.contains("sizeof(struct wl_event)") {
                assert_eq!(std::mem::size_of::<RawEvent>(), n, "size");
            } else if line.contains("sizeof(struct wl_proc)") {
                assert_eq!(std::mem::size_of::<RawProc>(), n, "proc size");
            } else if line.contains("sizeof(struct wl_counts)") {
                assert_eq!(std::mem::size_of::<Counts>(), n, "counts size");
            } else if line.contains("sizeof(struct wl_ctl)") {
                assert_eq!(std::mem::size_of::<RawCtl>(), n, "ctl size");
            } else {
                let (table, strukt) = if line.contains("struct wl_proc,") {
                    (procs, "wl_proc")
                } else if line.contains("struct wl_ctl,") {
                    (ctl, "wl_ctl")
                } else {
                    (rust, "wl_event")
                };
                let field = line.split(", ").nth(1).unwrap().split(')').next().unwrap();
                let (_, off) =
                    table.iter().find(|(f, _)| *f == field).unwrap_or_else(|| panic!("{strukt}.{field} not mirrored"));
                assert_eq!(*off, n, "offset of {strukt}.{field}");
            }
            checked += 1;
        }
        assert_eq!(checked, rust.len() + procs.len() + ctl.len() + 4, "every field is asserted in the header");
        // Constants too.
        for (name, value) in [
            ("WL_MAX_PAYLOAD", MAX_PAYLOAD as u64),
            ("WL_ARGV_MAX", ARGV_MAX as u64),
            ("WL_EV_DATA", EV_DATA.into()),
            ("WL_F_CONT", F_CONT.into()),
            ("WL_F_TLS", F_TLS.into()),
            ("WL_SYS_SSL_WRITE", SYS_SSL_WRITE.into()),
            ("WL_SYS_SSL_READ", SYS_SSL_READ.into()),
            ("WL_CNT_TLS", CNT_TLS.into()),
            ("WL_CNT_TLS_NO_SOCKET", CNT_TLS_NO_SOCKET.into()),
            ("WL_EV_CLOSE", EV_CLOSE.into()),
            ("WL_EV_STATS", EV_STATS.into()),
            ("WL_MODE_COPY", MODE_COPY.into()),
            ("WL_MODE_L4", MODE_L4.into()),
            ("WL_MODE_DROP", MODE_DROP.into()),
            ("WL_ROLE_UNKNOWN", ROLE_UNKNOWN.into()),
            ("WL_ROLE_CLIENT", ROLE_CLIENT.into()),
            ("WL_ROLE_SERVER", ROLE_SERVER.into()),
            ("WL_SYS_SENDFILE", SYS_SENDFILE.into()),
            ("WL_SYS_OTHER", SYS_OTHER.into()),
            ("WL_EGRESS", EGRESS.into()),
            ("WL_INGRESS", INGRESS.into()),
            ("WL_CNT_EVENTS", CNT_EVENTS.into()),
            ("WL_CNT_LOST", CNT_LOST.into()),
            ("WL_CNT_FILTERED", CNT_FILTERED.into()),
            ("WL_CNT_TRUNCATED", CNT_TRUNCATED.into()),
            ("WL_CNT_DENIED", CNT_DENIED.into()),
            ("WL_CNT_COUNTED", CNT_COUNTED.into()),
            ("WL_CNT_SKIPPED", CNT_SKIPPED.into()),
        ] {
            let line = header.lines().find(|l| l.starts_with(&format!("#define {name} "))).unwrap();
            let v: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
            assert_eq!(v, value, "{name}");
        }
    }

    #[test]
    fn command_lines_from_the_kernel() {
        let mut p = RawProc { start_ns: 1, exited_ns: 0, argv_len: 0, argv_full: 0, argv: [0; ARGV_MAX] };
        let args = b"curl\0-s\0http://x/?a=1\0";
        p.argv[..args.len()].copy_from_slice(args);
        (p.argv_len, p.argv_full) = (args.len() as u32, args.len() as u32);
        assert_eq!(p.cmdline().as_deref(), Some("curl -s http://x/?a=1"));
        // Cut inside the last argument: it is left out.
        (p.argv_len, p.argv_full) = (12, 400);
        assert_eq!(p.cmdline().as_deref(), Some("curl -s ..."));
        p.argv_len = 0;
        assert_eq!(p.cmdline(), None);
    }

    #[test]
    fn a_cut_command_line_is_read_whole_from_its_living_process() {
        let me = std::process::id();
        let whole = std::fs::read(format!("/proc/{me}/cmdline")).unwrap();
        let mut p =
            RawProc { start_ns: 1, exited_ns: 0, argv_len: 8, argv_full: whole.len() as u32, argv: [0; ARGV_MAX] };
        p.argv[..8].copy_from_slice(&whole[..8]);
        assert_eq!(p.cmdline_in_full(me), join_args(&whole), "this process's line, whole");
        // The pid is another program's now: the kernel's cut copy stays.
        p.argv[0] ^= 0xff;
        assert_ne!(p.cmdline_in_full(me), join_args(&whole));
    }

    #[test]
    fn decodes_an_event() {
        let mut raw = RawEvent {
            kind: EV_DATA,
            pid: 42,
            start_ns: 7,
            captured: 5,
            family: AF_INET,
            lport: 8080,
            rport: 5555,
            ..Default::default()
        };
        raw.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        raw.raddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        raw.comm[..4].copy_from_slice(b"curl");
        let mut bytes = vec![0u8; 112];
        // SAFETY: writing a POD struct into a buffer of its size.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), raw) };
        bytes.extend_from_slice(b"hello");
        let mut batch = EventBatch::default();
        assert!(batch.decode(&bytes));
        let e = &batch.events()[0];
        assert_eq!((e.proc, e.kind), (ProcKey { pid: 42, start_ns: 7 }, EventKind::Data));
        assert_eq!((e.direction, e.role, e.socket_type), (Direction::Egress, None, SocketType::Inet));
        assert_eq!(e.remote, ("10.1.2.3".parse().unwrap(), 5555));
        assert_eq!(e.local.1, 8080);
        assert_eq!(e.comm(), "curl");
        assert_eq!(batch.payload(e), b"hello");
        assert!(Event::decode(&bytes[..108]).is_none());
        assert!(Event::decode(&bytes[..114]).is_none(), "payload shorter than announced");
    }

    #[test]
    fn decodes_counts_of_stats_and_close_events() {
        let raw = RawEvent { kind: EV_STATS, pid: 9, captured: 32, family: AF_INET, ..Default::default() };
        let counts = Counts { bytes: [100, 2000], calls: [3, 4] };
        let mut bytes = vec![0u8; 112 + 32];
        // SAFETY: writing POD structs into a buffer of their size.
        unsafe {
            std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), raw);
            std::ptr::write_unaligned(bytes[112..].as_mut_ptr().cast(), counts);
        }
        let (e, payload) = Event::decode(&bytes).unwrap();
        assert_eq!((e.kind, e.counts), (EventKind::Stats, counts));
        assert!(payload.is_empty());
        assert!(Event::decode(&bytes[..112 + 16]).is_none(), "counts cut short");
    }
}

/// The user-space structs the kernel programs read (declared by hand in
/// ebpf/include/vmlinux_min.h) have the C library's layout.
#[cfg(test)]
mod abi_tests {
    #[test]
    fn msghdr_layouts_match_libc() {
        let header = include_str!("../../../ebpf/include/vmlinux_min.h");
        let body = |name: &str| -> Vec<String> {
            let start = header.find(&format!("struct {name} {{")).unwrap();
            let end = start + header[start..].find("};").unwrap();
            header[start..end].lines().skip(1).map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
        };
        // Field lists in declaration order, as libc defines them.
        assert_eq!(
            body("user_msghdr"),
            [
                "void *msg_name;",
                "int msg_namelen;",
                "struct iovec *msg_iov;",
                "__u64 msg_iovlen;",
                "void *msg_control;",
                "__u64 msg_controllen;",
                "unsigned int msg_flags;"
            ]
        );
        assert_eq!(std::mem::size_of::<libc::msghdr>(), 56);
        assert_eq!(std::mem::size_of::<libc::mmsghdr>(), 64);
        assert_eq!(std::mem::size_of::<libc::iovec>(), 16);
    }
}
