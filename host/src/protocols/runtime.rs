//! The wasmtime engine shared by every plugin: configuration, the epoch
//! ticker that enforces call deadlines, and the linker (which offers only
//! the contract's `host.log`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, ResourceLimiter};

use super::bindings::{self, LogLevel};
use super::cache::ArtifactCache;
use super::SandboxLimits;
use crate::clock;

/// Period of the epoch ticker while one call outlasts a whole period: a
/// call over its deadline is stopped within a tick of it.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How far past its time the ticker's sleep must end to count as the
/// process (or the machine) frozen rather than busy.
const FREEZE_SLACK: Duration = Duration::from_millis(50);

/// Wall-clock time the daemon stood frozen (stopped by a signal, a virtual
/// machine paused) while plugin calls ran, as the epoch ticker saw it: its
/// sleeps that ended more than [`FREEZE_SLACK`] late, summed. A call's
/// wall-clock cap leaves this out: the call ran no slower for it. Under
/// HTTP at 100k/s, a daemon stopped for 2 s (1 run in 4) or 8 times for
/// 2.5 s (1 run in 3) found its call in progress past the cap when it went
/// on, and every connection of that plugin's instance went to layer 4 for
/// good.
/// (CPU time stands still while frozen, so the CPU-time deadline needs no
/// such care.)
static FROZEN_NS: AtomicU64 = AtomicU64::new(0);

/// Engine, linker, limits and artifact cache.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreData>,
    pub(crate) limits: SandboxLimits,
    pub(crate) cache: ArtifactCache,
    next_plugin_id: AtomicU64,
    ticker: Option<Ticker>,
    /// Calls in progress, for the ticker (see [`Calls`]).
    pub(crate) calls: Arc<Calls>,
}

impl Runtime {
    /// A runtime whose compiled artifacts are cached under `cache_dir`.
    pub fn new(limits: SandboxLimits, cache_dir: Option<PathBuf>) -> Result<Arc<Self>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // `WIRELENS_PERFMAP=1` names plugin code for `perf` (/tmp/perf-PID.map);
        // in a build with the `profiling` feature, `WIRELENS_PERFMAP=jitdump`
        // writes its instructions as well (./jit-PID.dump), for `perf record
        // -k 1`, `perf inject --jit` and `perf annotate`.
        match std::env::var("WIRELENS_PERFMAP").as_deref() {
            #[cfg(feature = "profiling")]
            Ok("jitdump") => config.profiler(wasmtime::ProfilingStrategy::JitDump),
            Ok(_) => config.profiler(wasmtime::ProfilingStrategy::PerfMap),
            Err(_) => &mut config,
        };
        let engine = Engine::new(&config).map_err(anyhow::Error::from).context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        bindings::wirelens::protocol::host::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the host interface")?;
        // Plugins built against 1.0 import the 1.0 host interface.
        bindings::v1_0::wirelens::protocol::host::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the 1.0 host interface")?;
        bindings::v1_1::wirelens::protocol::host::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the 1.1 host interface")?;
        let cache = ArtifactCache::new(&engine, cache_dir)?;
        let calls = Arc::new(Calls::default());
        let ticker = Ticker::start(engine.clone(), calls.clone(), Ticker::quiet_period(limits.deadline));
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            cache,
            next_plugin_id: AtomicU64::new(1),
            ticker: Some(ticker),
            calls,
        }))
    }

    /// The limits every sandbox gets.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The artifact cache.
    pub fn cache(&self) -> &ArtifactCache {
        &self.cache
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_plugin_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
    }
}

/// Plugin calls, as the epoch ticker sees them: it ticks only while calls
/// run, and sleeps once a whole period passed with none (an idle daemon
/// would otherwise wake a thousand times a second, about 3% of a core here).
#[derive(Default)]
pub(crate) struct Calls {
    active: AtomicU32,
    started: AtomicU64,
    ticker_asleep: AtomicBool,
    ticker: std::sync::OnceLock<std::thread::Thread>,
}

/// Held for the length of one call.
pub(crate) struct CallGuard<'a>(&'a Calls);

