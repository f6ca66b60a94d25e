//! One loaded plugin: its compiled component, what it says about itself,
//! and its health (failure counts, quarantine).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use parking_lot::Mutex;

use super::bindings::AnyPre;
use super::registry::PluginOptions;
use super::runtime::Runtime;
use super::sandbox::{Failure, Sandbox};
use super::{cache, contract, SandboxLimits};

/// Where a plugin came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Built into the daemon from `plugins/`.
    Builtin,
    /// A file in the plugin directory.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin => f.write_str("builtin"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a plugin says about itself, plus where it came from.
#[derive(Clone, Debug)]
pub struct PluginMeta {
    /// Unique per load (a reloaded file gets a new id).
    pub id: u64,
    pub name: Arc<str>,
    pub version: String,
    pub wit_version: String,
    pub description: String,
    pub default_ports: Vec<u16>,
    pub field_names: Vec<Arc<str>>,
    /// The field that says what a call does (contract 1.1; `None` for 1.0
    /// plugins and plugins that name none).
    pub call_field: Option<Arc<str>>,
    /// Payload bytes worth copying per call once a connection is this
    /// protocol's: (requests, responses) (contract 1.1; `None`: the
    /// capture size).
    pub capture_bytes: Option<(u32, u32)>,
    pub source: Source,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
}

impl PluginMeta {
    /// `name@version` for logs.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Counters of one plugin's calls and failures.
#[derive(Default, Debug)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory_limits: AtomicU64,
    pub traps: AtomicU64,
    pub bad_outputs: AtomicU64,
    pub quarantines: AtomicU64,
}

impl PluginStats {
    /// Failures of every kind.
    pub fn failures(&self) -> u64 {
        [&self.timeouts, &self.memory_limits, &self.traps, &self.bad_outputs]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Recent failures and the quarantine they caused.
#[derive(Debug, Default)]
struct Health {
    recent: Vec<Instant>,
    quarantined_until: Option<Instant>,
    /// After a quarantine, one failure window during which a single failure
    /// quarantines again (successes do not shorten it: every new
    /// connection's detect succeeds, whatever the parser then does).
    probation_until: Option<Instant>,
    /// Quarantines so far: each doubles the next one.
    strikes: u32,
}

/// A compiled, validated plugin ready to be instantiated.
pub struct LoadedPlugin {
    pub meta: PluginMeta,
    pub(crate) pre: AnyPre,
    pub stats: PluginStats,
    health: Mutex<Health>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("meta", &self.meta).finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Compile (or load from cache), check the contract, instantiate once to
    /// read `info()`, and apply its options (those of `options` under the
    /// name it declares).
    pub fn load(runtime: &Arc<Runtime>, bytes: &[u8], source: Source, options: &PluginOptions) -> Result<Arc<Self>> {
        let hash = cache::content_hash(bytes);
        let component = runtime.cache.component(&runtime.engine, bytes, &hash)?;
        let wit_version = contract::check(&runtime.engine, &component)?;
        let pre =
            runtime.linker.instantiate_pre(&component).map_err(anyhow::Error::from).context("cannot be linked")?;
        let pre = AnyPre::new(pre, &wit_version)
            .map_err(anyhow::Error::from)
            .context("does not match the protocol-plugin world")?;
        let provisional = PluginMeta {
            id: runtime.next_id(),
            name: Arc::from("?"),
            version: "?".into(),
            wit_version,
            description: String::new(),
            default_ports: vec![],
            field_names: vec![],
            call_field: None,
            capture_bytes: None,
            source,
            hash,
        };
        let mut plugin =
            Self { meta: provisional, pre, stats: PluginStats::default(), health: Mutex::new(Health::default()) };
        let mut sandbox = Sandbox::instantiate(runtime, &plugin.pre, Arc::from("(loading)"))
            .map_err(|f| anyhow::anyhow!("cannot be instantiated: {f}"))?;
        let info = sandbox.info().map_err(|f| anyhow::anyhow!("info() failed: {f}"))?;
        validate_name(&info.name)?;
        if info.field_names.len() > usize::from(u16::MAX) {
            bail!("declares {} field names (at most {})", info.field_names.len(), u16::MAX);
        }
        plugin.meta.name = Arc::from(info.name.as_str());
        plugin.meta.version = info.version;
        plugin.meta.description = info.description;
        plugin.meta.default_ports = info.default_ports;
        if let Some(call) = info.call_field.as_deref() {
            if !info.field_names.iter().any(|f| f == call) {
                bail!("call-field `{call}` is not one of its field names ({})", info.field_names.join(", "));
            }
        }
        plugin.meta.field_names = info.field_names.iter().map(|s| Arc::from(s.as_str())).collect();
        plugin.meta.call_field = info.call_field.as_deref().map(Arc::from);
        plugin.meta.capture_bytes = info.capture_bytes.map(|c| (c.request, c.response));
        let own = options.get(&info.name).map(Vec::as_slice).unwrap_or_default();
        sandbox.configure(own).map_err(|f| anyhow::anyhow!("{}: bad options: {f}", info.name))?;
        Ok(Arc::new(plugin))
    }

    /// The pre-linked component (to make instances).
    pub fn pre(&self) -> &AnyPre {
        &self.pre
    }

    /// Not quarantined at `now`.
    pub fn is_available(&self, now: Instant) -> bool {
        self.health.lock().quarantined_until.is_none_or(|until| now >= until)
    }

    /// When the current quarantine ends, if any.
    pub fn quarantined_until(&self) -> Option<Instant> {
        self.health.lock().quarantined_until.filter(|u| *u > Instant::now())
    }

    /// Count a failure; returns the quarantine it started, if any.
    pub(crate) fn record_failure(&self, failure: &Failure, limits: &SandboxLimits) -> Option<Duration> {
        let counter = match failure {
            Failure::Timeout => &self.stats.timeouts,
            Failure::MemoryLimit(_) => &self.stats.memory_limits,
            Failure::Trap(_) | Failure::Instantiate(_) => &self.stats.traps,
            Failure::BadOutput(_) => &self.stats.bad_outputs,
            Failure::Rejected(_) => return None,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut h = self.health.lock();
        h.recent.retain(|t| now.duration_since(*t) < limits.failure_window);
        h.recent.push(now);
        // A plugin that stayed clean through its probation starts afresh.
        if h.probation_until.is_some_and(|p| now >= p) {
            h.strikes = 0;
            h.probation_until = None;
        }
        // A failure soon after a quarantine ends counts as a full strike.
        let on_probation = h.quarantined_until.is_some_and(|u| u <= now) && h.probation_until.is_some_and(|p| now < p);
        if h.recent.len() as u32 >= limits.failure_threshold || on_probation {
            let factor = 1u32 << h.strikes.min(16);
            let span = limits.quarantine_base.saturating_mul(factor).min(limits.quarantine_max);
            h.quarantined_until = Some(now + span);
            h.probation_until = Some(now + span + limits.failure_window);
            h.strikes += 1;
            h.recent.clear();
            self.stats.quarantines.fetch_add(1, Ordering::Relaxed);
            return Some(span);
        }
        None
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        bail!("protocol name `{name}` must be 1-32 characters of a-z, 0-9, `_` or `-`");
    }
    Ok(())
}
