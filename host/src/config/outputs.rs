//! Typed settings of the processors and flushers a config file names, read
//! from each entry's keys (unknown keys are errors, with a suggestion).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{closest, explain_serde_error, OutputEntry};

/// A flusher named in `flushers`.
#[derive(Debug, Clone, PartialEq)]
pub enum FlusherSettings {
    Stdout,
    File(FileSettings),
    Prometheus(PrometheusSettings),
    Kafka(KafkaSettings),
    Otlp(OtlpSettings),
}

pub const FLUSHERS: &[&str] =
    &["flusher_stdout", "flusher_file", "flusher_prometheus", "flusher_kafka", "flusher_otlp"];
pub const PROCESSORS: &[&str] = &["processor_default", "processor_filter_regex"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct FileSettings {
    /// File the JSON lines go to (created with its directory).
    pub file_path: PathBuf,
    /// Size at which the file is rotated.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` is the newest).
    #[serde(default = "default_max_files")]
    pub max_files: u32,
}

fn default_max_bytes() -> u64 {
    100 << 20
}
fn default_max_files() -> u32 {
    5
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PrometheusSettings {
    /// Address the `/metrics` endpoint listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Most label sets per metric; further ones fold into `call="other"`.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// A series no window has updated for this many windows of its kind
    /// (layer 4 or layer 7) is dropped, so the ones of connections long
    /// gone do not fill `MaxSeries`. 0: never.
    #[serde(default = "default_expire_windows")]
    pub expire_windows: u32,
    /// The windows' lengths in seconds, layer 4 then layer 7: the input's
    /// `Common.FlushOutL4Interval` and `FlushOutL7Interval`.
    #[serde(skip)]
    pub window_secs: [u64; 2],
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_max_series() -> usize {
    2000
}
fn default_expire_windows() -> u32 {
    10
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Records sent per produce request at most.
    #[serde(default = "default_batch")]
    pub batch_records: usize,
    /// Records buffered while the broker is unreachable; beyond, the oldest
    /// are dropped and counted.
    #[serde(default = "default_buffer")]
    pub buffer_records: usize,
    /// Seconds one produce attempt may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_batch() -> usize {
    500
}
fn default_buffer() -> usize {
    100_000
}
fn default_timeout() -> u64 {
    10
}

/// How `flusher_otlp` sends: the values of OpenTelemetry's
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct OtlpSettings {
    /// `http://HOST:PORT` of the receiver (an OpenTelemetry Collector).
    /// Default: `http://127.0.0.1:4317` for gRPC, `http://127.0.0.1:4318`
    /// for HTTP, where `/v1/metrics` is added unless a path is given.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Sent with every export (e.g. an API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Records turned into one export request at most.
    #[serde(default = "default_batch")]
    pub batch_records: usize,
    /// Records buffered while the receiver is unreachable; beyond, the
    /// oldest are dropped and counted.
    #[serde(default = "default_buffer")]
    pub buffer_records: usize,
    /// Seconds one export may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The windows' lengths in seconds, layer 4 then layer 7 (from
    /// `Common`): the start of each delta point.
    #[serde(skip)]
    pub window_secs: [u64; 2],
}

impl OtlpSettings {
    /// The URL exports go to: the endpoint, or the protocol's default, and
    /// for HTTP `/v1/metrics` when the endpoint has no path.
    pub fn url(&self) -> String {
        let base = match (self.endpoint.as_str(), self.protocol) {
            ("", OtlpProtocol::Grpc) => "http://127.0.0.1:4317",
            ("", OtlpProtocol::HttpProtobuf) => "http://127.0.0.1:4318",
            (e, _) => e,
        };
        let base = base.trim_end_matches('/');
        let has_path = base.split_once("://").is_some_and(|(_, rest)| rest.contains('/'));
        match self.protocol {
            OtlpProtocol::HttpProtobuf if !has_path => format!("{base}/v1/metrics"),
            _ => base.to_string(),
        }
    }

    /// Why the endpoint cannot be used, if it cannot.
    fn check(&self) -> Result<(), String> {
        let url = self.url();
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "Endpoint `{url}` must start with http:// (this flusher speaks plain HTTP/2 or HTTP/1.1; \
                 send to a collector on the node or in the cluster for TLS)"
            ));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
            return Err(format!("Endpoint `{url}` needs a host and a port (http://HOST:PORT)"));
        }
        for (k, v) in &self.headers {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("Headers: `{k}` is not a valid header name"));
            }
            if v.bytes().any(|b| b < 0x20 && b != b'\t') {
                return Err(format!("Headers: the value of `{k}` has control characters"));
            }
        }
        Ok(())
    }
}

