//! The Prometheus text exposition format, as the Prometheus flusher and the
//! admin endpoint's `/metrics` both write it, and the daemon's health
//! counters under its conventions: cumulative counts are counters named
//! `_total`, levels (connections now, memory) are gauges.

use std::fmt::Write as _;

use crate::records::Record;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Health fields that are levels; every other health field counts since
/// the daemon started.
const GAUGES: [&str; 7] = [
    "connections",
    "l7_connections",
    "plugins_quarantined",
    "rss_bytes",
    "tls_libraries",
    "tls_libraries_failed",
    "tls_calls_in_progress",
];

/// Whether a health field is a level (a gauge) rather than a count.
pub fn is_gauge(field: &str) -> bool {
    GAUGES.contains(&field)
}

/// `# HELP` and `# TYPE` of a family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the format wants.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The daemon's own numbers from a health record (`Common.Tags` ride on
/// the record too, as text, and are not metrics).
pub fn health_values(r: &Record) -> Vec<(String, u64)> {
    let mut seen = std::collections::HashSet::new();
    r.fields
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.as_int()?)))
        .filter(|(k, _)| k != "__time__" && seen.insert(k.clone()))
        .collect()
}

/// Health values as `wirelens_health_<field>_total` counters and
/// `wirelens_health_<field>` gauges.
pub fn write_health(out: &mut String, values: &[(String, u64)]) {
    for (field, v) in values {
        let (name, kind) = if is_gauge(field) {
            (format!("wirelens_health_{field}"), "gauge")
        } else {
            (format!("wirelens_health_{field}_total"), "counter")
        };
        header(out, &name, kind, &format!("The health record's `{field}` (see the README's health table)."));
        let _ = writeln!(out, "{name} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_counters_and_levels_are_gauges() {
        let mut r = Record::new(crate::records::Kind::Health);
        r.push("kernel_lost", 4u64);
        r.push("connections", 7u64);
        r.push_named("cluster-id", "7"); // a tag: not a metric
        r.push("__time__", 1u64);
        let mut out = String::new();
        write_health(&mut out, &health_values(&r));
        assert!(
            out.contains("# TYPE wirelens_health_kernel_lost_total counter\nwirelens_health_kernel_lost_total 4"),
            "{out}"
        );
        assert!(out.contains("# TYPE wirelens_health_connections gauge\nwirelens_health_connections 7"), "{out}");
        assert!(!out.contains("cluster") && !out.contains("__time__"), "{out}");
    }
}
