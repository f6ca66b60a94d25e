//! Output records: ordered string fields, written as one JSON object per
//! line (the seed's shape: every value a string).

use std::fmt::Display;
use std::io::Write;

/// One record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub fields: Vec<(String, String)>,
    /// For layer-7 records: how many calls took at most each of
    /// [`LATENCY_BOUNDS_NS`] (cumulative). Not part of the JSON: metric
    /// flushers turn it into histograms.
    pub latency_buckets: Option<Vec<u64>>,
}

/// Upper bounds of the latency histogram buckets, in nanoseconds.
pub const LATENCY_BOUNDS_NS: [u64; 18] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

impl Record {
    /// A record of this `type`.
    pub fn new(kind: &str) -> Self {
        let mut r = Self::default();
        r.push("type", kind);
        r
    }

    pub fn push(&mut self, key: &str, value: impl Display) {
        self.fields.push((key.to_string(), value.to_string()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The JSON object, fields in order.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(64 * self.fields.len());
        s.push('{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::to_string(k).expect("strings serialise"));
            s.push(':');
            s.push_str(&serde_json::to_string(v).expect("strings serialise"));
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
    fn json_keeps_order_and_escapes() {
        let mut r = Record::new("statistics");
        r.push("remote_info", r#"{"remote_ip":"1.2.3.4"}"#);
        r.push("send_bytes", 42u64);
        assert_eq!(
            r.to_json(),
            r#"{"type":"statistics","remote_info":"{\"remote_ip\":\"1.2.3.4\"}","send_bytes":"42"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["send_bytes"], "42");
    }
}