impl Calls {
    /// A call starts: wake the ticker if it sleeps. (SeqCst on both sides:
    /// either the ticker sees this call before it sleeps, or this call sees
    /// it asleep and wakes it.)
    pub(crate) fn enter(&self) -> CallGuard<'_> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.ticker_asleep.load(Ordering::SeqCst) {
            if let Some(t) = self.ticker.get() {
                t.unpark();
            }
        }
        CallGuard(self)
    }

    fn idle_since(&self, started: u64) -> bool {
        self.active.load(Ordering::SeqCst) == 0 && self.started.load(Ordering::SeqCst) == started
    }

    /// One call has run since the last look at `started` and still runs.
    fn one_call_running_since(&self, started: u64) -> bool {
        self.active.load(Ordering::SeqCst) > 0 && self.started.load(Ordering::SeqCst) == started
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Increments the engine's epoch while plugin calls run: every quiet period
/// while calls come and go (each call is checked at the first increment it
/// sees), every [`EPOCH_TICK`] once one call has outlasted a whole period,
/// so that call's CPU time is looked at every tick until it ends or is
/// stopped. Calls last about 0.1 ms: ticking every millisecond while they
/// came and went woke this thread 770 times a second under redis GET at
/// 110k requests/s (each wake-up a context switch on the observed
/// applications' cores).
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    /// Half the deadline (so a call is first looked at before it is due),
    /// at least a tick.
    fn quiet_period(deadline: Duration) -> Duration {
        (deadline / 2).max(EPOCH_TICK)
    }

    fn start(engine: Engine, calls: Arc<Calls>, quiet: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                // Known before it can ever sleep, so a call that sees it
                // asleep can wake it.
                let _ = calls.ticker.set(std::thread::current());
                let mut seen = calls.started.load(Ordering::SeqCst);
                let mut period = quiet;
                while !flag.load(Ordering::Relaxed) {
                    let slept_from = Instant::now();
                    std::thread::sleep(period);
                    // Counted before the increment that lets calls look.
                    let late = slept_from.elapsed().saturating_sub(period);
                    if late >= FREEZE_SLACK {
                        FROZEN_NS.fetch_add(late.as_nanos() as u64, Ordering::SeqCst);
                    }
                    engine.increment_epoch();
                    period = if calls.one_call_running_since(seen) { EPOCH_TICK } else { quiet };
                    if calls.idle_since(seen) {
                        calls.ticker_asleep.store(true, Ordering::SeqCst);
                        // Checked again once the flag is up (see Calls::enter).
                        if calls.idle_since(seen) && !flag.load(Ordering::Relaxed) {
                            std::thread::park();
                        }
                        calls.ticker_asleep.store(false, Ordering::SeqCst);
                    }
                    seen = calls.started.load(Ordering::SeqCst);
                }
            })
            .expect("spawning the epoch thread");
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// Per-instance store data: the memory limiter and the log budget.
pub struct StoreData {
    pub(crate) limiter: Limiter,
    /// `name@version` for log lines.
    pub(crate) label: Arc<str>,
    log_window: Instant,
    log_lines: u32,
    log_budget: u32,
    /// Log lines suppressed by the budget.
    pub(crate) logs_suppressed: u64,
    /// The call in progress, for its CPU-time deadline.
    pub(crate) call: CallClock,
}

/// When the current call started, in the calling thread's CPU time and in
/// wall-clock time. The epoch ticker only says "time is up" in wall-clock
/// terms; a thread descheduled on a busy machine has not spent that time
/// running the plugin, so the deadline callback extends the deadline until
/// the thread's own CPU time reaches it (a hard wall-clock cap remains).
pub(crate) struct CallClock {
    pub(crate) cpu_start_ns: u64,
    pub(crate) wall_start: Instant,
    /// [`FROZEN_NS`] as the call started.
    pub(crate) frozen_at_start: u64,
    /// The configured deadline: what a call with no input may use.
    pub(crate) deadline: Duration,
    /// What the call in progress may use: the deadline and an allowance
    /// for its input (see [`CallClock::start`]).
    pub(crate) allowed: Duration,
}

impl CallClock {
    /// Wall-clock time a call may take however starved its thread is.
    const WALL_CAP_FACTOR: u32 = 100;

    /// CPU time allowed per KiB of a call's input on top of the deadline.
    /// A call takes up to 256 KiB, which the smallest messages (pipelined
    /// 25-byte Redis GETs) fill with 10,000 of them: measured here, such a
    /// call needed over 10 ms beside other load now and then, and the
    /// deadline stopped a sound plugin (its connections went to layer 4).
    /// 100 us per KiB gives a full call 35.6 ms; a plugin that loops still
    /// stops within that.
    const PER_KIB: Duration = Duration::from_micros(100);

    /// A call with `input_bytes` of chunks starts.
    pub(crate) fn start(&mut self, input_bytes: usize) {
        let now = Instant::now();
        self.cpu_start_ns = recent_thread_cpu_ns(now);
        self.wall_start = now;
        self.frozen_at_start = FROZEN_NS.load(Ordering::SeqCst);
        let kib = u32::try_from(input_bytes / 1024).unwrap_or(u32::MAX);
        self.allowed = self.deadline.saturating_add(Self::PER_KIB.saturating_mul(kib));
    }

