//! One plugin instance in its own store, and every call into it: the epoch
//! deadline is armed before each call, memory is capped by the limiter, and
//! results are checked before anyone uses them. After any failure the
//! instance is poisoned: its owner drops it and makes a new one.

use std::sync::Arc;

use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{AnyPlugin, AnyPre, Batch, Chunks, Direction, PluginInfo, Role};
use super::runtime::{Calls, MemoryLimitExceeded, Runtime, StoreData};
use super::wire;
use super::SandboxLimits;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The call ran past its deadline and was interrupted.
    Timeout,
    /// The instance tried to grow its memory past the cap.
    MemoryLimit(String),
    /// The plugin trapped (panic, unreachable, out-of-bounds...).
    Trap(String),
    /// The plugin returned too much, or references that do not hold.
    BadOutput(String),
    /// The instance could not be created.
    Instantiate(String),
    /// The plugin refused a request (bad option): not a sandbox failure.
    Rejected(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("deadline exceeded"),
            Failure::MemoryLimit(m) => write!(f, "{m}"),
            Failure::Trap(m) => write!(f, "trap: {m}"),
            Failure::BadOutput(m) => write!(f, "bad output: {m}"),
            Failure::Instantiate(m) => write!(f, "instantiation failed: {m}"),
            Failure::Rejected(m) => write!(f, "{m}"),
        }
    }
}

/// A live instance of one plugin.
pub struct Sandbox {
    store: Store<StoreData>,
    calls: Arc<Calls>,
    plugin: AnyPlugin,
    limits: SandboxLimits,
    field_count: usize,
    poisoned: bool,
}

impl Sandbox {
    /// Create an instance with the runtime's limits.
    pub fn instantiate(runtime: &Runtime, pre: &AnyPre, label: Arc<str>) -> Result<Self, Failure> {
        let mut store = Store::new(&runtime.engine, StoreData::new(label, &runtime.limits));
        store.limiter(|d| &mut d.limiter);
        // The deadline is CPU time of the calling thread (see CallClock),
        // looked at on every epoch increment the call sees: few, as the
        // ticker runs fast only while one call outlasts its quiet period.
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().call.is_over() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(1) })
        });
        arm(&mut store, 0);
        let instance = {
            let _running = runtime.calls.enter();
            pre.instantiate(&mut store)
        };
        let plugin = match instance {
            Ok(p) => p,
            Err(e) => return Err(classify(&store, e, Failure::Instantiate)),
        };
        Ok(Self {
            store,
            calls: runtime.calls.clone(),
            plugin,
            limits: runtime.limits.clone(),
            field_count: usize::MAX,
            poisoned: false,
        })
    }

    /// After a failure the instance must not be used again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Log lines the plugin wrote past its budget.
    pub fn logs_suppressed(&self) -> u64 {
        self.store.data().logs_suppressed
    }

    /// The plugin's self-description. Also fixes the number of field names
    /// used to check later results.
    pub fn info(&mut self) -> Result<PluginInfo, Failure> {
        let info = self.call(0, |p, s| p.info(s))?;
        self.field_count = info.field_names.len();
        Ok(info)
    }

    /// Tell the checker how many field names the plugin declared (known
    /// from its metadata, without calling `info` again).
    pub fn set_field_count(&mut self, n: usize) {
        self.field_count = n;
    }

    /// Apply plugin options.
    pub fn configure(&mut self, options: &[(String, String)]) -> Result<(), Failure> {
        self.call(0, |p, s| p.configure(s, options))?.map_err(Failure::Rejected)
    }

    /// Ask whether a connection starting with `bytes` is the plugin's protocol.
    pub fn detect(&mut self, direction: Direction, role: Role, bytes: &[u8]) -> Result<u8, Failure> {
        self.call(bytes.len(), |p, s| p.detect(s, direction, role, bytes))
    }

    /// Parse a batch of chunks.
    pub fn feed(&mut self, chunks: &Chunks, data: &[u8]) -> Result<Batch, Failure> {
        let batch = self.call(data.len(), |p, s| p.feed(s, chunks, data))?;
        self.check(batch)
    }

    /// Finish and forget connections.
    pub fn close(&mut self, conns: &[u64]) -> Result<Batch, Failure> {
        let batch = self.call(0, |p, s| p.close(s, conns))?;
        self.check(batch)
    }

    /// Run one call of the plugin, on `input_bytes` of input (its CPU
    /// allowance grows with them: see `CallClock::start`).
    fn call<R>(
        &mut self,
        input_bytes: usize,
        f: impl FnOnce(&AnyPlugin, &mut Store<StoreData>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        if self.poisoned {
            return Err(Failure::Trap("instance already failed".into()));
        }
        arm(&mut self.store, input_bytes);
        let result = {
            let _running = self.calls.enter();
            f(&self.plugin, &mut self.store)
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                self.poisoned = true;
                Err(classify(&self.store, e, Failure::Trap))
            }
        }
    }

    fn check(&mut self, batch: Batch) -> Result<Batch, Failure> {
        match validate(&batch, self.field_count, &self.limits) {
            Ok(()) => Ok(batch),
            Err(m) => {
                // The instance may be fine, but it broke the contract once:
                // treat it like any other failure.
                self.poisoned = true;
                Err(Failure::BadOutput(m))
            }
        }
    }
}

