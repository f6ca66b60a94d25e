//! Output records, typed until an output encodes them: a record has a kind
//! and ordered fields whose values are text, integers, a remote endpoint or
//! a latency distribution. JSON writers turn them into iLogtail's shape
//! (every value a string; the remote endpoint as iLogtail's `remote_info`
//! JSON string; the distribution as its percentile fields); metric
//! flushers read the numbers and the distribution as they are.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use crate::aggregate::sketch::Sketch;

/// What a record reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Layer-4 statistics per process and remote endpoint.
    Statistics,
    /// Layer-7 calls.
    Protocols,
    /// The daemon itself.
    Health,
}

impl Kind {
    /// The record's `type`, as outputs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Statistics => "statistics",
            Kind::Protocols => "protocols",
            Kind::Health => "health",
        }
    }
}

/// A field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(Arc<str>),
    /// Text that says what a call does (the plugin's call field: HTTP's
    /// method, Redis's command): outputs that label calls use it.
    Call(Arc<str>),
    Int(u64),
    /// The other end of a connection: written as iLogtail's `remote_info`,
    /// a JSON object in a string (`remote_ip`, `remote_port`, `remote_type`).
    Remote {
        ip: IpAddr,
        port: u16,
        kind: &'static str,
    },
    /// Latency of a record's calls (ns): written as `latency_p50_ns`,
    /// `latency_p90_ns`, `latency_p99_ns`, `latency_max_ns`; metric outputs
    /// read its buckets.
    Latency(Box<Sketch>),
}

impl Value {
    /// The value as text (a latency distribution has none: it writes fields
    /// of its own).
    pub fn text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Value::Text(t) | Value::Call(t) => Cow::Borrowed(t),
            Value::Int(n) => Cow::Owned(n.to_string()),
            Value::Remote { ip, port, kind } => Cow::Owned(remote_info(*ip, *port, kind)),
            Value::Latency(_) => return None,
        })
    }

    pub fn as_int(&self) -> Option<u64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(Arc::from(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(Arc::from(s))
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Text(Arc::from(s.as_str()))
    }
}

impl From<Arc<str>> for Value {
    fn from(s: Arc<str>) -> Self {
        Value::Text(s)
    }
}

impl From<&Arc<str>> for Value {
    fn from(s: &Arc<str>) -> Self {
        Value::Text(s.clone())
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Value::Int(n as u64)
            }
        }
    )*};
}
int_value!(u64, u32, usize);

/// iLogtail's `remote_info`: a JSON object serialised into a string.
pub fn remote_info(ip: IpAddr, port: u16, remote_type: &str) -> String {
    let ip = if ip.is_unspecified() { String::new() } else { ip.to_string() };
    serde_json::json!({"remote_ip": ip, "remote_port": port.to_string(), "remote_type": remote_type}).to_string()
}

/// One record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub kind: Kind,
    pub fields: Vec<(Cow<'static, str>, Value)>,
}

impl Record {
    pub fn new(kind: Kind) -> Self {
        Self { kind, fields: Vec::with_capacity(16) }
    }

    /// Add a field whose name is known in advance.
    pub fn push(&mut self, name: &'static str, value: impl Into<Value>) {
        self.fields.push((Cow::Borrowed(name), value.into()));
    }

    /// Add a field whose name comes from elsewhere (a plugin, `Common.Tags`).
    pub fn push_named(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.push((Cow::Owned(name.to_string()), value.into()));
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A field as text (the way JSON writes it), including `type` and the
    /// latency percentiles.
    pub fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        if name == "type" {
            return Some(Cow::Borrowed(self.kind.as_str()));
        }
        if let Some(v) = self.value(name) {
            return v.text();
        }
        self.strings().find(|(k, _)| *k == name).map(|(_, v)| Cow::Owned(v.into_owned()))
    }

    pub fn int(&self, name: &str) -> Option<u64> {
        self.value(name).and_then(Value::as_int)
    }

    /// The fields as JSON writes them, in order, `type` first.
    pub fn strings(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
        std::iter::once(("type", Cow::Borrowed(self.kind.as_str()))).chain(self.fields.iter().flat_map(|(k, v)| {
            let expanded: Vec<(&str, Cow<'_, str>)> = match v {
                Value::Latency(s) => vec![
                    ("latency_p50_ns", Cow::Owned(s.quantile(0.5).to_string())),
                    ("latency_p90_ns", Cow::Owned(s.quantile(0.9).to_string())),
                    ("latency_p99_ns", Cow::Owned(s.quantile(0.99).to_string())),
                    ("latency_max_ns", Cow::Owned(s.max().to_string())),
                ],
                other => vec![(k.as_ref(), other.text().unwrap_or_default())],
            };
            expanded
        }))
    }

    /// The JSON object, fields in order, every value a string.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(64 * self.fields.len());
        s.push('{');
        for (i, (k, v)) in self.strings().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::to_string(k).expect("strings serialise"));
            s.push(':');
            s.push_str(&serde_json::to_string(&v).expect("strings serialise"));
        }
        s.push('}');
        s
    }
}

/// Write records as JSON lines and flush.
pub fn write_lines(out: &mut impl Write, records: &[Record]) -> std::io::Result<()> {
    for r in records {
        writeln!(out, "{}", r.to_json())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_ilogtails_all_string_shape() {
        let mut r = Record::new(Kind::Statistics);
        r.push("remote_info", Value::Remote { ip: "1.2.3.4".parse().unwrap(), port: 80, kind: "server" });
        r.push("send_bytes", 42u64);
        r.push("command", Value::Call(Arc::from("GET")));
        let mut sketch = Sketch::default();
        sketch.add(1000);
        r.push("latency", Value::Latency(Box::new(sketch)));
        r.push_named("team", "a\"b");
        let json = r.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["type"], "statistics");
        assert_eq!(v["remote_info"], r#"{"remote_ip":"1.2.3.4","remote_port":"80","remote_type":"server"}"#);
        assert_eq!((v["send_bytes"].as_str(), v["command"].as_str()), (Some("42"), Some("GET")));
        assert!(v["latency_p50_ns"].as_str().unwrap().parse::<u64>().unwrap() > 0);
        assert_eq!(v["latency_max_ns"], "1000");
        assert_eq!(v["team"], "a\"b");
        assert!(json.starts_with(r#"{"type":"statistics","remote_info":"#), "{json}");
        assert_eq!(r.int("send_bytes"), Some(42));
        assert_eq!(r.text("latency_max_ns").as_deref(), Some("1000"));
        assert_eq!(r.text("type").as_deref(), Some("statistics"));
    }
}
