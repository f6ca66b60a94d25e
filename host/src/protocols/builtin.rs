//! Plugins built from `plugins/` by the build script and embedded in the
//! binary: available with no plugin directory and no extra step.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
