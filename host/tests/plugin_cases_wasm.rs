//! The plugins' own test cases, run through their WebAssembly builds in the
//! sandbox (where `usize` is 32-bit): same cases, same results as natively.

mod common;

use std::sync::Arc;

use wirelens::protocols::{LoadedPlugin, Sandbox, SandboxLimits, Source};
use wirelens_sdk::testing::{render, Case};

/// Feed each case one chunk per call, then all chunks in one batch; both must
/// give the case's expected lines.
fn run_cases(plugin: &Arc<LoadedPlugin>, runtime: &wirelens::protocols::Runtime, cases: &[Case]) {
    let names: Vec<String> = plugin.meta.field_names.iter().map(|s| s.to_string()).collect();
    for case in cases {
        let new_sandbox = || {
            let mut s = Sandbox::instantiate(runtime, plugin_pre(plugin), Arc::from("test")).unwrap();
            s.set_field_count(names.len());
            s
        };
        let mut sandbox = new_sandbox();
        let mut one_by_one = Vec::new();
        for chunk in &case.chunks {
            let (h, d) = common::host_chunks(std::slice::from_ref(chunk));
            one_by_one.extend(render(&common::sdk_batch(sandbox.feed(&h, &d).unwrap()), &names));
        }
        one_by_one.extend(render(&common::sdk_batch(sandbox.close(&case.close).unwrap()), &names));
        assert_eq!(one_by_one, case.expect, "wasm, one chunk per call: case `{}`", case.name);

        let mut sandbox = new_sandbox();
        let (h, d) = common::host_chunks(&case.chunks);
        let mut batched = render(&common::sdk_batch(sandbox.feed(&h, &d).unwrap()), &names);
        batched.extend(render(&common::sdk_batch(sandbox.close(&case.close).unwrap()), &names));
        assert_eq!(batched, case.expect, "wasm, one batch: case `{}`", case.name);
    }
}

fn plugin_pre(
    p: &LoadedPlugin,
) -> &wirelens::protocols::bindings::ProtocolPluginPre<wirelens::protocols::runtime::StoreData> {
    p.pre()
}

#[test]
fn http_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let http = registry.catalog().get("http").expect("built-in http plugin").clone();
    let cases = wirelens_plugin_http::cases::all();
    assert!(cases.len() >= 10);
    run_cases(&http, registry.runtime(), &cases);
}

#[test]
fn redis_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let redis = registry.catalog().get("redis").expect("built-in redis plugin").clone();
    run_cases(&redis, registry.runtime(), &wirelens_plugin_redis::cases::all());
}

#[test]
fn dns_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let dns = registry.catalog().get("dns").expect("built-in dns plugin").clone();
    run_cases(&dns, registry.runtime(), &wirelens_plugin_dns::cases::all());
}

#[test]
fn sdk_example_cases_through_wasm() {
    let runtime = common::runtime(SandboxLimits::default());
    let bytes = common::build_plugin("sdk/example", &[]);
    let minikv = LoadedPlugin::load(&runtime, &bytes, Source::Builtin, &[]).unwrap();
    assert_eq!(&*minikv.meta.name, "minikv");
    run_cases(&minikv, &runtime, &wirelens_plugin_minikv::cases::all());
}
