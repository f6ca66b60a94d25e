//! Stitching: requests paired with responses per connection (first in,
//! first out; by id where the protocol has one), with latency from the
//! request's first byte to the response's last byte, and requests left
//! unanswered reported as failed after a timeout.

use std::collections::VecDeque;

use crate::fast_hash::HashMap;
use std::sync::Arc;

use crate::protocols::{LoadedPlugin, MessageKind, Parsed};

/// One layer-7 call.
#[derive(Clone, Debug)]
pub struct Call {
    pub conn: u64,
    pub plugin: Arc<LoadedPlugin>,
    /// Request fields then response fields, as `(name, value)`.
    pub fields: Vec<(Arc<str>, Arc<str>)>,
    pub latency_ns: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    /// `None`: the outcome is unknown (the response's bytes were lost).
    pub success: Option<bool>,
}

#[derive(Default)]
struct Pending {
    fifo: VecDeque<Parsed>,
    by_id: HashMap<u64, Parsed>,
}

/// Per-connection pending requests.
pub struct Stitcher {
    conns: HashMap<u64, Pending>,
    /// Most requests waiting per connection (more are reported as failed).
    max_pending: usize,
    /// Requests unanswered for this long are failed calls.
    timeout_ns: u64,
    /// Responses with no request (capture started mid-call, or lost bytes).
    pub orphan_responses: u64,
}

impl Stitcher {
    pub fn new(max_pending: usize, timeout_ns: u64) -> Self {
        Self { conns: HashMap::default(), max_pending, timeout_ns, orphan_responses: 0 }
    }

    /// Feed one parsed message; completed calls go to `out`.
    pub fn add(&mut self, m: Parsed, out: &mut Vec<Call>) {
        let pending = self.conns.entry(m.conn).or_default();
        match m.kind {
            MessageKind::Request => match m.pair_id {
                Some(id) => {
                    if let Some(old) = pending.by_id.insert(id, m) {
                        out.push(unanswered(old));
                    }
                }
                None => {
                    if pending.fifo.len() >= self.max_pending {
                        if let Some(old) = pending.fifo.pop_front() {
                            out.push(unanswered(old));
                        }
                    }
                    pending.fifo.push_back(m);
                }
            },
            MessageKind::Response => {
                let req = match m.pair_id {
                    Some(id) => pending.by_id.remove(&id),
                    None => pending.fifo.pop_front(),
                };
                match req {
                    Some(req) => out.push(pair(req, m)),
                    None => self.orphan_responses += 1,
                }
            }
            MessageKind::Oneway => out.push(single(m)),
        }
    }

    /// The connection is gone: its unanswered requests are failed calls.
    pub fn close(&mut self, conn: u64, out: &mut Vec<Call>) {
        if let Some(p) = self.conns.remove(&conn) {
            out.extend(p.fifo.into_iter().chain(p.by_id.into_values()).map(unanswered));
        }
    }

    /// Requests older than the timeout (by kernel clock `now_ns`) fail.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Call>) {
        let timeout = self.timeout_ns;
        for p in self.conns.values_mut() {
            while p.fifo.front().is_some_and(|r| now_ns.saturating_sub(r.start_ns) > timeout) {
                out.push(unanswered(p.fifo.pop_front().unwrap()));
            }
            let old: Vec<u64> =
                p.by_id.iter().filter(|(_, r)| now_ns.saturating_sub(r.start_ns) > timeout).map(|(k, _)| *k).collect();
            for k in old {
                out.push(unanswered(p.by_id.remove(&k).unwrap()));
            }
        }
        self.conns.retain(|_, p| !p.fifo.is_empty() || !p.by_id.is_empty());
    }
}

/// The message's fields by name, moved out (values are not copied).
fn take_named(m: &mut Parsed) -> Vec<(Arc<str>, Arc<str>)> {
    let names = &m.plugin.meta.field_names;
    std::mem::take(&mut m.fields).into_iter().map(|(k, v)| (names[usize::from(k)].clone(), v)).collect()
}

fn pair(mut req: Parsed, mut resp: Parsed) -> Call {
    // Request fields first; a response field of the same name (HTTP's
    // version) does not repeat it.
    let mut fields = take_named(&mut req);
    for (k, v) in take_named(&mut resp) {
        if !fields.iter().any(|(name, _)| *name == k) {
            fields.push((k, v));
        }
    }
    Call {
        conn: req.conn,
        plugin: req.plugin.clone(),
        fields,
        latency_ns: resp.end_ns.saturating_sub(req.start_ns),
        req_bytes: req.size,
        resp_bytes: resp.size,
        success: (!resp.unseen).then_some(resp.success),
    }
}

/// A request that never got its response: a failed call.
fn unanswered(req: Parsed) -> Call {
    Call { success: Some(false), ..single(req) }
}

fn single(mut m: Parsed) -> Call {
    Call {
        conn: m.conn,
        plugin: m.plugin.clone(),
        fields: take_named(&mut m),
        latency_ns: 0,
        req_bytes: m.size,
        resp_bytes: 0,
        success: Some(m.success),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::bindings::Direction;
    use crate::protocols::{LoadedPlugin, Registry, Runtime, SandboxLimits};

    fn http() -> Arc<LoadedPlugin> {
        let registry = Registry::new(Runtime::new(SandboxLimits::default(), None).unwrap(), Default::default());
        registry.load_builtins();
        let p = registry.catalog().get("http").unwrap().clone();
        p
    }

    fn msg(p: &Arc<LoadedPlugin>, conn: u64, kind: MessageKind, start: u64, end: u64, id: Option<u64>) -> Parsed {
        Parsed {
            conn,
            plugin: p.clone(),
            kind,
            direction: Direction::Egress,
            start_ns: start,
            end_ns: end,
            size: 10,
            pair_id: id,
            success: true,
            unseen: false,
            fields: vec![(1, Arc::from(if kind == MessageKind::Request { "GET" } else { "-" }))],
        }
    }

    #[test]
    fn fifo_by_id_and_timeouts() {
        let p = http();
        let mut s = Stitcher::new(2, 1000);
        let mut out = Vec::new();
        // Pipelined: two requests, then their responses in order.
        s.add(msg(&p, 1, MessageKind::Request, 10, 11, None), &mut out);
        s.add(msg(&p, 1, MessageKind::Request, 20, 21, None), &mut out);
        s.add(msg(&p, 1, MessageKind::Response, 30, 35, None), &mut out);
        s.add(msg(&p, 1, MessageKind::Response, 40, 45, None), &mut out);
        assert_eq!(out.iter().map(|c| c.latency_ns).collect::<Vec<_>>(), vec![25, 25]);
        out.clear();
        // By id, answered out of order.
        s.add(msg(&p, 2, MessageKind::Request, 100, 100, Some(7)), &mut out);
        s.add(msg(&p, 2, MessageKind::Request, 110, 110, Some(8)), &mut out);
        s.add(msg(&p, 2, MessageKind::Response, 150, 150, Some(8)), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].latency_ns, 40);
        out.clear();
        // The other one times out as a failed call.
        s.expire(100 + 1001, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].success, Some(false));
        out.clear();
        // A response with no request is counted, not invented.
        s.add(msg(&p, 3, MessageKind::Response, 1, 2, None), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.orphan_responses, 1);
        // Unanswered requests fail when the connection closes; the pending
        // list is bounded.
        for t in 0..3 {
            s.add(msg(&p, 4, MessageKind::Request, t, t, None), &mut out);
        }
        assert_eq!(out.len(), 1, "the oldest of three is dropped past the bound of two");
        s.close(4, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|c| c.success == Some(false)));
    }
}