    /// The call has used the CPU time it may (or the wall-clock cap passed):
    /// interrupt it.
    pub(crate) fn is_over(&self) -> bool {
        let used = Duration::from_nanos(clock::thread_cpu_ns().saturating_sub(self.cpu_start_ns));
        let wall_cap = self.allowed.saturating_mul(Self::WALL_CAP_FACTOR);
        let frozen = Duration::from_nanos(FROZEN_NS.load(Ordering::SeqCst).saturating_sub(self.frozen_at_start));
        used >= self.allowed || self.wall_start.elapsed().saturating_sub(frozen) >= wall_cap
    }
}

thread_local! {
    /// The thread's CPU time and when it was read: calls starting within
    /// one epoch tick reuse it (reading it is a system call, and calls come
    /// by the hundred thousand per second), which counts at most one tick of
    /// earlier work against the call.
    static CPU_READING: std::cell::Cell<(u64, Option<Instant>)> = const { std::cell::Cell::new((0, None)) };
}

fn recent_thread_cpu_ns(now: Instant) -> u64 {
    CPU_READING.with(|r| match r.get() {
        (cpu, Some(at)) if now.duration_since(at) < EPOCH_TICK => cpu,
        _ => {
            let cpu = clock::thread_cpu_ns();
            r.set((cpu, Some(now)));
            cpu
        }
    })
}

impl StoreData {
    pub(crate) fn new(label: Arc<str>, limits: &SandboxLimits) -> Self {
        Self {
            limiter: Limiter { memory_cap: limits.memory_bytes, memory_exceeded: false },
            label,
            log_window: Instant::now(),
            log_lines: 0,
            log_budget: limits.log_lines_per_second,
            logs_suppressed: 0,
            call: CallClock {
                cpu_start_ns: 0,
                wall_start: Instant::now(),
                frozen_at_start: 0,
                deadline: limits.deadline,
                allowed: limits.deadline,
            },
        }
    }
}

impl StoreData {
    pub(crate) fn limiter_cap(&self) -> usize {
        self.limiter.memory_cap
    }
}

impl bindings::wirelens::protocol::host::Host for StoreData {
    fn log(&mut self, level: LogLevel, message: String) {
        if self.log_window.elapsed() >= Duration::from_secs(1) {
            self.log_window = Instant::now();
            self.log_lines = 0;
        }
        if self.log_lines >= self.log_budget {
            self.logs_suppressed += 1;
            return;
        }
        self.log_lines += 1;
        let text = &message[..message.floor_char_boundary(1024)];
        let plugin = &*self.label;
        match level {
            LogLevel::Error => tracing::error!(plugin, "{text}"),
            LogLevel::Warn => tracing::warn!(plugin, "{text}"),
            LogLevel::Info => tracing::info!(plugin, "{text}"),
            LogLevel::Debug => tracing::debug!(plugin, "{text}"),
        }
    }
}

impl bindings::wirelens::protocol::types::Host for StoreData {}

impl bindings::v1_0::wirelens::protocol::host::Host for StoreData {
    fn log(&mut self, level: bindings::v1_0::wirelens::protocol::types::LogLevel, message: String) {
        bindings::wirelens::protocol::host::Host::log(self, bindings::from_1_0::level(level), message)
    }
}

impl bindings::v1_0::wirelens::protocol::types::Host for StoreData {}

impl bindings::v1_1::wirelens::protocol::host::Host for StoreData {
    fn log(&mut self, level: bindings::v1_1::wirelens::protocol::types::LogLevel, message: String) {
        bindings::wirelens::protocol::host::Host::log(self, bindings::from_1_1::level(level), message)
    }
}

impl bindings::v1_1::wirelens::protocol::types::Host for StoreData {}

/// Caps an instance's memory; remembers a refusal so the failure can be
/// reported as "memory limit" rather than a generic trap.
pub(crate) struct Limiter {
    memory_cap: usize,
    pub(crate) memory_exceeded: bool,
}

/// The error a refused memory growth traps with.
#[derive(Debug)]
pub struct MemoryLimitExceeded {
    pub cap: usize,
    pub desired: usize,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory limit of {} bytes exceeded (wanted {})", self.cap, self.desired)
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            return Err(MemoryLimitExceeded { cap: self.memory_cap, desired }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_the_daemon_stood_frozen_is_not_a_calls_wall_clock_time() {
        let deadline = Duration::from_millis(1); // a wall-clock cap of 100 ms
        let mut clock =
            CallClock { cpu_start_ns: 0, wall_start: Instant::now(), frozen_at_start: 0, deadline, allowed: deadline };
        // Asleep: no CPU time used, only wall-clock time.
        clock.start(0);
        std::thread::sleep(Duration::from_millis(300));
        assert!(clock.is_over(), "past the wall-clock cap");
        clock.start(0);
        std::thread::sleep(Duration::from_millis(300));
        // What the ticker adds when its sleep ends that late.
        FROZEN_NS.fetch_add(300_000_000, Ordering::SeqCst);
        assert!(!clock.is_over(), "the frozen time is left out");
    }
}
