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
}

pub const FLUSHERS: &[&str] = &["flusher_stdout", "flusher_file", "flusher_prometheus", "flusher_kafka"];
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
            other => return Err(unknown_type(&at, other, FLUSHERS)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdout => "flusher_stdout",
            Self::File(_) => "flusher_file",
            Self::Prometheus(_) => "flusher_prometheus",
            Self::Kafka(_) => "flusher_kafka",
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
