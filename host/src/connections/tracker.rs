use std::collections::hash_map::Entry;

use crate::fast_hash::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::capture::{Direction, Event, ProcKey, Transport};
pub use crate::capture::{Role, SocketType};

use super::sockdiag::Listening;

/// How long an exited process's connection is kept after its last event.
pub const EXITED_GRACE: Duration = Duration::from_secs(2);

/// A connection's identity: a process and a socket (its cookie, which the
/// kernel never reuses; a socket shared by several processes is one
/// connection per process). A TLS socket's plaintext (read at the TLS
/// library) is a connection of its own beside the socket's ciphertext:
/// its `sock` is the cookie with [`TLS_SOCK`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub proc: ProcKey,
    pub sock: u64,
}

/// Set in [`ConnKey::sock`] for a TLS socket's plaintext (kernel cookies
/// are a counter from 1: they never reach this bit). The kernel takes a
/// TLS connection's wishes (conn_ctl) under the same key
/// (`WL_TLS_COOKIE`).
pub const TLS_SOCK: u64 = 1 << 63;

impl ConnKey {
    /// The plaintext of a TLS socket?
    pub fn is_tls(&self) -> bool {
        self.sock & TLS_SOCK != 0
    }

    /// The socket's cookie, as the kernel knows it.
    pub fn cookie(&self) -> u64 {
        self.sock & !TLS_SOCK
    }
}

/// One tracked connection.
#[derive(Clone, Debug)]
pub struct Conn {
    /// Unique for the daemon's life (protocol plugins key state by it).
    pub id: u64,
    pub key: ConnKey,
    pub role: Role,
    pub socket_type: SocketType,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// Dropped by a drop rule: tracked, but reported nowhere.
    pub dropped: bool,
    /// A TCP connection whose beginning (connect or accept) the capture
    /// did not see: open before the daemon started. Its protocols' state
    /// from before (HTTP/2's header tables) is unknown.
    pub joined_midway: bool,
    /// Where the layer-4 window keeps this connection's figures (its
    /// cache: see `L4Window::entry`).
    pub l4_hint: std::cell::Cell<usize>,
    last_seen: Instant,
}

/// Drop rules and bounds.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    pub drop_unix: bool,
    pub drop_local: bool,
    pub drop_unknown: bool,
    /// Most connections tracked at once.
    pub max_connections: usize,
    /// A connection with no event for this long is forgotten.
    pub idle_timeout: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            drop_unix: true,
            drop_local: true,
            drop_unknown: true,
            max_connections: 65_536,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackerStats {
    pub opened: u64,
    pub closed: u64,
    pub expired: u64,
    /// Connections not tracked because `max_connections` was reached.
    pub over_capacity: u64,
    /// Connections dropped by a drop rule.
    pub dropped_by_rule: u64,
}

