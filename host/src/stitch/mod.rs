//! Stitching: requests paired with responses per connection (first in,
//! first out; by id where the protocol has one), with latency from the
//! request's first byte to the response's last byte, and requests left
//! unanswered reported as failed after a timeout.

mod by_id;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use by_id::ById;

use crate::protocols::{FieldSet, LoadedPlugin, MessageKind, Parsed};

/// One layer-7 call.
#[derive(Clone, Debug)]
pub struct Call {
    /// The request's fields (or the one-way message's)...
    pub request: Rc<FieldSet>,
    /// ... and the response's, when it was paired.
    pub response: Option<Rc<FieldSet>>,
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

/// A request waiting for its response: only what the call needs (a deep
/// pipeline keeps tens of thousands of these per connection).
struct Waiting {
    request: Rc<FieldSet>,
    start_ns: u64,
    size: u64,
}

impl Waiting {
    fn of(m: Parsed) -> Self {
        Self { request: m.fields, start_ns: m.start_ns, size: m.size }
    }
}

/// One connection's requests waiting for their responses (kept by the
/// caller with the rest of the connection's state: no lookup per message).
#[derive(Default)]
pub struct Pending {
    fifo: VecDeque<Waiting>,
    by_id: ById<Waiting>,
    /// Requests given up past the bound, oldest first, whose responses are
    /// still to come: each takes the next response in order, so the rest
    /// stay paired with their own (and when the last was sent).
    skipped: u64,
    skipped_newest_ns: u64,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.by_id.is_empty() && self.skipped == 0
    }

    fn len(&self) -> usize {
        self.fifo.len() + self.by_id.len()
    }
}

/// Pairing rules and what they count.
pub struct Stitcher {
    /// Most requests waiting per connection, and on all connections
    /// together: past either bound the oldest of the connection is given up.
    max_pending: usize,
    max_pending_total: usize,
    waiting: usize,
    /// Requests unanswered for this long are failed calls.
    timeout_ns: u64,
    /// Responses with no request (capture started mid-call, or lost bytes).
    pub orphan_responses: u64,
    /// Requests given up past a bound: counted as calls of unknown outcome.
    pub pending_evicted: u64,
}

impl Stitcher {
    pub fn new(max_pending: usize, max_pending_total: usize, timeout_ns: u64) -> Self {
        Self { max_pending, max_pending_total, waiting: 0, timeout_ns, orphan_responses: 0, pending_evicted: 0 }
    }

    /// Feed one parsed message of the connection whose requests wait in
    /// `pending`; completed calls go to `out`. True for a request paired in
    /// order made while an earlier one still waits: the client pipelines.
    pub fn add(&mut self, pending: &mut Pending, m: Parsed, out: &mut Vec<Call>) -> bool {
        match m.kind {
            MessageKind::Request => {
                if pending.len() >= self.max_pending || self.waiting >= self.max_pending_total {
                    self.evict_oldest(pending, out);
                }
                self.waiting += 1;
                match m.pair_id {
                    Some(id) => {
                        if let Some(old) = pending.by_id.insert(id, Waiting::of(m)) {
                            // The id was reused: the old one got no answer.
                            self.waiting -= 1;
                            out.push(unanswered(old));
                        }
                        false
                    }
                    None => {
                        // (A request given up past the bound still waits
                        // for its answer.)
                        let pipelined = !pending.fifo.is_empty() || pending.skipped > 0;
                        pending.fifo.push_back(Waiting::of(m));
                        pipelined
                    }
                }
            }
            MessageKind::Response => {
                let req = match m.pair_id {
                    Some(id) => pending.by_id.remove(id),
                    None if pending.skipped > 0 => {
                        // The answer to a request given up: already counted.
                        pending.skipped -= 1;
                        return false;
                    }
                    None => pending.fifo.pop_front(),
                };
                match req {
                    Some(req) => {
                        self.waiting -= 1;
                        out.push(pair(req, m))
                    }
                    None => self.orphan_responses += 1,
                }
                false
            }
            MessageKind::Oneway => {
                out.push(single(m));
                false
            }
        }
    }

    /// Past a bound: the oldest request becomes a call of unknown outcome
    /// (its answer is still to come, so it is no failure) and its response,
    /// when it comes, is passed over.
    fn evict_oldest(&mut self, pending: &mut Pending, out: &mut Vec<Call>) {
        let old = match pending.fifo.pop_front() {
            Some(old) => {
                pending.skipped += 1;
                pending.skipped_newest_ns = old.start_ns;
                old
            }
            None => {
                let Some(id) = pending.by_id.iter().min_by_key(|(_, w)| w.start_ns).map(|(id, _)| id) else {
                    return;
                };
                pending.by_id.remove(id).expect("just seen")
            }
        };
        self.waiting -= 1;
        self.pending_evicted += 1;
        out.push(Call { success: None, ..unanswered(old) });
    }

    /// The connection is gone: its unanswered requests are failed calls.
    pub fn close(&mut self, pending: Pending, out: &mut Vec<Call>) {
        self.waiting -= pending.len();
        out.extend(pending.fifo.into_iter().chain(pending.by_id.into_values()).map(unanswered));
    }

