//! Records as OTLP metrics, following OpenTelemetry's semantic conventions
//! where they name the thing (`process.pid`, `k8s.pod.name`,
//! `server.address`, `network.protocol.name`, `network.io.direction`,
//! `error.type`) and `wirelens.*` where they do not.
//!
//! - Each observed process is a resource (`service.name` is its executable's
//!   name); the daemon's own health is the resource `service.name=wirelens`.
//! - Window records are delta sums over their window: `wirelens.l4.bytes`
//!   and `wirelens.l4.packets` by direction; `wirelens.l7.calls`,
//!   `wirelens.l7.request.size` and `wirelens.l7.response.size`; and
//!   `wirelens.l7.duration`, an exponential histogram in ns whose buckets
//!   are the latency sketch's own (scale 5, see `aggregate::sketch`).
//! - Health counts are cumulative sums since the daemon started
//!   (`wirelens.health.<field>`); levels are gauges.
//!
//! Points of one request that share their resource, metric, attributes and
//! time are merged (a server's records differ by the client's ephemeral
//! port, which is not an attribute), so a receiver never sees two.

use std::collections::BTreeMap;
use std::net::IpAddr;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::aggregate::sketch::{Sketch, SCALE};
use crate::outputs::exposition::is_gauge;
use crate::records::{Kind, Record, Value};

/// An attribute value, ordered so points can be keyed by their attributes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

type Attrs = Vec<(String, Attr)>;

/// What a metric is, as OTLP types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    DeltaSum,
    CumulativeSum,
    Gauge,
    DeltaHistogram,
}

/// The metrics' fixed part: name, shape, unit, description.
type MetricId = (&'static str, Shape, &'static str, &'static str);

const L4_BYTES: MetricId = ("wirelens.l4.bytes", Shape::DeltaSum, "By", "Bytes sent and received on sockets.");
const L4_PACKETS: MetricId = ("wirelens.l4.packets", Shape::DeltaSum, "{call}", "Send and receive calls on sockets.");
const L7_CALLS: MetricId = ("wirelens.l7.calls", Shape::DeltaSum, "{call}", "Layer-7 calls (request and response).");
const L7_REQUEST: MetricId = ("wirelens.l7.request.size", Shape::DeltaSum, "By", "Bytes of the calls' requests.");
const L7_RESPONSE: MetricId = ("wirelens.l7.response.size", Shape::DeltaSum, "By", "Bytes of the calls' responses.");
const L7_DURATION: MetricId = (
    "wirelens.l7.duration",
    Shape::DeltaHistogram,
    "ns",
    "Layer-7 call latency, first request byte to last response byte.",
);

/// One point's value while points are merged.
enum Acc {
    Int(u64),
    Histogram { sketch: Sketch, sum_ns: u64 },
}

/// Everything about a point but its value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PointKey {
    resource: Attrs,
    metric: MetricId,
    health_field: Option<String>,
    attrs: Attrs,
    start_ns: u64,
    time_ns: u64,
}

/// Turns records into export requests.
pub struct Encoder {
    host_name: String,
    /// Window lengths (ns), layer 4 then layer 7.
    window_ns: [u64; 2],
    /// When the daemon started (ns since the epoch): the start of the
    /// cumulative health sums.
    started_ns: u64,
}

impl Encoder {
    pub fn new(window_secs: [u64; 2]) -> Self {
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let started_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self { host_name, window_ns: window_secs.map(|s| s.max(1) * 1_000_000_000), started_ns }
    }

    /// One request with the metrics of `records`.
    pub fn encode(&self, records: &[Record]) -> ExportMetricsServiceRequest {
        let mut points: BTreeMap<PointKey, Acc> = BTreeMap::new();
        for r in records {
            self.add(r, &mut points);
        }
        build(points)
    }

