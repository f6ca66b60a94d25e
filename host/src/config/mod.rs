//! Configuration: iLogtail's shape (`enable`, `inputs`, `processors`,
//! `flushers`) with the `observer_ilogtail_network_v1` input's `Common` and
//! `EBPF` keys and their defaults, plus wirelens' own `Wirelens` section.
//! YAML or JSON (JSON is YAML). Unknown keys and bad values are errors that
//! name the key and the file.
//!
//! The ground floor: every stage reads its settings from here, and this
//! module imports none of them. `outputs.rs` reads the processors' and
//! flushers' keys, `suggest.rs` turns serde's errors into ones that suggest
//! the near miss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

mod outputs;
mod suggest;

pub use outputs::{
    FileSettings, FilterRegexSettings, FlusherSettings, KafkaSettings, OtlpProtocol, OtlpSettings, ProcessorSettings,
    PrometheusSettings, FLUSHERS, PROCESSORS,
};
pub use suggest::{closest, explain_serde_error};

/// A whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default = "yes")]
    pub enable: bool,
    pub inputs: Vec<Input>,
    #[serde(default)]
    pub processors: Vec<OutputEntry>,
    #[serde(default)]
    pub flushers: Vec<OutputEntry>,
}

/// An entry of `processors` or `flushers`: its `Type` and its own keys.
#[derive(Debug, Clone, Deserialize)]
pub struct OutputEntry {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_yaml_ng::Value>,
}

/// The network observer input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Common", default)]
    pub common: Common,
    #[serde(rename = "EBPF", default)]
    pub ebpf: Ebpf,
    #[serde(rename = "Wirelens", default)]
    pub wirelens: Wirelens,
}

/// A flag iLogtail's document types as a number: `true`/`false` or `1`/`0`.
/// Equal by meaning (`1` is `true`), written as a boolean.
#[derive(Debug, Clone, Copy)]
pub enum Flag {
    Bool(bool),
    Num(i64),
}

impl Flag {
    pub fn on(self) -> bool {
        match self {
            Flag::Bool(b) => b,
            Flag::Num(n) => n != 0,
        }
    }
}

impl PartialEq for Flag {
    fn eq(&self, other: &Self) -> bool {
        self.on() == other.on()
    }
}

impl Serialize for Flag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(self.on())
    }
}

