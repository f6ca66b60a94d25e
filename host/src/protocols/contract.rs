//! The WIT contract version and the checks a component must pass before it
//! is instantiated.

use anyhow::{bail, Result};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Package of the contract.
pub const PACKAGE: &str = "wirelens:protocol";
/// The version this daemon implements (`wit/protocol.wit`).
pub const WIT_VERSION: &str = "1.0.0";
const MAJOR: u64 = 1;

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
    let major = version.split('.').next().and_then(|m| m.parse::<u64>().ok());
    if major != Some(MAJOR) {
        bail!(
            "built against {PACKAGE}@{version}, but this daemon speaks {PACKAGE}@{WIT_VERSION} \
             (major versions differ): rebuild the plugin with a wirelens-sdk for {MAJOR}.x"
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