    fn add(&self, r: &Record, points: &mut BTreeMap<PointKey, Acc>) {
        let time_ns = r.int("__time__").unwrap_or(0).saturating_mul(1_000_000_000);
        let mut resource = Attrs::new();
        let mut attrs = Attrs::new();
        let mut role = "";
        let mut remote = None;
        for (name, value) in &r.fields {
            let name: &str = name;
            match (name, value) {
                ("_process_pid_", Value::Int(pid)) => resource.push(("process.pid".into(), Attr::Int(*pid as i64))),
                ("_process_cmd_", v) => {
                    let cmd = v.text().unwrap_or_default().into_owned();
                    let exe = executable_name(&cmd);
                    if !exe.is_empty() {
                        resource.push(("process.executable.name".into(), Attr::Str(exe.clone())));
                        resource.push(("service.name".into(), Attr::Str(exe)));
                    }
                    if !cmd.is_empty() {
                        resource.push(("process.command_line".into(), Attr::Str(cmd)));
                    }
                }
                ("_container_id_", v) => push_text(&mut resource, "container.id", v),
                ("_container_name_", v) => push_text(&mut resource, "k8s.container.name", v),
                ("_pod_name_", v) => push_text(&mut resource, "k8s.pod.name", v),
                ("_namespace_", v) => push_text(&mut resource, "k8s.namespace.name", v),
                ("_running_mode_", _) | ("__time__", _) | ("latency", _) => {}
                ("role", v) => role = if v.text().as_deref() == Some("server") { "server" } else { "client" },
                ("protocol", v) => push_text(&mut attrs, "network.protocol.name", v),
                ("socket_type", v) => push_text(&mut attrs, "wirelens.socket_type", v),
                ("tls", _) => attrs.push(("wirelens.tls".into(), Attr::Bool(true))),
                ("success", v) => {
                    let v = v.text().unwrap_or_default();
                    if v == "0" {
                        attrs.push(("error.type".into(), Attr::Str("_OTHER".into())));
                    }
                    let said = match v.as_ref() {
                        "1" => "true",
                        "0" => "false",
                        _ => "unknown",
                    };
                    attrs.push(("wirelens.success".into(), Attr::Str(said.into())));
                }
                (_, Value::Remote { ip, port, .. }) => remote = Some((*ip, *port)),
                (_, Value::Call(c)) => attrs.push(("wirelens.call".into(), Attr::Str(c.to_string()))),
                // Plugin fields and `Common.Tags`, by their own names.
                (_, Value::Text(t)) => attrs.push((name.to_string(), Attr::Str(t.to_string()))),
                // Numbers are the metrics, read below by kind.
                (_, Value::Int(_) | Value::Latency(_)) => {}
            }
        }
        if r.kind != Kind::Health {
            attrs.push(("wirelens.role".into(), Attr::Str(role.to_string())));
            if let Some((ip, port)) = remote {
                push_peer(&mut attrs, role, ip, port);
            }
        }
        if r.kind == Kind::Health {
            // The daemon describes itself.
            resource = vec![
                ("service.name".into(), Attr::Str("wirelens".into())),
                ("service.version".into(), Attr::Str(env!("CARGO_PKG_VERSION").into())),
                ("process.pid".into(), Attr::Int(i64::from(std::process::id()))),
            ];
        }
        if !self.host_name.is_empty() {
            resource.push(("host.name".into(), Attr::Str(self.host_name.clone())));
        }
        // Sorted once: every point of the record keys by them.
        resource.sort();
        attrs.sort();
        let mut point = |metric: MetricId, health_field: Option<String>, extra: Option<(&str, &str)>, start_ns, acc| {
            let mut attrs = attrs.clone();
            if let Some((k, v)) = extra {
                attrs.push((k.to_string(), Attr::Str(v.to_string())));
                attrs.sort();
            }
            let key = PointKey { resource: resource.clone(), metric, health_field, attrs, start_ns, time_ns };
            merge(points.entry(key).or_insert(Acc::Int(0)), acc);
        };
        match r.kind {
            Kind::Statistics => {
                let start = time_ns.saturating_sub(self.window_ns[0]);
                for (field, metric, direction) in [
                    ("send_bytes", L4_BYTES, "transmit"),
                    ("recv_bytes", L4_BYTES, "receive"),
                    ("send_packets", L4_PACKETS, "transmit"),
                    ("recv_packets", L4_PACKETS, "receive"),
                ] {
                    let n = r.int(field).unwrap_or(0);
                    point(metric, None, Some(("network.io.direction", direction)), start, Acc::Int(n));
                }
            }
            Kind::Protocols => {
                let start = time_ns.saturating_sub(self.window_ns[1]);
                for (field, metric) in
                    [("total_count", L7_CALLS), ("total_req_bytes", L7_REQUEST), ("total_resp_bytes", L7_RESPONSE)]
                {
                    point(metric, None, None, start, Acc::Int(r.int(field).unwrap_or(0)));
                }
                if let Some(Value::Latency(sketch)) = r.value("latency") {
                    let sum_ns = r.int("total_latency_ns").unwrap_or(0);
                    point(L7_DURATION, None, None, start, Acc::Histogram { sketch: (**sketch).clone(), sum_ns });
                }
            }
            Kind::Health => {
                let values = super::super::exposition::health_values(r);
                for (field, v) in values {
                    let (shape, start) =
                        if is_gauge(&field) { (Shape::Gauge, 0) } else { (Shape::CumulativeSum, self.started_ns) };
                    let metric: MetricId =
                        ("", shape, "1", "The health record's field (see the README's health table).");
                    point(metric, Some(field), None, start, Acc::Int(v));
                }
            }
        }
    }
}

