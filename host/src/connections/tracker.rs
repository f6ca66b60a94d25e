use std::collections::HashSet;

use crate::fast_hash::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::capture::event::{AF_INET, AF_INET6, AF_UNIX, INGRESS};
use crate::capture::{Event, EventKind};

use super::sockdiag::Listening;

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

/// Socket family class, as records spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketType {
    Inet,
    Unix,
    Unknown,
}

impl SocketType {
    fn of(family: u16) -> Self {
        match family {
            AF_INET | AF_INET6 => SocketType::Inet,
            AF_UNIX => SocketType::Unix,
            _ => SocketType::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Inet => "inet_socket",
            SocketType::Unix => "unix_socket",
            SocketType::Unknown => "unknown_socket",
        }
    }
}

/// A connection's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub pid: u32,
    pub fd: i32,
    pub sock: u64,
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

/// What an event means for its connection.
pub enum Outcome<'a> {
    /// Report it (data, or the connection's start).
    Keep(&'a Conn),
    /// The connection closed: finish it (id of the connection).
    Closed(Conn),
    /// Not reported (dropped by a rule, or not tracked).
    Ignore,
}

/// All connections.
pub struct Tracker {
    config: TrackerConfig,
    conns: HashMap<ConnKey, Conn>,
    /// The socket currently behind each (pid, fd).
    by_fd: HashMap<(u32, i32), u64>,
    next_id: u64,
    listening: Listening,
    local_addrs: HashSet<IpAddr>,
    stats: TrackerStats,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            conns: HashMap::default(),
            by_fd: HashMap::default(),
            next_id: 1,
            listening: Listening::default(),
            local_addrs: HashSet::new(),
            stats: TrackerStats::default(),
        }
    }

    /// Refresh what the host listens on and its addresses (sock_diag and
    /// interface addresses): role inference and `DropLocalConnections`.
    pub fn refresh_host_view(&mut self, listening: Listening, local_addrs: HashSet<IpAddr>) {
        self.listening = listening;
        self.local_addrs = local_addrs;
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

    /// Apply one event.
    pub fn on_event(&mut self, ev: &Event) -> Outcome<'_> {
        let key = ConnKey { pid: ev.pid, fd: ev.fd, sock: ev.sock };
        if ev.kind == EventKind::Close {
            self.by_fd.remove(&(ev.pid, ev.fd));
            return match self.conns.remove(&key) {
                Some(conn) => {
                    self.stats.closed += 1;
                    if conn.dropped {
                        Outcome::Ignore
                    } else {
                        Outcome::Closed(conn)
                    }
                }
                None => Outcome::Ignore,
            };
        }
        // A different socket behind the same fd: the old connection ended
        // without us seeing its close.
        if let Some(old) = self.by_fd.insert((ev.pid, ev.fd), ev.sock) {
            if old != ev.sock {
                self.conns.remove(&ConnKey { pid: ev.pid, fd: ev.fd, sock: old });
            }
        }
        let role = match ev.kind {
            EventKind::Connect => Some(Role::Client),
            EventKind::Accept => Some(Role::Server),
            _ => None,
        };
        if !self.conns.contains_key(&key) {
            if self.conns.len() >= self.config.max_connections {
                self.stats.over_capacity += 1;
                return Outcome::Ignore;
            }
            let conn = self.new_conn(key, ev, role);
            self.stats.opened += 1;
            if conn.dropped {
                self.stats.dropped_by_rule += 1;
            }
            self.conns.insert(key, conn);
        }
        let conn = self.conns.get_mut(&key).expect("inserted above");
        conn.last_seen = Instant::now();
        if let Some(role) = role {
            conn.role = role;
        }
        // Connected sockets learn their peer at connect time.
        if ev.remote.1 != 0 && conn.remote.1 == 0 {
            conn.remote = ev.remote;
            conn.local = ev.local;
            conn.dropped = conn.dropped || self.config.drop_local && is_local(&self.local_addrs, conn.remote.0);
        }
        if conn.dropped {
            Outcome::Ignore
        } else {
            Outcome::Keep(conn)
        }
    }

    fn new_conn(&mut self, key: ConnKey, ev: &Event, role: Option<Role>) -> Conn {
        let socket_type = SocketType::of(ev.family);
        let role = role.unwrap_or_else(|| self.infer_role(ev, socket_type));
        let dropped = match socket_type {
            SocketType::Unix => self.config.drop_unix,
            SocketType::Unknown => self.config.drop_unknown,
            SocketType::Inet => self.config.drop_local && ev.remote.1 != 0 && is_local(&self.local_addrs, ev.remote.0),
        };
        let id = self.next_id;
        self.next_id += 1;
        Conn { id, key, role, socket_type, local: ev.local, remote: ev.remote, dropped, last_seen: Instant::now() }
    }

    /// For a socket older than the daemon: a server if its local port is one
    /// the host listens on (sock_diag), a client otherwise; for datagram
    /// sockets, the same on bound ports, else by the first direction.
    fn infer_role(&self, ev: &Event, socket_type: SocketType) -> Role {
        if socket_type != SocketType::Inet {
            return Role::Unknown;
        }
        if self.listening.contains(ev.sock_type, ev.local.1) {
            return Role::Server;
        }
        if ev.sock_type == libc::SOCK_DGRAM as u16 && ev.direction == INGRESS && ev.remote.1 == 0 {
            return Role::Unknown;
        }
        Role::Client
    }

    /// Forget idle connections and those of processes that exited.
    pub fn expire(&mut self) -> Vec<Conn> {
        let now = Instant::now();
        let idle = self.config.idle_timeout;
        let mut gone = Vec::new();
        // One /proc look-up per process, not per connection.
        let mut alive: HashMap<u32, bool> = HashMap::default();
        self.conns.retain(|key, conn| {
            let process_alive =
                *alive.entry(key.pid).or_insert_with(|| std::path::Path::new(&format!("/proc/{}", key.pid)).exists());
            let expired = !process_alive || now.duration_since(conn.last_seen) > idle;
            if expired {
                gone.push(conn.clone());
            }
            !expired
        });
        for c in &gone {
            self.by_fd.remove(&(c.key.pid, c.key.fd));
        }
        self.stats.expired += gone.len() as u64;
        gone.retain(|c| !c.dropped);
        gone
    }
}