/// A processor named in `processors`.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorSettings {
    /// Pass-through.
    Default,
    /// iLogtail's `processor_filter_regex`: keep a record only when every
    /// `Include` field matches its regex and no `Exclude` field matches.
    FilterRegex(FilterRegexSettings),
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct FilterRegexSettings {
    #[serde(default)]
    pub include: BTreeMap<String, String>,
    #[serde(default)]
    pub exclude: BTreeMap<String, String>,
}

fn keys<T: DeserializeOwned>(p: &OutputEntry, at: &str) -> Result<T, String> {
    let map: serde_yaml_ng::Mapping =
        p.options.iter().map(|(k, v)| (serde_yaml_ng::Value::String(k.clone()), v.clone())).collect();
    serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(map))
        .map_err(|e| format!("{at} ({}): {}", p.kind, explain_serde_error(&e.to_string())))
}

impl FlusherSettings {
    /// Read `flushers[index]`.
    pub fn from_entry(p: &OutputEntry, index: usize) -> Result<Self, String> {
        let at = format!("flushers[{index}]");
        Ok(match p.kind.as_str() {
            "flusher_stdout" => {
                keys::<NoKeys>(p, &at)?;
                Self::Stdout
            }
            "flusher_file" => Self::File(keys(p, &at)?),
            "flusher_prometheus" => Self::Prometheus(keys(p, &at)?),
            "flusher_kafka" => {
                let k: KafkaSettings = keys(p, &at)?;
                if k.brokers.is_empty() || k.topic.is_empty() {
                    return Err(format!("{at} (flusher_kafka): Brokers and Topic must not be empty"));
                }
                Self::Kafka(k)
            }
            "flusher_otlp" => {
                let o: OtlpSettings = keys(p, &at)?;
                o.check().map_err(|e| format!("{at} (flusher_otlp): {e}"))?;
                Self::Otlp(o)
            }
            other => return Err(unknown_type(&at, other, FLUSHERS)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdout => "flusher_stdout",
            Self::File(_) => "flusher_file",
            Self::Prometheus(_) => "flusher_prometheus",
            Self::Kafka(_) => "flusher_kafka",
            Self::Otlp(_) => "flusher_otlp",
        }
    }
}

impl ProcessorSettings {
    /// Read `processors[index]`.
    pub fn from_entry(p: &OutputEntry, index: usize) -> Result<Self, String> {
        let at = format!("processors[{index}]");
        Ok(match p.kind.as_str() {
            "processor_default" => {
                keys::<NoKeys>(p, &at)?;
                Self::Default
            }
            "processor_filter_regex" => {
                let s: FilterRegexSettings = keys(p, &at)?;
                for (field, re) in s.include.iter().chain(&s.exclude) {
                    regex::Regex::new(re).map_err(|e| format!("{at} (processor_filter_regex): `{field}`: {e}"))?;
                }
                Self::FilterRegex(s)
            }
            other => return Err(unknown_type(&at, other, PROCESSORS)),
        })
    }
}

fn unknown_type(at: &str, kind: &str, known: &[&str]) -> String {
    let mut msg = format!("{at}.Type `{kind}` is not supported (supported: {})", known.join(", "));
    if let Some(near) = closest(kind, known.iter().copied()) {
        msg.push_str(&format!("; did you mean `{near}`?"));
    }
    msg
}
