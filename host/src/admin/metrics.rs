//! `/metrics` of the admin endpoint: the build, readiness, the health
//! record's values (counters `_total`, levels as gauges) and each plugin's
//! calls, failures by kind and quarantine, by plugin name and version.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{lock, plugin_rows, Shared};
use crate::outputs::exposition::{escape, header, write_health};

pub(super) fn render(shared: &Shared) -> String {
    let mut out = String::new();
    header(&mut out, "wirelens_build_info", "gauge", "The running build: version and commit.");
    let _ = writeln!(
        out,
        "wirelens_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        escape(crate::COMMIT)
    );
    header(&mut out, "wirelens_ready", "gauge", "1 once capture is attached and plugins are loaded.");
    let _ = writeln!(out, "wirelens_ready {}", u8::from(lock(&shared.starting).is_empty()));
    header(&mut out, "wirelens_uptime_seconds", "gauge", "Seconds since the daemon started.");
    let _ = writeln!(out, "wirelens_uptime_seconds {:.3}", shared.started.elapsed().as_secs_f64());
    write_health(&mut out, &lock(&shared.health));

    let rows = plugin_rows(shared);
    let labels = |name: &str, version: &str| format!("plugin=\"{}\",version=\"{}\"", escape(name), escape(version));
    header(&mut out, "wirelens_plugin_info", "gauge", "Each plugin the daemon knows, with its source and state.");
    for r in &rows {
        let e = &r.entry;
        let _ = writeln!(
            out,
            "wirelens_plugin_info{{{},wit_version=\"{}\",source=\"{}\",state=\"{}\"}} 1",
            labels(&e.name, &e.version),
            escape(&e.wit_version),
            escape(&e.source),
            escape(&e.state)
        );
    }
    let loaded: Vec<_> =
        rows.iter().filter_map(|r| r.loaded.as_ref().map(|p| (labels(&r.entry.name, &r.entry.version), p))).collect();
    header(&mut out, "wirelens_plugin_calls_total", "counter", "Calls into the plugin's sandbox.");
    for (l, p) in &loaded {
        let _ = writeln!(out, "wirelens_plugin_calls_total{{{l}}} {}", p.stats.calls.load(Ordering::Relaxed));
    }
    header(&mut out, "wirelens_plugin_failures_total", "counter", "Plugin calls that failed, by kind.");
    for (l, p) in &loaded {
        let s = &p.stats;
        for (kind, n) in [
            ("timeout", &s.timeouts),
            ("memory_limit", &s.memory_limits),
            ("trap", &s.traps),
            ("bad_output", &s.bad_outputs),
        ] {
            let _ =
                writeln!(out, "wirelens_plugin_failures_total{{{l},kind=\"{kind}\"}} {}", n.load(Ordering::Relaxed));
        }
    }
    header(&mut out, "wirelens_plugin_quarantines_total", "counter", "Times the plugin was quarantined.");
    for (l, p) in &loaded {
        let _ =
            writeln!(out, "wirelens_plugin_quarantines_total{{{l}}} {}", p.stats.quarantines.load(Ordering::Relaxed));
    }
    header(&mut out, "wirelens_plugin_quarantined", "gauge", "1 while the plugin is quarantined.");
    for (l, p) in &loaded {
        let _ = writeln!(out, "wirelens_plugin_quarantined{{{l}}} {}", u8::from(p.quarantined_until().is_some()));
    }
    out
}