fn is_local(local_addrs: &HashSet<IpAddr>, ip: IpAddr) -> bool {
    ip.is_loopback() || local_addrs.contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{EGRESS, INGRESS};

    fn event(kind: EventKind, fd: i32, sock: u64, family: u16, remote: &str) -> Event {
        Event {
            kind,
            pid: std::process::id(),
            tid: 1,
            fd,
            sock,
            ts_enter: 1,
            ts_exit: 2,
            ret: 10,
            real_len: 10,
            direction: EGRESS,
            family,
            sock_type: libc::SOCK_STREAM as u16,
            local: ("10.0.0.1".parse().unwrap(), 40000),
            remote: (remote.parse().unwrap(), 80),
            syscall: 0,
            comm: *b"t\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            cmdline: None,
            cgroup: None,
            payload: vec![],
        }
    }

    fn tracker(drop_local: bool) -> Tracker {
        Tracker::new(TrackerConfig { drop_local, drop_unix: true, ..TrackerConfig::default() })
    }

    #[test]
    fn a_reused_fd_is_a_new_connection() {
        let mut t = tracker(false);
        let first = match t.on_event(&event(EventKind::Connect, 5, 0x100, AF_INET, "10.0.0.2")) {
            Outcome::Keep(c) => (c.id, c.role),
            _ => panic!("kept"),
        };
        assert_eq!(first.1, Role::Client);
        // Same pid and fd, another socket: the old connection is gone.
        let second = match t.on_event(&event(EventKind::Accept, 5, 0x200, AF_INET, "10.0.0.3")) {
            Outcome::Keep(c) => (c.id, c.role),
            _ => panic!("kept"),
        };
        assert_ne!(first.0, second.0);
        assert_eq!(second.1, Role::Server);
        assert_eq!(t.len(), 1);
        match t.on_event(&event(EventKind::Close, 5, 0x200, AF_INET, "10.0.0.3")) {
            Outcome::Closed(c) => assert_eq!(c.id, second.0),
            _ => panic!("closed"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn drop_rules() {
        let mut t = tracker(true);
        assert!(matches!(t.on_event(&event(EventKind::Data, 3, 1, AF_INET, "127.0.0.1")), Outcome::Ignore));
        assert!(matches!(t.on_event(&event(EventKind::Data, 4, 2, AF_UNIX, "0.0.0.0")), Outcome::Ignore));
        assert!(matches!(t.on_event(&event(EventKind::Data, 6, 3, AF_INET, "10.9.9.9")), Outcome::Keep(_)));
        assert_eq!(t.stats().dropped_by_rule, 2);
        let mut keep_local = tracker(false);
        assert!(matches!(keep_local.on_event(&event(EventKind::Data, 3, 1, AF_INET, "127.0.0.1")), Outcome::Keep(_)));
    }

    #[test]
    fn state_is_bounded() {
        let mut t = Tracker::new(TrackerConfig { max_connections: 2, drop_local: false, ..TrackerConfig::default() });
        for fd in 0..5 {
            t.on_event(&event(EventKind::Data, fd, fd as u64 + 1, AF_INET, "10.0.0.2"));
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().over_capacity, 3);
    }

    #[test]
    fn old_sockets_get_their_role_from_listening_ports() {
        let mut t = tracker(false);
        t.refresh_host_view(Listening::from_ports([40000], []), HashSet::new());
        let mut ev = event(EventKind::Data, 7, 9, AF_INET, "10.0.0.2");
        ev.direction = INGRESS;
        match t.on_event(&ev) {
            Outcome::Keep(c) => assert_eq!(c.role, Role::Server),
            _ => panic!("kept"),
        }
    }
}