    /// Requests older than the timeout (by kernel clock `now_ns`) fail.
    pub fn expire(&mut self, pending: &mut Pending, now_ns: u64, out: &mut Vec<Call>) {
        let timeout = self.timeout_ns;
        let old = |w: &Waiting| now_ns.saturating_sub(w.start_ns) > timeout;
        if pending.skipped > 0 && now_ns.saturating_sub(pending.skipped_newest_ns) > timeout {
            pending.skipped = 0;
        }
        while pending.fifo.front().is_some_and(old) {
            self.waiting -= 1;
            out.push(unanswered(pending.fifo.pop_front().unwrap()));
        }
        let waiting = &mut self.waiting;
        pending.by_id.take_where(old, |w| {
            *waiting -= 1;
            out.push(unanswered(w));
        });
    }
}

fn pair(req: Waiting, resp: Parsed) -> Call {
    Call {
        request: req.request,
        response: Some(resp.fields),
        latency_ns: resp.end_ns.saturating_sub(req.start_ns),
        req_bytes: req.size,
        resp_bytes: resp.size,
        success: (!resp.unseen).then_some(resp.success),
    }
}

/// A request that never got its response: a failed call.
fn unanswered(req: Waiting) -> Call {
    Call {
        request: req.request,
        response: None,
        latency_ns: 0,
        req_bytes: req.size,
        resp_bytes: 0,
        success: Some(false),
    }
}

fn single(m: Parsed) -> Call {
    Call {
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
            fields: FieldSets::default().intern_pairs(p, &[(1, value)]),
        }
    }

    #[test]
    fn fifo_by_id_and_timeouts() {
        let p = http();
        let mut s = Stitcher::new(2, 100, 1000);
        let mut conns: Vec<Pending> = (0..5).map(|_| Pending::default()).collect();
        let mut out = Vec::new();
        // Pipelined: two requests, then their responses in order.
        assert!(!s.add(&mut conns[1], msg(&p, 1, MessageKind::Request, 10, 11, None), &mut out));
        assert!(s.add(&mut conns[1], msg(&p, 1, MessageKind::Request, 20, 21, None), &mut out), "pipelined");
        s.add(&mut conns[1], msg(&p, 1, MessageKind::Response, 30, 35, None), &mut out);
        s.add(&mut conns[1], msg(&p, 1, MessageKind::Response, 40, 45, None), &mut out);
        assert_eq!(out.iter().map(|c| c.latency_ns).collect::<Vec<_>>(), vec![25, 25]);
        out.clear();
        // By id, answered out of order.
        s.add(&mut conns[2], msg(&p, 2, MessageKind::Request, 100, 100, Some(7)), &mut out);
        assert!(!s.add(&mut conns[2], msg(&p, 2, MessageKind::Request, 110, 110, Some(8)), &mut out), "by id");
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
        // Unanswered requests fail when the connection closes.
        for t in 0..2 {
            s.add(&mut conns[4], msg(&p, 4, MessageKind::Request, t, t, None), &mut out);
        }
        s.close(std::mem::take(&mut conns[4]), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|c| c.success == Some(false)));
        assert_eq!(s.waiting, 0, "nothing is waiting any more");
    }

    /// Past the bound the oldest request is given up as a call of unknown
    /// outcome; its response is passed over, so the others keep their own.
    #[test]
    fn past_the_bound_the_rest_stay_paired() {
        let p = http();
        let mut out = Vec::new();
        for (per_conn, total) in [(2, 100), (100, 2)] {
            let mut s = Stitcher::new(per_conn, total, 1000);
            let mut c = Pending::default();
            for t in 0..4 {
                s.add(&mut c, msg(&p, 1, MessageKind::Request, t * 10, t * 10, None), &mut out);
            }
            assert_eq!(out.iter().map(|c| c.success).collect::<Vec<_>>(), vec![None, None]);
            assert_eq!(s.pending_evicted, 2);
            out.clear();
            for t in 0..4 {
                s.add(&mut c, msg(&p, 1, MessageKind::Response, 100 + t, 100 + t, None), &mut out);
            }
            // Requests sent at 20 and 30 answered at 102 and 103.
            assert_eq!(out.iter().map(|c| c.latency_ns).collect::<Vec<_>>(), vec![82, 73]);
            assert!(out.iter().all(|c| c.success == Some(true)));
            assert_eq!(s.orphan_responses, 0);
            assert!(c.is_empty());
            out.clear();
        }
        // Passed-over answers that never come stop being awaited with the
        // timeout, so later answers are not swallowed.
        let mut s = Stitcher::new(1, 100, 1000);
        let mut c = Pending::default();
        s.add(&mut c, msg(&p, 1, MessageKind::Request, 0, 0, None), &mut out);
        s.add(&mut c, msg(&p, 1, MessageKind::Request, 5, 5, None), &mut out);
        s.expire(&mut c, 2000, &mut out);
        out.clear();
        s.add(&mut c, msg(&p, 1, MessageKind::Request, 2100, 2100, None), &mut out);
        s.add(&mut c, msg(&p, 1, MessageKind::Response, 2200, 2200, None), &mut out);
        assert_eq!(out.iter().map(|c| c.latency_ns).collect::<Vec<_>>(), vec![100]);
    }
}
