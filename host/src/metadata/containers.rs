//! Container metadata from the container runtime, looked up on a thread of
//! its own so the capture path never waits for it: the pipeline asks for an
//! id (non-blocking) and reads whatever is known. Every known container is
//! refreshed each `Common.FlushMetaInterval`, and a new id is looked up at
//! first sight. A runtime that is absent or down is not an error: lookups
//! are retried at the next refresh and records lack the container fields
//! meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::runtime::{ContainerInfo, ContainerRuntime};

type Known = Arc<RwLock<HashMap<String, Arc<ContainerInfo>>>>;

enum Msg {
    Lookup(String),
    Stop,
}

pub struct ContainerDirectory {
    known: Known,
    /// Ids already asked for (so each is sent to the thread once).
    requested: HashSet<String>,
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl Default for ContainerDirectory {
    /// No runtime: nothing is ever known.
    fn default() -> Self {
        Self { known: Known::default(), requested: HashSet::new(), tx: None, thread: None }
    }
}

impl ContainerDirectory {
    /// Follow `runtimes` (asked in this order), refreshing every `refresh`.
    pub fn start(runtimes: Vec<Box<dyn ContainerRuntime>>, refresh: Duration) -> Self {
        let known = Known::default();
        let (tx, rx) = channel();
        let k = known.clone();
        let thread = std::thread::Builder::new()
            .name("container-metadata".into())
            .spawn(move || {
                let mut wanted: HashSet<String> = HashSet::new();
                let mut next_refresh = Instant::now();
                let mut sources: Vec<Source> =
                    runtimes.into_iter().map(|runtime| Source { runtime, up: None }).collect();
                let mut missing: HashMap<String, Instant> = HashMap::new();
                loop {
                    let wait = next_refresh.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(Msg::Lookup(id)) => {
                            if !k.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
                                lookup(&mut sources, &id, &k);
                            }
                            wanted.insert(id);
                        }
                        Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {
                            refresh_all(&mut sources, &wanted, &k, &mut missing);
                            next_refresh = Instant::now() + refresh;
                        }
                    }
                }
            })
            .expect("spawning the container metadata thread");
        Self { known, requested: HashSet::new(), tx: Some(tx), thread: Some(thread) }
    }

    /// Ask for `id` to be looked up (once; returns at once).
    pub fn request(&mut self, id: &str) {
        if let Some(tx) = &self.tx {
            if self.requested.len() > 100_000 {
                self.requested.clear();
            }
            if self.requested.insert(id.to_string()) {
                let _ = tx.send(Msg::Lookup(id.to_string()));
            }
        }
    }

    /// What is known of `id` now.
    pub fn get(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        self.known.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Whether a runtime is followed at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }
}

impl Drop for ContainerDirectory {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A runtime and whether it answered last time.
struct Source {
    runtime: Box<dyn ContainerRuntime>,
    up: Option<bool>,
}

impl Source {
    /// Note whether the runtime answered (logged when that changes, not on
    /// every failed call); its answer, if any.
    fn answered<T>(&mut self, result: anyhow::Result<T>) -> Option<T> {
        let up = result.is_ok();
        if self.up != Some(up) {
            let runtime = self.runtime.describe();
            match &result {
                Err(e) => tracing::info!("{runtime}: unavailable (retried every refresh): {e:#}"),
                Ok(_) => tracing::info!("{runtime}: available"),
            }
            self.up = Some(up);
        }
        result.ok()
    }
}

/// Ask each runtime in turn until one knows `id`. A runtime that failed
/// is skipped until a refresh finds it answering again, so a stuck one
/// (each call waits for its timeout) does not delay the others' lookups.
fn lookup(sources: &mut [Source], id: &str, known: &Known) {
    for s in sources.iter_mut().filter(|s| s.up != Some(false)) {
        let answer = s.runtime.inspect(id);
        if let Some(Some(info)) = s.answered(answer) {
            known.write().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), Arc::new(info));
            return;
        }
    }
}

/// How long a stopped container stays described: its processes' last calls
/// may still be in a window (the longest is minutes).
const STOPPED_LINGER: Duration = Duration::from_secs(600);

/// Re-inspect the running containers we were asked about; forget the ones
/// stopped for longer than [`STOPPED_LINGER`].
fn refresh_all(
    sources: &mut [Source],
    wanted: &HashSet<String>,
    known: &Known,
    missing: &mut HashMap<String, Instant>,
) {
    let mut running = HashSet::new();
    for s in sources.iter_mut() {
        let answer = s.runtime.list();
        running.extend(s.answered(answer).into_iter().flatten());
    }
    // No runtime answered: keep what is known until one does.
    if !sources.iter().any(|s| s.up == Some(true)) {
        return;
    }
    let now = Instant::now();
    missing.retain(|id, _| !running.contains(id));
    known.write().unwrap_or_else(|e| e.into_inner()).retain(|id, _| {
        running.contains(id) || now.duration_since(*missing.entry(id.clone()).or_insert(now)) < STOPPED_LINGER
    });
    missing.retain(|_, since| now.duration_since(*since) < STOPPED_LINGER);
    for id in wanted.iter().filter(|id| running.contains(*id)) {
        lookup(sources, id, known);
    }
}
