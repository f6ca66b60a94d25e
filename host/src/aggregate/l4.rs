//! Layer-4 statistics per process, remote endpoint, role and socket type,
//! over one `FlushOutL4Interval` window.

use std::net::IpAddr;

use super::keyed::KeyedEntries;
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
    keys: KeyedEntries<Key, Stats>,
    max_keys: usize,
    /// Calls folded into no key because the cap was reached.
    pub overflow: u64,
}

impl L4Window {
    pub fn new(max_keys: usize) -> Self {
        Self { keys: KeyedEntries::default(), max_keys, overflow: 0 }
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
    /// Their place is kept on the connection (see [`KeyedEntries`]; a
    /// datagram socket's calls to another peer are another key).
    fn entry(&mut self, conn: &Conn, ev: &Event) -> Option<&mut Stats> {
        // Datagram sockets without a fixed peer carry it per call.
        let (remote_ip, remote_port) = if ev.remote.1 != 0 { ev.remote } else { conn.remote };
        let key = Key { proc: conn.key.proc, remote_ip, remote_port, role: conn.role, socket_type: conn.socket_type };
        let at = match self.keys.find(&key, conn.l4_hint.get()) {
            Some(at) => at,
            None if self.keys.len() >= self.max_keys => {
                self.overflow += 1;
                return None;
            }
            None => self.keys.insert(key, Stats::default()),
        };
        conn.l4_hint.set(at);
        Some(self.keys.value_mut(at))
    }

    /// The window's records (`type: statistics`) of the processes the
    /// filters keep (decided after their calls were counted when container
    /// metadata came late), and a new empty window.
    pub fn flush(&mut self, time: u64, procs: &ProcessCache) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.keys.len());
        for (k, s) in self.keys.drain() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::EventBatch;
    use crate::connections::{Tracker, TrackerConfig};

    /// (remote port, sent bytes, calls) of each key, by port.
    fn figures(w: &L4Window) -> Vec<(u16, u64, u64)> {
        let mut out: Vec<_> = w.keys.iter().map(|(k, s)| (k.remote_port, s.send_bytes, s.send_packets)).collect();
        out.sort_unstable();
        out
    }

    /// A connection's figures are found again from the place kept on it,
    /// and only while that place still holds its key: a datagram socket
    /// sending to two peers in turn, connections of the same key, a new
    /// window, the cap.
    #[test]
    fn kept_places_count_each_call_under_its_key() {
        let mut tracker = Tracker::new(TrackerConfig { drop_local: false, ..TrackerConfig::default() });
        let mut window = L4Window::new(3);
        let proc = ProcKey { pid: std::process::id(), start_ns: 1 };
        let local = ("10.0.0.1".parse().unwrap(), 40000);
        let peer = |port| ("10.0.0.2".parse().unwrap(), port);
        let mut batch = EventBatch::default();
        let mut send = |window: &mut L4Window, sock: u64, port: u16, bytes: usize| {
            batch.clear();
            batch.data(proc, sock, 1, Direction::Egress, Role::Client, local, peer(port), &vec![0; bytes]);
            let ev = &batch.events()[0];
            let conn = tracker.on_event(ev).unwrap();
            window.add(conn, ev);
        };
        for (port, bytes) in [(53, 10), (5353, 20), (53, 30), (53, 40), (5353, 50)] {
            send(&mut window, 1, port, bytes);
        }
        // Another socket to the same peer: the same key.
        send(&mut window, 2, 53, 5);
        assert_eq!(figures(&window), [(53, 85, 4), (5353, 70, 2)]);
        window.keys.drain();
        // A new window: places kept from the last one hold other keys now.
        send(&mut window, 3, 80, 1);
        send(&mut window, 1, 5353, 2);
        send(&mut window, 1, 53, 3);
        assert_eq!(figures(&window), [(53, 3, 1), (80, 1, 1), (5353, 2, 1)]);
        // Past the cap (3 keys) a new key is counted as overflow only.
        send(&mut window, 4, 443, 9);
        send(&mut window, 1, 53, 3);
        assert_eq!((figures(&window), window.overflow), (vec![(53, 6, 2), (80, 1, 1), (5353, 2, 1)], 1));
    }
}