/// By hand rather than `#[serde(untagged)]`, whose error ("data did not
/// match any variant of untagged enum") does not say what is accepted.
impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true/false or 1/0")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Flag, E> {
                Ok(Flag::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Flag, E> {
                Ok(Flag::Num(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Flag, E> {
                i64::try_from(n).map(Flag::Num).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
pub struct Common {
    /// Seconds between layer-4 records.
    pub flush_out_l4_interval: u64,
    /// Seconds between layer-7 records.
    pub flush_out_l7_interval: u64,
    /// Seconds between container metadata refreshes.
    pub flush_meta_interval: u64,
    /// Seconds between listening-socket (sock_diag) refreshes.
    pub flush_netlink_interval: u64,
    /// Percent of connections observed.
    pub sampling: u32,
    pub protocol_process: Flag,
    pub drop_unix_socket: Flag,
    pub drop_local_connections: Flag,
    pub drop_unknown_socket: Flag,
    /// Protocols to parse; empty means all.
    pub include_protocols: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub include_container_labels: BTreeMap<String, String>,
    pub exclude_container_labels: BTreeMap<String, String>,
    #[serde(rename = "IncludeK8sLabels")]
    pub include_k8s_labels: BTreeMap<String, String>,
    #[serde(rename = "ExcludeK8sLabels")]
    pub exclude_k8s_labels: BTreeMap<String, String>,
    pub include_envs: BTreeMap<String, String>,
    pub exclude_envs: BTreeMap<String, String>,
    pub include_cmd_regex: String,
    pub exclude_cmd_regex: String,
    pub include_container_name_regex: String,
    pub exclude_container_name_regex: String,
    pub include_pod_name_regex: String,
    pub exclude_pod_name_regex: String,
    pub include_namespace_name_regex: String,
    pub exclude_namespace_name_regex: String,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            flush_out_l4_interval: 15,
            flush_out_l7_interval: 60,
            flush_meta_interval: 30,
            flush_netlink_interval: 10,
            sampling: 100,
            protocol_process: Flag::Bool(true),
            drop_unix_socket: Flag::Bool(true),
            drop_local_connections: Flag::Bool(true),
            drop_unknown_socket: Flag::Bool(true),
            include_protocols: vec![],
            tags: BTreeMap::new(),
            include_container_labels: BTreeMap::new(),
            exclude_container_labels: BTreeMap::new(),
            include_k8s_labels: BTreeMap::new(),
            exclude_k8s_labels: BTreeMap::new(),
            include_envs: BTreeMap::new(),
            exclude_envs: BTreeMap::new(),
            include_cmd_regex: String::new(),
            exclude_cmd_regex: String::new(),
            include_container_name_regex: String::new(),
            exclude_container_name_regex: String::new(),
            include_pod_name_regex: String::new(),
            exclude_pod_name_regex: String::new(),
            include_namespace_name_regex: String::new(),
            exclude_namespace_name_regex: String::new(),
        }
    }
}

impl Common {
    /// The include/exclude keys that are maps (label or variable to a
    /// regular expression), by name: with [`Common::filter_regexes`], the
    /// 14 filter keys of iLogtail's document, listed here only.
    pub fn filter_maps(&self) -> [(&'static str, &BTreeMap<String, String>); 6] {
        [
            ("IncludeContainerLabels", &self.include_container_labels),
            ("ExcludeContainerLabels", &self.exclude_container_labels),
            ("IncludeK8sLabels", &self.include_k8s_labels),
            ("ExcludeK8sLabels", &self.exclude_k8s_labels),
            ("IncludeEnvs", &self.include_envs),
            ("ExcludeEnvs", &self.exclude_envs),
        ]
    }

    /// The include/exclude keys that are one regular expression, by name.
    pub fn filter_regexes(&self) -> [(&'static str, &str); 8] {
        [
            ("IncludeCmdRegex", &self.include_cmd_regex),
            ("ExcludeCmdRegex", &self.exclude_cmd_regex),
            ("IncludeContainerNameRegex", &self.include_container_name_regex),
            ("ExcludeContainerNameRegex", &self.exclude_container_name_regex),
            ("IncludePodNameRegex", &self.include_pod_name_regex),
            ("ExcludePodNameRegex", &self.exclude_pod_name_regex),
            ("IncludeNamespaceNameRegex", &self.include_namespace_name_regex),
            ("ExcludeNamespaceNameRegex", &self.exclude_namespace_name_regex),
        ]
    }
}

/// `EBPF.Pid`: one pid, a list, or (as iLogtail's table types it) a map
/// whose values are pids.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Pids {
    One(u32),
    List(Vec<u32>),
    Map(BTreeMap<String, serde_yaml_ng::Value>),
}

/// By hand: an untagged enum's error would not name the accepted forms.
impl<'de> Deserialize<'de> for Pids {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected};
        struct V;
        const EXPECTED: &str = "a pid, a list of pids, or a map whose values are pids";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pids;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<Pids, E> {
                u32::try_from(n).map(Pids::One).map_err(|_| E::invalid_value(Unexpected::Unsigned(n), &self))
            }
            fn visit_i64<E: Error>(self, n: i64) -> Result<Pids, E> {
                u32::try_from(n).map(Pids::One).map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Pids, A::Error> {
                let mut pids = Vec::new();
                while let Some(v) = seq.next_element::<serde_yaml_ng::Value>()? {
                    match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                        Some(pid) => pids.push(pid),
                        None => {
                            return Err(A::Error::custom(format!(
                                "{v:?} in the list is not a pid (expected {EXPECTED})"
                            )))
                        }
                    }
                }
                Ok(Pids::List(pids))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Pids, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, serde_yaml_ng::Value>()? {
                    out.insert(k, v);
                }
                Ok(Pids::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
pub struct Ebpf {
    pub enabled: bool,
    pub pid: Option<Pids>,
}

impl Default for Ebpf {
    fn default() -> Self {
        Self { enabled: true, pid: None }
    }
}

/// wirelens' own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
pub struct Wirelens {
    /// Payload bytes copied per call (1..=8192).
    pub payload_bytes: u32,
    /// Kernel ring buffer size in bytes (power of two, at least 4096).
    pub ring_buffer_bytes: u32,
    /// Most connections tracked.
    pub max_connections: usize,
    /// Most layer-4 keys per window; more fold into an overflow count.
    pub max_l4_keys: usize,
    /// Most layer-7 keys per window; more fold into one `other` key per protocol.
    pub max_l7_keys: usize,
    /// Plugin directory (hot-reloaded); default: none (built-ins only).
    pub plugin_dir: Option<PathBuf>,
    /// Batches of records queued per flusher; when a flusher falls this far
    /// behind, new batches are dropped for it and counted.
    pub flusher_queue_batches: usize,
    /// The Docker Engine API socket container metadata comes from.
    pub docker_socket: PathBuf,
    /// CRI sockets (containerd, CRI-O) container metadata comes from, asked
    /// after Docker.
    pub cri_sockets: Vec<PathBuf>,
    /// Most CPU time one plugin call may use before it is stopped (a call
    /// descheduled on a busy machine gets longer in wall-clock time, up to a
    /// hard cap).
    pub plugin_deadline_ms: u64,
    /// Most linear memory one plugin instance may grow to.
    pub plugin_memory_bytes: usize,
    /// Mask secrets in command lines (`--password=...`, `-a` of redis-cli,
    /// `*_PASSWORD=`...) before anything downstream sees them.
    pub redact_cmdline: bool,
    /// More secrets to mask: regular expressions whose first capture group
    /// (or whole match) becomes `***`.
    pub redact_patterns: Vec<String>,
    /// Options for protocol plugins, by plugin name then option name
    /// (`{http: {keep_query: true}}`); each plugin checks its own.
    pub plugin_options: BTreeMap<String, BTreeMap<String, OptionValue>>,
    /// Payload bytes copied per call once a connection is known to be a
    /// protocol's, by protocol (over the plugin's own figure; at most
    /// `PayloadBytes`).
    pub capture_bytes: BTreeMap<String, u32>,
    /// Read TLS plaintext at OpenSSL (uprobes on every `libssl` mapped):
    /// TLS connections' calls are parsed like clear ones.
    pub tls: bool,
    /// The daemon's own HTTP endpoint (`/metrics`, `/healthz`, `/readyz`,
    /// `/plugins`).
    pub admin: Admin,
}

/// `Wirelens.Admin`: the always-on admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
pub struct Admin {
    /// `address:port` to listen on; empty: no admin endpoint.
    pub listen: String,
}

impl Default for Admin {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9465".into() }
    }
}

impl Admin {
    /// The address to listen on, if any (checked when the config loads).
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

/// A plugin option's value: any YAML scalar, passed to the plugin as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OptionValue(pub String);

impl<'de> Deserialize<'de> for OptionValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml_ng::Value::deserialize(d)? {
            serde_yaml_ng::Value::String(s) => Ok(OptionValue(s)),
            serde_yaml_ng::Value::Bool(b) => Ok(OptionValue(b.to_string())),
            serde_yaml_ng::Value::Number(n) => Ok(OptionValue(n.to_string())),
            other => Err(D::Error::custom(format!("a plugin option is a string, number or boolean, not {other:?}"))),
        }
    }
}

impl Default for Wirelens {
    fn default() -> Self {
        Self {
            payload_bytes: 4096,
            ring_buffer_bytes: 8 << 20,
            max_connections: 65_536,
            max_l4_keys: 10_000,
            max_l7_keys: 10_000,
            plugin_dir: None,
            flusher_queue_batches: 64,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            cri_sockets: vec![PathBuf::from("/run/containerd/containerd.sock"), PathBuf::from("/run/crio/crio.sock")],
            plugin_deadline_ms: 10,
            plugin_memory_bytes: 64 << 20,
            redact_cmdline: true,
            redact_patterns: vec![],
            plugin_options: BTreeMap::new(),
            capture_bytes: BTreeMap::new(),
            tls: true,
            admin: Admin::default(),
        }
    }
}

fn yes() -> bool {
    true
}

/// The effective configuration of the network input.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub enable: bool,
    pub common: Common,
    pub ebpf: Ebpf,
    pub wirelens: Wirelens,
    pub pids: Vec<u32>,
    pub flushers: Vec<FlusherSettings>,
    pub processors: Vec<ProcessorSettings>,
}

pub const INPUT_TYPE: &str = "observer_ilogtail_network_v1";

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Validate config text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file: File = serde_yaml_ng::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), explain_serde_error(&e.to_string())))?;
        let mut inputs = file.inputs.into_iter();
        let Some(input) = inputs.next() else { bail!("{}: `inputs` is empty", path.display()) };
        if inputs.next().is_some() {
            bail!("{}: `inputs` holds more than one input; run one daemon per input", path.display());
        }
        if input.kind != INPUT_TYPE {
            bail!("{}: inputs[0].Type is `{}`, expected `{INPUT_TYPE}`", path.display(), input.kind);
        }
        let p = path.display();
        let c = &input.common;
        if c.sampling > 100 {
            bail!("{p}: Common.Sampling is {}, must be 0-100", c.sampling);
        }
        for (key, v) in [
            ("FlushOutL4Interval", c.flush_out_l4_interval),
            ("FlushOutL7Interval", c.flush_out_l7_interval),
            ("FlushMetaInterval", c.flush_meta_interval),
            ("FlushNetlinkInterval", c.flush_netlink_interval),
        ] {
            if v == 0 {
                bail!("{p}: Common.{key} must be at least 1 (seconds)");
            }
        }
        let w = &input.wirelens;
        if !(1..=8192).contains(&w.payload_bytes) {
            bail!("{p}: Wirelens.PayloadBytes is {}, must be 1-8192", w.payload_bytes);
        }
        if !w.ring_buffer_bytes.is_power_of_two() || w.ring_buffer_bytes < 4096 {
            bail!("{p}: Wirelens.RingBufferBytes is {}, must be a power of two of at least 4096", w.ring_buffer_bytes);
        }
        if !(1..=10_000).contains(&w.plugin_deadline_ms) {
            bail!("{p}: Wirelens.PluginDeadlineMs is {}, must be 1-10000", w.plugin_deadline_ms);
        }
        if !(1 << 20..=4 << 30).contains(&w.plugin_memory_bytes) {
            bail!("{p}: Wirelens.PluginMemoryBytes is {}, must be 1 MiB to 4 GiB", w.plugin_memory_bytes);
        }
        if !w.admin.listen.is_empty() && w.admin.address().is_none() {
            bail!(
                "{p}: Wirelens.Admin.Listen is `{}`, expected address:port (`127.0.0.1:9465`, `[::]:9465`) or empty",
                w.admin.listen
            );
        }
        if w.flusher_queue_batches == 0 {
            bail!("{p}: Wirelens.FlusherQueueBatches must be at least 1");
        }
        for (i, pattern) in w.redact_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                bail!("{p}: Wirelens.RedactPatterns[{i}] is not a regular expression: {e}");
            }
        }
        let pids = match &input.ebpf.pid {
            None => vec![],
            Some(Pids::One(p)) => vec![*p],
            Some(Pids::List(l)) => l.clone(),
            Some(Pids::Map(m)) => m
                .iter()
                .map(|(k, v)| {
                    let s = match v {
                        serde_yaml_ng::Value::Number(n) => n.to_string(),
                        serde_yaml_ng::Value::String(s) => s.clone(),
                        _ => String::new(),
                    };
                    s.parse().map_err(|_| anyhow::anyhow!("{p}: EBPF.Pid.{k} is not a process id: {v:?}"))
                })
                .collect::<Result<_>>()?,
        };
        let mut flushers = file
            .flushers
            .iter()
            .enumerate()
            .map(|(i, f)| FlusherSettings::from_entry(f, i))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| anyhow::anyhow!("{p}: {e}"))?;
        if flushers.is_empty() {
            flushers.push(FlusherSettings::Stdout);
        }
        let window_secs = [input.common.flush_out_l4_interval, input.common.flush_out_l7_interval];
        for f in &mut flushers {
            match f {
                FlusherSettings::Prometheus(s) => s.window_secs = window_secs,
                FlusherSettings::Otlp(s) => s.window_secs = window_secs,
                _ => {}
            }
        }
        let processors = file
            .processors
            .iter()
            .enumerate()
            .map(|(i, pr)| ProcessorSettings::from_entry(pr, i))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| anyhow::anyhow!("{p}: {e}"))?;
        // Every regular expression of the filters (the regex keys and the
        // values of the label and environment maps).
        for (key, map) in c.filter_maps() {
            for (name, re) in map.iter().filter(|(_, re)| !re.is_empty()) {
                if let Err(e) = regex::Regex::new(re) {
                    bail!("{p}: Common.{key}.{name}: bad regular expression: {e}");
                }
            }
        }
        for (key, re) in c.filter_regexes().into_iter().filter(|(_, re)| !re.is_empty()) {
            if let Err(e) = regex::Regex::new(re) {
                bail!("{p}: Common.{key}: bad regular expression: {e}");
            }
        }
        // (Names no plugin serves are warned about once the plugins are
        // loaded: see `Layer7::new`.)
        if c.include_protocols.iter().any(String::is_empty) {
            bail!("{p}: Common.IncludeProtocols holds an empty name");
        }
        Ok(Self {
            path: path.to_path_buf(),
            enable: file.enable,
            common: input.common,
            ebpf: input.ebpf,
            wirelens: input.wirelens,
            pids,
            flushers,
            processors,
        })
    }

    /// This (running) config with the keys a running daemon applies taken
    /// from `new`: the one list of what a reload changes live. Everything
    /// else (the capture, connection tracking, filters, plugins) is built
    /// at start and waits for a restart.
    pub fn with_live_keys_of(&self, new: &Config) -> Config {
        let mut live = self.clone();
        live.path = new.path.clone();
        live.enable = new.enable;
        live.common.tags = new.common.tags.clone();
        live.common.flush_out_l4_interval = new.common.flush_out_l4_interval;
        live.common.flush_out_l7_interval = new.common.flush_out_l7_interval;
        live.common.flush_netlink_interval = new.common.flush_netlink_interval;
        live.wirelens.flusher_queue_batches = new.wirelens.flusher_queue_batches;
        live.processors = new.processors.clone();
        live.flushers = new.flushers.clone();
        live
    }

    /// The keys (`Section.Key`) whose values differ between two configs'
    /// `Common`, `EBPF` and `Wirelens` sections.
    pub fn differing_keys(&self, other: &Config) -> Vec<String> {
        let sections = |c: &Config| {
            [
                ("Common", serde_json::to_value(&c.common)),
                ("EBPF", serde_json::to_value(&c.ebpf)),
                ("Wirelens", serde_json::to_value(&c.wirelens)),
            ]
        };
        let mut keys = Vec::new();
        for ((section, a), (_, b)) in sections(self).into_iter().zip(sections(other)) {
            let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) else {
                keys.push(format!("{section}.*"));
                continue;
            };
            keys.extend(a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, _)| format!("{section}.{k}")));
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.yaml"))
    }

    fn with(common: &str, wirelens: &str) -> Config {
        parse(&format!(
            "inputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      FlushOutL4Interval: 15\n{common}    Wirelens:\n      MaxConnections: 65536\n{wirelens}"
        ))
        .unwrap()
    }

    #[test]
    fn a_reload_applies_live_keys_and_names_the_others() {
        let old = with("", "");
        // Live: tags, flush intervals, outputs.
        let new = with("      Tags: {team: a}\n      FlushOutL7Interval: 5\n", "      FlusherQueueBatches: 8\n");
        let applied = old.with_live_keys_of(&new);
        assert_eq!(applied, new);
        // Not live: named, and the running values stay.
        let new = with(
            "      Tags: {team: a}\n      Sampling: 50\n      IncludeCmdRegex: nginx\n",
            "      PayloadBytes: 256\n",
        );
        let applied = old.with_live_keys_of(&new);
        assert_ne!(applied, new);
        assert_eq!(
            applied.differing_keys(&new),
            ["Common.IncludeCmdRegex", "Common.Sampling", "Wirelens.PayloadBytes"]
        );
        assert_eq!(applied.common.tags, new.common.tags);
        assert_eq!(applied.common.sampling, 100);
        // `1` and `true` are the same flag.
        let a = with("      DropUnixSocket: 1\n", "");
        let b = with("      DropUnixSocket: true\n", "");
        assert_eq!(a.with_live_keys_of(&b), b);
        assert!(a.differing_keys(&b).is_empty());
    }

    #[test]
    fn plugin_options_are_scalars_by_plugin() {
        let c = with("", "      PluginOptions:\n        http: {keep_query: true, depth: 3}\n");
        let http = &c.wirelens.plugin_options["http"];
        assert_eq!(http["keep_query"], OptionValue("true".into()));
        assert_eq!(http["depth"], OptionValue("3".into()));
        let err = format!("{:#}", parse(
            "inputs:\n  - Type: observer_ilogtail_network_v1\n    Wirelens:\n      PluginOptions:\n        http: {keep_query: [1]}\n"
        ).unwrap_err());
        assert!(err.contains("PluginOptions") && err.contains("string, number or boolean"), "{err}");
    }

    #[test]
    fn ilogtails_example_parses_with_its_defaults() {
        let c = parse(
            "enable: true\ninputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      FlushOutL4Interval: 5\n      FlushOutL7Interval: 5\n    EBPF:\n      Enabled: true\nprocessors:\n  - Type: processor_default\nflushers:\n  - Type: flusher_stdout\n",
        )
        .unwrap();
        assert_eq!(c.common.flush_out_l4_interval, 5);
        assert_eq!(c.common.flush_netlink_interval, 10);
        assert_eq!(c.common.sampling, 100);
        assert!(c.common.drop_local_connections.on() && c.common.drop_unix_socket.on());
        assert!(c.ebpf.enabled);
    }

    /// Every key of iLogtail's two tables is accepted and read.
    #[test]
    fn every_ilogtail_key_is_read() {
        let c = parse(
            r#"
inputs:
  - Type: observer_ilogtail_network_v1
    Common:
      FlushOutL4Interval: 3
      FlushOutL7Interval: 4
      FlushMetaInterval: 5
      FlushNetlinkInterval: 6
      Sampling: 50
      ProtocolProcess: false
      DropUnixSocket: 0
      DropLocalConnections: false
      DropUnknownSocket: 0
      IncludeProtocols: [HTTP, MySQL]
      Tags: {a: b}
      IncludeContainerLabels: {app: web}
      ExcludeContainerLabels: {app: db}
      IncludeK8sLabels: {io.kubernetes.container.name: ^(nginx)$}
      ExcludeK8sLabels: {io.kubernetes.container.name: ^(redis)$}
      IncludeEnvs: {NGINX_SERVICE_PORT: ^(80)$}
      ExcludeEnvs: {X: y}
      IncludeCmdRegex: nginx
      ExcludeCmdRegex: sshd
      IncludeContainerNameRegex: web
      ExcludeContainerNameRegex: db
      IncludePodNameRegex: web-.*
      ExcludePodNameRegex: db-.*
      IncludeNamespaceNameRegex: default
      ExcludeNamespaceNameRegex: kube-system
    EBPF:
      Enabled: true
      Pid: 42
"#,
        )
        .unwrap();
        let k = &c.common;
        assert_eq!(
            (k.flush_out_l4_interval, k.flush_out_l7_interval, k.flush_meta_interval, k.flush_netlink_interval),
            (3, 4, 5, 6)
        );
        assert_eq!(k.sampling, 50);
        assert!(!k.protocol_process.on() && !k.drop_unix_socket.on());
        assert!(!k.drop_local_connections.on() && !k.drop_unknown_socket.on());
        assert_eq!(k.include_protocols, vec!["HTTP", "MySQL"]);
        assert_eq!(k.tags["a"], "b");
        assert_eq!(k.include_container_labels["app"], "web");
        assert_eq!(k.exclude_container_labels["app"], "db");
        assert_eq!(k.include_k8s_labels["io.kubernetes.container.name"], "^(nginx)$");
        assert_eq!(k.exclude_k8s_labels["io.kubernetes.container.name"], "^(redis)$");
        assert_eq!(k.include_envs["NGINX_SERVICE_PORT"], "^(80)$");
        assert_eq!(k.exclude_envs["X"], "y");
        assert_eq!((k.include_cmd_regex.as_str(), k.exclude_cmd_regex.as_str()), ("nginx", "sshd"));
        assert_eq!(k.include_container_name_regex, "web");
        assert_eq!(k.exclude_container_name_regex, "db");
        assert_eq!((k.include_pod_name_regex.as_str(), k.exclude_pod_name_regex.as_str()), ("web-.*", "db-.*"));
        assert_eq!(k.include_namespace_name_regex, "default");
        assert_eq!(k.exclude_namespace_name_regex, "kube-system");
        assert_eq!(c.pids, vec![42]);
        assert_eq!(c.flushers, vec![FlusherSettings::Stdout], "no flushers: stdout");
    }

    #[test]
    fn json_and_pid_forms() {
        let c = parse(r#"{"inputs":[{"Type":"observer_ilogtail_network_v1","EBPF":{"Enabled":true,"Pid":[1,2]},"Common":{"DropUnixSocket":0}}]}"#).unwrap();
        assert_eq!(c.pids, vec![1, 2]);
        assert!(!c.common.drop_unix_socket.on());
        let c = parse("inputs: [{Type: observer_ilogtail_network_v1, EBPF: {Enabled: true, Pid: {a: 7}}}]").unwrap();
        assert_eq!(c.pids, vec![7]);
        let c = parse("inputs: [{Type: observer_ilogtail_network_v1, EBPF: {Enabled: true, Pid: 9}}]").unwrap();
        assert_eq!(c.pids, vec![9]);
    }

    /// Errors on the flag and pid keys say what is accepted (they used to
    /// read "data did not match any variant of untagged enum").
    #[test]
    fn flag_and_pid_errors_name_the_accepted_forms() {
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {DropUnixSocket: maybe}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("DropUnixSocket") && e.contains("true/false or 1/0"), "{e}");
        assert!(!e.contains("untagged"), "{e}");
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, EBPF: {Pid: abc}}]").unwrap_err().to_string();
        assert!(e.contains("Pid") && e.contains("a pid, a list of pids, or a map whose values are pids"), "{e}");
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, EBPF: {Pid: [1, x]}}]").unwrap_err().to_string();
        assert!(e.contains("not a pid") && e.contains("Pid"), "{e}");
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, EBPF: {Pid: -3}}]").unwrap_err().to_string();
        assert!(e.contains("a pid"), "{e}");
        let c =
            parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {ProtocolProcess: 0, DropUnixSocket: true}}]")
                .unwrap();
        assert!(!c.common.protocol_process.on() && c.common.drop_unix_socket.on());
    }

    #[test]
    fn errors_name_the_key_and_file() {
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {Samplin: 5}}]").unwrap_err().to_string();
        assert!(e.contains("test.yaml") && e.contains("Samplin"), "{e}");
        let e =
            parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {Sampling: 500}}]").unwrap_err().to_string();
        assert!(e.contains("Common.Sampling"), "{e}");
        let e =
            parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {Sampling: lots}}]").unwrap_err().to_string();
        assert!(e.contains("Sampling"), "{e}");
        let e = parse("inputs: [{Type: other}]").unwrap_err().to_string();
        assert!(e.contains("inputs[0].Type"), "{e}");
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {FlushOutL7Intervl: 5}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("FlushOutL7Intervl") && e.contains("did you mean `FlushOutL7Interval`?"), "{e}");
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1}]\nflushers: [{Type: flusher_stdot}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flushers[0].Type `flusher_stdot`") && e.contains("`flusher_stdout`?"), "{e}");
        let e =
            parse("inputs: [{Type: observer_ilogtail_network_v1}]\nflushers: [{Type: flusher_file, FilePth: /tmp/x}]")
                .unwrap_err()
                .to_string();
        assert!(e.contains("flushers[0] (flusher_file)") && e.contains("did you mean `FilePath`?"), "{e}");
        let otlp = |keys: &str| {
            parse(&format!(
                "inputs: [{{Type: observer_ilogtail_network_v1}}]\nflushers: [{{Type: flusher_otlp{keys}}}]"
            ))
        };
        for (keys, says) in [
            (
                ", Endpoint: 'https://collector:4317'",
                "flushers[0] (flusher_otlp): Endpoint `https://collector:4317` must start with http://",
            ),
            (", Endpoint: 'http://collector'", "Endpoint `http://collector` needs a host and a port"),
            (", Protocol: http/json", "flushers[0] (flusher_otlp): unknown variant `http/json`"),
            (", Headers: {'a b': c}", "Headers: `a b` is not a valid header name"),
        ] {
            let e = otlp(keys).unwrap_err().to_string();
            assert!(e.contains(says), "{keys}: {e}");
        }
        let c = otlp(", Protocol: http/protobuf, Endpoint: 'http://collector:4318/'").unwrap();
        let FlusherSettings::Otlp(o) = &c.flushers[0] else { panic!("an OTLP flusher") };
        assert_eq!(o.url(), "http://collector:4318/v1/metrics");
        let c = otlp("").unwrap();
        let FlusherSettings::Otlp(o) = &c.flushers[0] else { panic!("an OTLP flusher") };
        assert_eq!((o.url().as_str(), o.window_secs), ("http://127.0.0.1:4317", [15, 60]));
        // A name close to a built-in one may be a plugin's: accepted (with a warning).
        assert!(
            parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {IncludeProtocols: [HTTP, http2]}}]").is_ok()
        );
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {IncludeEnvs: {X: '('}}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Common.IncludeEnvs.X"), "{e}");
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Wirelens: {PluginDeadlineMs: 0}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Wirelens.PluginDeadlineMs"), "{e}");
        let c = parse("inputs: [{Type: observer_ilogtail_network_v1, Wirelens: {PluginDeadlineMs: 50, PluginMemoryBytes: 16777216}}]").unwrap();
        assert_eq!((c.wirelens.plugin_deadline_ms, c.wirelens.plugin_memory_bytes), (50, 16 << 20));
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Common: {IncludeCmdRegex: '(x'}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Common.IncludeCmdRegex"), "{e}");
    }

    #[test]
    fn the_admin_endpoint_is_on_by_default_and_named_when_bad() {
        let c = parse("inputs: [{Type: observer_ilogtail_network_v1}]").unwrap();
        assert_eq!(c.wirelens.admin.address(), Some("127.0.0.1:9465".parse().unwrap()));
        let c = parse("inputs: [{Type: observer_ilogtail_network_v1, Wirelens: {Admin: {Listen: ''}}}]").unwrap();
        assert_eq!(c.wirelens.admin.address(), None);
        let c =
            parse("inputs: [{Type: observer_ilogtail_network_v1, Wirelens: {Admin: {Listen: '[::]:9000'}}}]").unwrap();
        assert_eq!(c.wirelens.admin.address(), Some("[::]:9000".parse().unwrap()));
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Wirelens: {Admin: {Listen: 'localhost'}}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Wirelens.Admin.Listen is `localhost`"), "{e}");
        let e = parse("inputs: [{Type: observer_ilogtail_network_v1, Wirelens: {Admin: {Listn: ':1'}}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Listn"), "{e}");
    }
}