fn push_text(attrs: &mut Attrs, key: &str, v: &Value) {
    if let Some(t) = v.text().filter(|t| !t.is_empty()) {
        attrs.push((key.to_string(), Attr::Str(t.into_owned())));
    }
}

/// The other end, as the conventions name it from this side: a client
/// talks to `server.address`/`server.port`; a server is talked to by
/// `client.address` (without the client's ephemeral port).
fn push_peer(attrs: &mut Attrs, role: &str, ip: IpAddr, port: u16) {
    if role == "server" {
        attrs.push(("client.address".into(), Attr::Str(ip.to_string())));
    } else {
        attrs.push(("server.address".into(), Attr::Str(ip.to_string())));
        attrs.push(("server.port".into(), Attr::Int(i64::from(port))));
    }
}

/// The program's name from a command line: the first word's last path part.
fn executable_name(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or_default();
    first.rsplit('/').next().unwrap_or_default().to_string()
}

fn merge(into: &mut Acc, add: Acc) {
    match (into, add) {
        (Acc::Int(a), Acc::Int(b)) => *a += b,
        (Acc::Histogram { sketch, sum_ns }, Acc::Histogram { sketch: s, sum_ns: n }) => {
            sketch.merge(&s);
            *sum_ns += n;
        }
        (slot @ Acc::Int(0), add) => *slot = add,
        // One key is one metric, so one shape: nothing else can meet.
        (_, _) => {}
    }
}