/// All connections.
pub struct Tracker {
    config: TrackerConfig,
    conns: HashMap<ConnKey, Conn>,
    /// The processes with a connection on each socket (a close comes from
    /// the socket, whichever process was running).
    by_sock: HashMap<u64, Vec<ProcKey>>,
    next_id: u64,
    listening: Listening,
    local_addrs: HashSet<IpAddr>,
    stats: TrackerStats,
    /// The time events are stamped with (see [`Tracker::set_clock`]).
    now: Instant,
    /// Sockets a drop rule applied to since [`Tracker::take_dropped`]: the
    /// kernel need not report them any more.
    newly_dropped: Vec<u64>,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            conns: HashMap::default(),
            by_sock: HashMap::default(),
            next_id: 1,
            listening: Listening::default(),
            local_addrs: HashSet::default(),
            stats: TrackerStats::default(),
            now: Instant::now(),
            newly_dropped: Vec::new(),
        }
    }

    /// Sockets a drop rule applied to since the last call.
    pub fn take_dropped(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.newly_dropped)
    }

    /// Refresh what the host listens on and its addresses (sock_diag and
    /// interface addresses): role inference and `DropLocalConnections`.
    pub fn refresh_host_view(&mut self, listening: Listening, local_addrs: HashSet<IpAddr>) {
        self.listening = listening;
        self.local_addrs = local_addrs;
    }

    /// The time the next events are seen at (set once per batch: a clock
    /// read per event showed in the daemon's profile).
    pub fn set_clock(&mut self, now: Instant) {
        self.now = now;
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Apply one data event: its connection, unless the connection is not
    /// tracked (over capacity) or dropped by a rule.
    pub fn on_event(&mut self, ev: &Event) -> Option<&Conn> {
        let key = ConnKey { proc: ev.proc, sock: if ev.tls { ev.sock | TLS_SOCK } else { ev.sock } };
        let full = self.conns.len() >= self.config.max_connections;
        // One lookup per event (fields borrowed apart, not through methods).
        let conn = match self.conns.entry(key) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(_) if full => {
                self.stats.over_capacity += 1;
                return None;
            }
            Entry::Vacant(slot) => {
                let id = self.next_id;
                self.next_id += 1;
                let conn = new_conn(&self.config, &self.listening, &self.local_addrs, id, self.now, key, ev);
                self.stats.opened += 1;
                if conn.dropped {
                    self.stats.dropped_by_rule += 1;
                    self.newly_dropped.push(key.cookie());
                }
                self.by_sock.entry(key.sock).or_default().push(key.proc);
                slot.insert(conn)
            }
        };
        conn.last_seen = self.now;
        // A socket the kernel saw begin after the capture started has its
        // role from the kernel, which beats an inference from ports.
        if let Some(role) = ev.role {
            conn.role = role;
        }
        // Connected sockets learn their peer at connect time.
        if ev.remote.1 != 0 && conn.remote.1 == 0 {
            conn.remote = ev.remote;
            conn.local = ev.local;
            if !conn.dropped && self.config.drop_local && is_local(&self.local_addrs, conn.remote.0) {
                conn.dropped = true;
                self.newly_dropped.push(key.cookie());
            }
        }
        (!conn.dropped).then_some(&*conn)
    }

    /// The socket closed: every process's connection on it ends, its TLS
    /// plaintext too (those not dropped by a rule are returned, to be
    /// finished).
    pub fn on_close(&mut self, cookie: u64) -> Vec<Conn> {
        let mut closed = Vec::new();
        for sock in [cookie, cookie | TLS_SOCK] {
            for proc in self.by_sock.remove(&sock).unwrap_or_default() {
                if let Some(conn) = self.conns.remove(&ConnKey { proc, sock }) {
                    self.stats.closed += 1;
                    if !conn.dropped {
                        closed.push(conn);
                    }
                }
            }
        }
        closed
    }

    /// Forget idle connections and those of processes that exited (once
    /// quiet for [`EXITED_GRACE`]).
    pub fn expire(&mut self) -> Vec<Conn> {
        let now = Instant::now();
        let idle = self.config.idle_timeout;
        let mut gone = Vec::new();
        // One /proc look-up per process, not per connection.
        let mut alive: HashMap<u32, bool> = HashMap::default();
        self.conns.retain(|key, conn| {
            let pid = key.proc.pid;
            let process_alive =
                *alive.entry(pid).or_insert_with(|| std::path::Path::new(&format!("/proc/{pid}")).exists());
            // An exited process's connection goes once its events stop
            // coming: a daemon behind its queue (beside other load) still
            // holds that process's last calls, and forgetting the connection
            // first failed its waiting requests (1,972 of a pipelined
            // client's 26,000 GETs).
            let quiet = now.duration_since(conn.last_seen);
            let expired = (!process_alive && quiet > EXITED_GRACE) || quiet > idle;
            if expired {
                gone.push(conn.clone());
            }
            !expired
        });
        for c in &gone {
            if let Some(pids) = self.by_sock.get_mut(&c.key.sock) {
                pids.retain(|&p| p != c.key.proc);
                if pids.is_empty() {
                    self.by_sock.remove(&c.key.sock);
                }
            }
        }
        self.stats.expired += gone.len() as u64;
        gone.retain(|c| !c.dropped);
        gone
    }
}

/// A connection first seen in `ev`.
fn new_conn(
    config: &TrackerConfig,
    listening: &Listening,
    local_addrs: &HashSet<IpAddr>,
    id: u64,
    now: Instant,
    key: ConnKey,
    ev: &Event,
) -> Conn {
    let socket_type = ev.socket_type;
    let role = ev.role.unwrap_or_else(|| infer_role(listening, ev, socket_type));
    let dropped = match socket_type {
        SocketType::Unix => config.drop_unix,
        SocketType::Unknown => config.drop_unknown,
        SocketType::Inet => config.drop_local && ev.remote.1 != 0 && is_local(local_addrs, ev.remote.0),
    };
    // The kernel names the role of the TCP connections it saw begin.
    let joined_midway = ev.role.is_none() && socket_type == SocketType::Inet && ev.transport == Transport::Stream;
    Conn {
        id,
        key,
        role,
        socket_type,
        local: ev.local,
        remote: ev.remote,
        dropped,
        joined_midway,
        l4_hint: Default::default(),
        last_seen: now,
    }
}

