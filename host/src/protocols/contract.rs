//! The WIT contract version and the checks a component must pass before it
//! is instantiated.

use anyhow::{bail, Result};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Package of the contract.
pub const PACKAGE: &str = "wirelens:protocol";
/// The version this daemon implements (`wit/protocol.wit`).
pub const WIT_VERSION: &str = "1.2.0";
const MAJOR: u64 = 1;
/// The newest minor version of [`MAJOR`] the daemon has bindings for (it
/// has them for every one down to 0: see `bindings.rs`).
const MINOR: u64 = 2;

/// Check what a component exports and imports against the contract; returns
/// the contract version it was built against.
pub fn check(engine: &Engine, component: &Component) -> Result<String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let parser_prefix = format!("{PACKAGE}/parser@");
    let Some(version) = exports.iter().find_map(|n| n.strip_prefix(&parser_prefix)) else {
        bail!(
            "not a wirelens protocol plugin: it exports [{}], not `{PACKAGE}/parser` (build it with wirelens-sdk)",
            exports.join(", ")
        );
    };
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    let (major, minor) = (parts.next().flatten(), parts.next().flatten());
    if major != Some(MAJOR) {
        bail!(
            "built against {PACKAGE}@{version}, but this daemon speaks {PACKAGE}@{WIT_VERSION} \
             (major versions differ): rebuild the plugin with a wirelens-sdk for {MAJOR}.x"
        );
    }
    if minor.is_none_or(|m| m > MINOR) {
        bail!(
            "built against {PACKAGE}@{version}, newer than this daemon's {PACKAGE}@{WIT_VERSION}: \
             update the daemon, or build the plugin with a wirelens-sdk for {WIT_VERSION}"
        );
    }
    let allowed = [format!("{PACKAGE}/host@{MAJOR}."), format!("{PACKAGE}/types@{MAJOR}.")];
    for (name, _) in ty.imports(engine) {
        if !allowed.iter().any(|prefix| name.starts_with(prefix.as_str())) {
            bail!(
                "imports `{name}`, which the sandbox does not provide: plugins get no WASI or other \
                 capabilities (build for wasm32-unknown-unknown with wirelens-sdk)"
            );
        }
    }
    Ok(version.to_string())
}