/// Arm the deadline for a call about to start with `input_bytes` of
/// chunks: its CPU time is checked at the next epoch increment, and at each
/// one after (see `CallClock` and the ticker).
fn arm(store: &mut Store<StoreData>, input_bytes: usize) {
    store.data_mut().call.start(input_bytes);
    store.set_epoch_deadline(1);
}

fn classify(store: &Store<StoreData>, e: wasmtime::Error, other: fn(String) -> Failure) -> Failure {
    if store.data().limiter.memory_exceeded || e.downcast_ref::<MemoryLimitExceeded>().is_some() {
        let cap = store.data().limiter_cap();
        return Failure::MemoryLimit(format!("memory limit of {cap} bytes exceeded"));
    }
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return Failure::Timeout;
    }
    // One line for the log (the trap itself); the wasm backtrace at debug level.
    tracing::debug!(plugin = %store.data().label, "plugin failure in detail: {e:?}");
    other(e.root_cause().to_string())
}

/// Check sizes and that every reference in the batch holds.
fn validate(b: &Batch, field_count: usize, limits: &SandboxLimits) -> Result<(), String> {
    let n = b.conn.len();
    if n > limits.max_messages {
        return Err(format!("{n} messages in one call (limit {})", limits.max_messages));
    }
    let columns = [b.start_ns.len(), b.end_ns.len(), b.size.len(), b.pair_id.len(), b.flags.len(), b.field_count.len()];
    if columns.iter().any(|&l| l != n) {
        return Err(format!("message columns of different lengths: {n} connections, {columns:?}"));
    }
    let fields = b.field_key.len();
    if b.field_offset.len() != fields || b.field_len.len() != fields {
        return Err("field columns of different lengths".into());
    }
    let declared: usize = b.field_count.iter().map(|&c| usize::from(c)).sum();
    if declared != fields {
        return Err(format!("messages declare {declared} fields but {fields} were returned"));
    }
    let error_bytes: usize = b.errors.iter().map(|e| e.reason.len()).sum();
    let bytes = b.arena.len() + error_bytes + fields * 10;
    if bytes > limits.max_output_bytes {
        return Err(format!("{bytes} bytes of output in one call (limit {})", limits.max_output_bytes));
    }
    if let Some(f) = b.flags.iter().find(|&&f| wire::kind(f).is_none()) {
        return Err(format!("message flags {f:#04x} name no message kind"));
    }
    // The arena is checked as UTF-8 once; each span then only needs to
    // start and end on character boundaries.
    let arena = std::str::from_utf8(&b.arena).map_err(|e| format!("text arena is not UTF-8: {e}"))?;
    for i in 0..fields {
        if usize::from(b.field_key[i]) >= field_count {
            return Err(format!("field key {} beyond the {field_count} declared names", b.field_key[i]));
        }
        let (start, len) = (b.field_offset[i] as usize, b.field_len[i] as usize);
        let end = start.saturating_add(len);
        if arena.get(start..end).is_none() {
            return Err(format!(
                "text span {start}+{len} beyond the {} byte arena or not on character boundaries",
                arena.len()
            ));
        }
    }
    Ok(())
}