/// For an inet socket whose beginning the kernel did not see (older than
/// the daemon, or a datagram socket): a server if its local port is one
/// the host listens on (sock_diag), a client otherwise; for datagram
/// sockets, the same on bound ports, else by the first direction.
fn infer_role(listening: &Listening, ev: &Event, socket_type: SocketType) -> Role {
    if socket_type != SocketType::Inet {
        return Role::Unknown;
    }
    if listening.contains(ev.transport, ev.local.1) {
        return Role::Server;
    }
    if ev.transport == Transport::Datagram && ev.direction == Direction::Ingress && ev.remote.1 == 0 {
        return Role::Unknown;
    }
    Role::Client
}

fn is_local(local_addrs: &HashSet<IpAddr>, ip: IpAddr) -> bool {
    ip.is_loopback() || local_addrs.contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::EventKind;

    const ROLE_CLIENT: Option<Role> = Some(Role::Client);
    const ROLE_SERVER: Option<Role> = Some(Role::Server);
    const ROLE_UNKNOWN: Option<Role> = None;
    const AF_INET: SocketType = SocketType::Inet;
    const AF_UNIX: SocketType = SocketType::Unix;

    fn event(sock: u64, family: SocketType, remote: &str, role: Option<Role>) -> Event {
        Event {
            kind: EventKind::Data,
            proc: ProcKey { pid: std::process::id(), start_ns: 1 },
            sock,
            ts: 2,
            real_len: 10,
            pos: 0,
            direction: Direction::Egress,
            role,
            socket_type: family,
            transport: Transport::Stream,
            local: ("10.0.0.1".parse().unwrap(), 40000),
            remote: (remote.parse().unwrap(), 80),
            comm: *b"t\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            cmdline: None,
            cgroup: None,
            payload: 0..0,
            counts: Default::default(),
            continued: false,
            tls: false,
        }
    }

    fn tracker(drop_local: bool) -> Tracker {
        Tracker::new(TrackerConfig { drop_local, drop_unix: true, ..TrackerConfig::default() })
    }

    #[test]
    fn sockets_are_connections_and_a_close_ends_every_process_on_them() {
        let mut t = tracker(false);
        let client = t.on_event(&event(0x100, AF_INET, "10.0.0.2", ROLE_CLIENT)).map(|c| (c.id, c.role)).unwrap();
        assert_eq!(client.1, Role::Client);
        let server = t.on_event(&event(0x200, AF_INET, "10.0.0.3", ROLE_SERVER)).map(|c| (c.id, c.role)).unwrap();
        assert_ne!(client.0, server.0);
        assert_eq!(server.1, Role::Server);
        // The same socket in a second process (inherited across fork).
        let mut other = event(0x200, AF_INET, "10.0.0.3", ROLE_SERVER);
        other.proc.pid += 1;
        let shared = t.on_event(&other).map(|c| c.id).unwrap();
        assert_ne!(shared, server.0);
        assert_eq!(t.len(), 3);
        let mut closed: Vec<u64> = t.on_close(0x200).iter().map(|c| c.id).collect();
        closed.sort();
        assert_eq!(closed, [server.0, shared]);
        assert!(t.on_close(0x200).is_empty(), "closed once");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn drop_rules() {
        let mut t = tracker(true);
        assert!(t.on_event(&event(1, AF_INET, "127.0.0.1", ROLE_UNKNOWN)).is_none());
        assert!(t.on_event(&event(2, AF_UNIX, "0.0.0.0", ROLE_UNKNOWN)).is_none());
        assert!(t.on_event(&event(3, AF_INET, "10.9.9.9", ROLE_UNKNOWN)).is_some());
        assert_eq!(t.stats().dropped_by_rule, 2);
        assert!(t.on_close(1).is_empty(), "a dropped connection's close is not reported");
        let mut keep_local = tracker(false);
        assert!(keep_local.on_event(&event(1, AF_INET, "127.0.0.1", ROLE_UNKNOWN)).is_some());
    }

    #[test]
    fn state_is_bounded() {
        let mut t = Tracker::new(TrackerConfig { max_connections: 2, drop_local: false, ..TrackerConfig::default() });
        for sock in 1..6 {
            t.on_event(&event(sock, AF_INET, "10.0.0.2", ROLE_UNKNOWN));
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().over_capacity, 3);
    }

    #[test]
    fn sockets_the_kernel_did_not_see_begin_get_their_role_from_listening_ports() {
        let mut t = tracker(false);
        t.refresh_host_view(Listening::from_ports([40000], []), HashSet::default());
        let mut ev = event(9, AF_INET, "10.0.0.2", ROLE_UNKNOWN);
        ev.direction = Direction::Ingress;
        assert_eq!(t.on_event(&ev).unwrap().role, Role::Server);
        // Another socket on a port nobody listens on: a client.
        let mut ev = event(10, AF_INET, "10.0.0.2", ROLE_UNKNOWN);
        ev.local.1 = 50000;
        assert_eq!(t.on_event(&ev).unwrap().role, Role::Client);
    }
}
