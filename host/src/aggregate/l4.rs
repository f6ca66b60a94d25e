//! Layer-4 statistics per process, remote endpoint, role and socket type,
//! over one `FlushOutL4Interval` window.

use crate::fast_hash::HashMap;
use std::net::IpAddr;

use crate::capture::{Counts, Direction, Event, ProcKey};
use crate::connections::{Conn, Role, SocketType};
use crate::metadata::ProcessCache;
use crate::records::{Kind, Record, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    proc: ProcKey,
    remote_ip: IpAddr,
    remote_port: u16,
    role: Role,
    socket_type: SocketType,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    send_bytes: u64,
    recv_bytes: u64,
    send_packets: u64,
    recv_packets: u64,
}

/// One window of statistics, with a cap on its keys.
pub struct L4Window {
    stats: HashMap<Key, Stats>,
    max_keys: usize,
    /// Calls folded into no key because the cap was reached.
    pub overflow: u64,
}

impl L4Window {
    pub fn new(max_keys: usize) -> Self {
        Self { stats: HashMap::default(), max_keys, overflow: 0 }
    }

    /// Count one data call on a kept connection.
    pub fn add(&mut self, conn: &Conn, ev: &Event) {
        let Some(s) = self.entry(conn, ev) else { return };
        // A continuation record is more of the same call.
        let calls = u64::from(!ev.continued);
        if ev.direction == Direction::Ingress {
            s.recv_bytes += ev.real_len;
            s.recv_packets += calls;
        } else {
            s.send_bytes += ev.real_len;
            s.send_packets += calls;
        }
    }

    /// Add what a connection counted in the kernel moved.
    pub fn add_counts(&mut self, conn: &Conn, ev: &Event, counts: &Counts) {
        let Some(s) = self.entry(conn, ev) else { return };
        s.send_bytes += counts.bytes[0];
        s.send_packets += counts.calls[0];
        s.recv_bytes += counts.bytes[1];
        s.recv_packets += counts.calls[1];
    }

    /// The connection's key's figures; `None` (counted) past the cap.
    fn entry(&mut self, conn: &Conn, ev: &Event) -> Option<&mut Stats> {
        // Datagram sockets without a fixed peer carry it per call.
        let (remote_ip, remote_port) = if ev.remote.1 != 0 { ev.remote } else { conn.remote };
        let key = Key { proc: conn.key.proc, remote_ip, remote_port, role: conn.role, socket_type: conn.socket_type };
        // Below the cap a key is hashed once.
        if self.stats.len() >= self.max_keys && !self.stats.contains_key(&key) {
            self.overflow += 1;
            return None;
        }
        Some(self.stats.entry(key).or_default())
    }

    /// The window's records (`type: statistics`) of the processes the
    /// filters keep (decided after their calls were counted when container
    /// metadata came late), and a new empty window.
    pub fn flush(&mut self, time: u64, procs: &ProcessCache) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.stats.len());
        for (k, s) in self.stats.drain() {
            if !procs.keep(k.proc) {
                continue;
            }
            let mut r = Record::new(Kind::Statistics);
            procs.describe(k.proc, &mut r);
            r.push("remote_info", Value::Remote { ip: k.remote_ip, port: k.remote_port, kind: k.role.peer() });
            r.push("socket_type", k.socket_type.as_str());
            r.push("role", k.role.as_str());
            r.push("send_bytes", s.send_bytes);
            r.push("recv_bytes", s.recv_bytes);
            r.push("send_packets", s.send_packets);
            r.push("recv_packets", s.recv_packets);
            // iLogtail's fields, always 0 as in iLogtail's own output: the
            // capture sees each call as it completes, at the socket layer,
            // not at its entry (hooking every syscall's entry costs every
            // process on the host; see ebpf/capture.bpf.c).
            r.push("send_total_latency", 0u64);
            r.push("recv_total_latency", 0u64);
            r.push("__time__", time);
            out.push(r);
        }
        out
    }
}
