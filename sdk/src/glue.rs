//! Glue between the generated component exports and [`Engine`]; used by
//! [`crate::export_plugin!`], not by plugin authors.

use std::cell::UnsafeCell;

use crate::bindings::exports::wirelens::protocol::parser::PluginInfo;
use crate::bindings::wirelens::protocol::types::CaptureBudget;
use crate::{Engine, Protocol};

/// The plugin's single engine, created on first use.
pub struct EngineCell<P: Protocol>(UnsafeCell<Option<Engine<P>>>);

// SAFETY: a component instance runs on one thread and never re-enters its
// exports (the host calls one export at a time and plugins import nothing
// that could call back), so the cell is never borrowed twice.
unsafe impl<P: Protocol> Sync for EngineCell<P> {}

impl<P: Protocol> EngineCell<P> {
    /// An empty cell, usable in a `static`.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// Run `f` on the engine.
    pub fn with<R>(&self, f: impl FnOnce(&mut Engine<P>) -> R) -> R {
        // SAFETY: see the `Sync` impl: no other borrow can be live.
        let slot = unsafe { &mut *self.0.get() };
        f(slot.get_or_insert_with(Engine::new))
    }
}

impl<P: Protocol> Default for EngineCell<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// The WIT form of [`Protocol::info`].
pub fn info<P: Protocol>() -> PluginInfo {
    let info = P::info();
    PluginInfo {
        name: info.name.to_string(),
        version: info.version.to_string(),
        description: info.description.to_string(),
        default_ports: info.default_ports.to_vec(),
        field_names: info.field_names.iter().map(|s| s.to_string()).collect(),
        call_field: P::call_field().map(str::to_string),
        capture_bytes: P::capture_bytes().map(|(request, response)| CaptureBudget { request, response }),
    }
}
