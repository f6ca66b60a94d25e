//! Stitching: requests paired with responses per connection (first in,
//! first out; by id where the protocol has one), with latency from the
//! request's first byte to the response's last byte, and requests left
//! unanswered reported as failed after a timeout.

use std::collections::VecDeque;

use crate::fast_hash::HashMap;
use std::sync::Arc;

use crate::protocols::{FieldSet, LoadedPlugin, MessageKind, Parsed};

/// One layer-7 call.
#[derive(Clone, Debug)]
pub struct Call {
    pub conn: u64,
    /// The request's fields (or the one-way message's)...
    pub request: Arc<FieldSet>,
    /// ... and the response's, when it was paired.
    pub response: Option<Arc<FieldSet>>,
    pub latency_ns: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    /// `None`: the outcome is unknown (the response's bytes were lost).
    pub success: Option<bool>,
}

impl Call {
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.request.plugin
    }

    /// Request fields then response fields, as `(name, value)`; a response
    /// field of a name the request has (HTTP's version) does not repeat it.
    pub fn fields(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let mut fields: Vec<_> = self.request.named().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in self.response.iter().flat_map(|r| r.named()) {
            if !fields.iter().any(|(name, _)| name == k) {
                fields.push((k.clone(), v.clone()));
            }
        }
        fields
    }
}

/// One connection's requests waiting for their responses (kept by the
/// caller with the rest of the connection's state: no lookup per message).
#[derive(Default)]
pub struct Pending {
    fifo: VecDeque<Parsed>,
    by_id: HashMap<u64, Parsed>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.by_id.is_empty()
    }
}

/// Pairing rules and what they count.
pub struct Stitcher {
    /// Most requests waiting per connection (more are reported as failed).
    max_pending: usize,
    /// Requests unanswered for this long are failed calls.
    timeout_ns: u64,
    /// Responses with no request (capture started mid-call, or lost bytes).
    pub orphan_responses: u64,
}

impl Stitcher {
    pub fn new(max_pending: usize, timeout_ns: u64) -> Self {
        Self { max_pending, timeout_ns, orphan_responses: 0 }
    }

    /// Feed one parsed message of the connection whose requests wait in
    /// `pending`; completed calls go to `out`.
    pub fn add(&mut self, pending: &mut Pending, m: Parsed, out: &mut Vec<Call>) {
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
    pub fn close(&mut self, pending: Pending, out: &mut Vec<Call>) {
        out.extend(pending.fifo.into_iter().chain(pending.by_id.into_values()).map(unanswered));
    }

    /// Requests older than the timeout (by kernel clock `now_ns`) fail.
    pub fn expire(&mut self, pending: &mut Pending, now_ns: u64, out: &mut Vec<Call>) {
        let timeout = self.timeout_ns;
        while pending.fifo.front().is_some_and(|r| now_ns.saturating_sub(r.start_ns) > timeout) {
            out.push(unanswered(pending.fifo.pop_front().unwrap()));
        }
        if !pending.by_id.is_empty() {
            let old: Vec<u64> = pending
                .by_id
                .iter()
                .filter(|(_, r)| now_ns.saturating_sub(r.start_ns) > timeout)
                .map(|(k, _)| *k)
                .collect();
            for k in old {
                out.push(unanswered(pending.by_id.remove(&k).unwrap()));
            }
        }
    }
}

fn pair(req: Parsed, resp: Parsed) -> Call {
    Call {
        conn: req.conn,
        request: req.fields,
        response: Some(resp.fields),
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

fn single(m: Parsed) -> Call {
    Call {
        conn: m.conn,
        request: m.fields,
        response: None,
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
    use crate::protocols::{FieldSets, LoadedPlugin, Registry, Runtime, SandboxLimits};

    fn http() -> Arc<LoadedPlugin> {
        let registry = Registry::new(Runtime::new(SandboxLimits::default(), None).unwrap(), Default::default());
        registry.load_builtins();
        let p = registry.catalog().get("http").unwrap().clone();
        p
    }

    fn msg(p: &Arc<LoadedPlugin>, conn: u64, kind: MessageKind, start: u64, end: u64, id: Option<u64>) -> Parsed {
        let value = if kind == MessageKind::Request { "GET" } else { "-" };
        Parsed {
            conn,
            kind,
            direction: Direction::Egress,
            start_ns: start,
            end_ns: end,
            size: 10,
            pair_id: id,
            success: true,
            unseen: false,
            fields: FieldSets::default().intern(p, [(1, value)].into_iter()),
        }
    }

    #[test]
    fn fifo_by_id_and_timeouts() {
        let p = http();
        let mut s = Stitcher::new(2, 1000);
        let mut conns: Vec<Pending> = (0..5).map(|_| Pending::default()).collect();
        let mut out = Vec::new();
        // Pipelined: two requests, then their responses in order.
        s.add(&mut conns[1], msg(&p, 1, MessageKind::Request, 10, 11, None), &mut out);
        s.add(&mut conns[1], msg(&p, 1, MessageKind::Request, 20, 21, None), &mut out);
        s.add(&mut conns[1], msg(&p, 1, MessageKind::Response, 30, 35, None), &mut out);
        s.add(&mut conns[1], msg(&p, 1, MessageKind::Response, 40, 45, None), &mut out);
        assert_eq!(out.iter().map(|c| c.latency_ns).collect::<Vec<_>>(), vec![25, 25]);
        out.clear();
        // By id, answered out of order.
        s.add(&mut conns[2], msg(&p, 2, MessageKind::Request, 100, 100, Some(7)), &mut out);
        s.add(&mut conns[2], msg(&p, 2, MessageKind::Request, 110, 110, Some(8)), &mut out);
        s.add(&mut conns[2], msg(&p, 2, MessageKind::Response, 150, 150, Some(8)), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].latency_ns, 40);
        out.clear();
        // The other one times out as a failed call.
        for c in &mut conns {
            s.expire(c, 100 + 1001, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].success, Some(false));
        out.clear();
        // A response with no request is counted, not invented.
        s.add(&mut conns[3], msg(&p, 3, MessageKind::Response, 1, 2, None), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.orphan_responses, 1);
        // Unanswered requests fail when the connection closes; the pending
        // list is bounded.
        for t in 0..3 {
            s.add(&mut conns[4], msg(&p, 4, MessageKind::Request, t, t, None), &mut out);
        }
        assert_eq!(out.len(), 1, "the oldest of three is dropped past the bound of two");
        s.close(std::mem::take(&mut conns[4]), &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|c| c.success == Some(false)));
    }
}