fn key_value(key: String, value: Attr) -> KeyValue {
    let value = match value {
        Attr::Str(s) => any_value::Value::StringValue(s),
        Attr::Int(i) => any_value::Value::IntValue(i),
        Attr::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue { key, value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn key_values(attrs: Attrs) -> Vec<KeyValue> {
    attrs.into_iter().map(|(k, v)| key_value(k, v)).collect()
}

/// Points, ordered by resource then metric, into the request's tree.
fn build(points: BTreeMap<PointKey, Acc>) -> ExportMetricsServiceRequest {
    let scope = InstrumentationScope {
        name: "wirelens".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let mut resource_metrics: Vec<ResourceMetrics> = Vec::new();
    let mut current: Option<Attrs> = None;
    for (key, acc) in points {
        if current.as_ref() != Some(&key.resource) {
            current = Some(key.resource.clone());
            resource_metrics.push(ResourceMetrics {
                resource: Some(Resource { attributes: key_values(key.resource.clone()), ..Default::default() }),
                scope_metrics: vec![ScopeMetrics { scope: Some(scope.clone()), ..Default::default() }],
                ..Default::default()
            });
        }
        let metrics = &mut resource_metrics.last_mut().expect("pushed above").scope_metrics[0].metrics;
        let (name, shape, unit, description) = key.metric;
        let name = match &key.health_field {
            Some(field) => format!("wirelens.health.{field}"),
            None => name.to_string(),
        };
        if metrics.last().is_none_or(|m| m.name != name) {
            metrics.push(Metric {
                name: name.clone(),
                unit: unit.into(),
                description: description.into(),
                data: Some(empty_data(shape)),
                ..Default::default()
            });
        }
        let data = metrics.last_mut().expect("pushed above").data.as_mut().expect("set above");
        let attributes = key_values(key.attrs);
        match (data, acc) {
            (Data::Sum(Sum { data_points, .. }) | Data::Gauge(Gauge { data_points }), Acc::Int(n)) => {
                data_points.push(NumberDataPoint {
                    attributes,
                    start_time_unix_nano: key.start_ns,
                    time_unix_nano: key.time_ns,
                    value: Some(number_data_point::Value::AsInt(n as i64)),
                    ..Default::default()
                })
            }
            (Data::ExponentialHistogram(h), Acc::Histogram { sketch, sum_ns }) => {
                h.data_points.push(histogram_point(attributes, key.start_ns, key.time_ns, &sketch, sum_ns))
            }
            _ => {}
        }
    }
    ExportMetricsServiceRequest { resource_metrics }
}

fn empty_data(shape: Shape) -> Data {
    let sum = |temporality: AggregationTemporality| {
        Data::Sum(Sum { data_points: Vec::new(), aggregation_temporality: temporality as i32, is_monotonic: true })
    };
    match shape {
        Shape::DeltaSum => sum(AggregationTemporality::Delta),
        Shape::CumulativeSum => sum(AggregationTemporality::Cumulative),
        Shape::Gauge => Data::Gauge(Gauge { data_points: Vec::new() }),
        Shape::DeltaHistogram => Data::ExponentialHistogram(ExponentialHistogram {
            data_points: Vec::new(),
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
    }
}

/// The sketch's buckets as they are: contiguous counts from the lowest
/// non-empty index (the sketch's bucket factor is this scale's base).
fn histogram_point(
    attributes: Vec<KeyValue>,
    start_ns: u64,
    time_ns: u64,
    sketch: &Sketch,
    sum_ns: u64,
) -> ExponentialHistogramDataPoint {
    let buckets: Vec<(i64, u64)> = sketch.exponential_buckets().collect();
    let positive = buckets.first().map(|&(first, _)| {
        let last = buckets.last().expect("not empty").0;
        let mut counts = vec![0u64; (last - first + 1) as usize];
        for (i, n) in &buckets {
            counts[(i - first) as usize] = *n;
        }
        Buckets { offset: first as i32, bucket_counts: counts }
    });
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start_ns,
        time_unix_nano: time_ns,
        count: sketch.count(),
        sum: Some(sum_ns as f64),
        scale: SCALE,
        zero_count: 0,
        positive,
        max: Some(sketch.max() as f64),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn l7(port: u16, count: u64, latencies: &[u64]) -> Record {
        let mut r = Record::new(Kind::Protocols);
        r.push("_process_pid_", 42u64);
        r.push("_process_cmd_", "/usr/bin/redis-server *:6379");
        r.push("_running_mode_", "host");
        r.push("protocol", "redis");
        r.push_named("command", Value::Call("GET".into()));
        r.push("success", "1");
        r.push("role", "server");
        r.push("remote_info", Value::Remote { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), port, kind: "client" });
        r.push("total_count", count);
        r.push("total_latency_ns", latencies.iter().sum::<u64>());
        r.push("total_req_bytes", 10 * count);
        r.push("total_resp_bytes", 20 * count);
        let mut s = Sketch::default();
        latencies.iter().for_each(|&v| s.add(v));
        r.push("latency", Value::Latency(Box::new(s)));
        r.push("__time__", 100u64);
        r
    }

    fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        kvs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_servers_records_merge_across_client_ports_with_exact_buckets() {
        let req = Encoder::new([1, 2]).encode(&[l7(50_001, 2, &[1000, 1024]), l7(50_002, 1, &[1_000_000])]);
        assert_eq!(req.resource_metrics.len(), 1);
        let rm = &req.resource_metrics[0];
        let res = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(res, "process.pid"), Some(&any_value::Value::IntValue(42)));
        assert_eq!(attr(res, "service.name"), Some(&any_value::Value::StringValue("redis-server".into())));
        let metrics = &rm.scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["wirelens.l7.calls", "wirelens.l7.duration", "wirelens.l7.request.size", "wirelens.l7.response.size"]
        );
        let Some(Data::Sum(calls)) = &metrics[0].data else { panic!("calls is a sum") };
        assert_eq!(calls.data_points.len(), 1, "the two client ports are one point");
        let p = &calls.data_points[0];
        assert_eq!(p.value, Some(number_data_point::Value::AsInt(3)));
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (98_000_000_000, 100_000_000_000));
        assert_eq!(attr(&p.attributes, "client.address"), Some(&any_value::Value::StringValue("127.0.0.1".into())));
        assert_eq!(attr(&p.attributes, "wirelens.call"), Some(&any_value::Value::StringValue("GET".into())));
        assert!(attr(&p.attributes, "server.port").is_none() && attr(&p.attributes, "error.type").is_none());
        let Some(Data::ExponentialHistogram(h)) = &metrics[1].data else { panic!("duration is a histogram") };
        let h = &h.data_points[0];
        assert_eq!((h.count, h.sum, h.scale, h.max), (3, Some(1_002_024.0), 5, Some(1_000_000.0)));
        let b = h.positive.as_ref().unwrap();
        // 1000 ns and 1024 ns share (2^(318/32), 2^(319/32)]... 1000 is in
        // floor(32*log2(1000)) = 318, 1024 = 2^10 tops bucket 319.
        assert_eq!(b.offset, 318);
        assert_eq!(b.bucket_counts.iter().sum::<u64>(), 3);
        assert_eq!((b.bucket_counts[0], b.bucket_counts[1], *b.bucket_counts.last().unwrap()), (1, 1, 1));
        assert_eq!(b.bucket_counts.len(), 637 - 318 + 1);
    }

    #[test]
    fn health_counts_are_cumulative_and_levels_gauges() {
        let mut r = Record::new(Kind::Health);
        r.push("kernel_lost", 4u64);
        r.push("connections", 7u64);
        r.push("__time__", 100u64);
        let req = Encoder::new([1, 1]).encode(&[r]);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let kinds: Vec<(&str, bool)> =
            metrics.iter().map(|m| (m.name.as_str(), matches!(m.data, Some(Data::Gauge(_))))).collect();
        assert_eq!(kinds, [("wirelens.health.kernel_lost", false), ("wirelens.health.connections", true)]);
        let Some(Data::Sum(s)) = &metrics[0].data else { panic!("kernel_lost is a sum") };
        assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
    }
}
