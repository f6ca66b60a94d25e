//! The plugins' own test cases, run through their WebAssembly builds in the
//! sandbox (where `usize` is 32-bit): same cases, same results as natively.

mod common;


use wirelens::protocols::{LoadedPlugin, SandboxLimits, Source, WorkerConfig};
use wirelens_sdk::testing::{load_fixture, render, without_times};

#[test]
fn http_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let http = registry.catalog().get("http").expect("built-in http plugin").clone();
    let cases = wirelens_plugin_http::cases::all();
    assert!(cases.len() >= 10);
    common::run_cases(&http, registry.runtime(), &cases);
}

#[test]
fn redis_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let redis = registry.catalog().get("redis").expect("built-in redis plugin").clone();
    common::run_cases(&redis, registry.runtime(), &wirelens_plugin_redis::cases::all());
}

#[test]
fn memcached_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let memcached = registry.catalog().get("memcached").expect("built-in memcached plugin").clone();
    common::run_cases(&memcached, registry.runtime(), &wirelens_plugin_memcached::cases::all());
}

#[test]
fn nats_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let nats = registry.catalog().get("nats").expect("built-in nats plugin").clone();
    common::run_cases(&nats, registry.runtime(), &wirelens_plugin_nats::cases::all());
}

#[test]
fn mqtt_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let mqtt = registry.catalog().get("mqtt").expect("built-in mqtt plugin").clone();
    common::run_cases(&mqtt, registry.runtime(), &wirelens_plugin_mqtt::cases::all());
}

#[test]
fn kafka_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let kafka = registry.catalog().get("kafka").expect("built-in kafka plugin").clone();
    common::run_cases(&kafka, registry.runtime(), &wirelens_plugin_kafka::cases::all());
}

#[test]
fn amqp_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let amqp = registry.catalog().get("amqp").expect("built-in amqp plugin").clone();
    common::run_cases(&amqp, registry.runtime(), &wirelens_plugin_amqp::cases::all());
}

#[test]
fn dns_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let dns = registry.catalog().get("dns").expect("built-in dns plugin").clone();
    common::run_cases(&dns, registry.runtime(), &wirelens_plugin_dns::cases::all());
}

#[test]
fn mysql_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let mysql = registry.catalog().get("mysql").expect("built-in mysql plugin").clone();
    common::run_cases(&mysql, registry.runtime(), &wirelens_plugin_mysql::cases::all());
}

#[test]
fn pgsql_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let pgsql = registry.catalog().get("pgsql").expect("built-in pgsql plugin").clone();
    common::run_cases(&pgsql, registry.runtime(), &wirelens_plugin_pgsql::cases::all());
}

#[test]
fn http2_cases_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let http2 = registry.catalog().get("http2").expect("built-in http2 plugin").clone();
    common::run_cases(&http2, registry.runtime(), &wirelens_plugin_http2::cases::all());
}

/// 10,000 streams open at once on one connection, through the wasm build
/// under the default sandbox limits (64 MiB): every call is counted, and
/// the instance's memory stays within its cap.
#[test]
fn http2_holds_ten_thousand_concurrent_streams_in_the_sandbox() {
    use wirelens_plugin_http2::cases::{frame, get_request};
    use wirelens_sdk::testing::TestChunk;
    const STREAMS: u32 = 10_000;
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let http2 = registry.catalog().get("http2").expect("built-in http2 plugin").clone();
    let mut sandbox = common::new_sandbox(&http2, registry.runtime());
    let names: Vec<String> = http2.meta.field_names.iter().map(|s| s.to_string()).collect();
    let ids: Vec<u32> = (0..STREAMS).map(|i| 2 * i + 1).collect();
    // Requests: HEADERS without END_STREAM for every stream, then each
    // stream's last DATA; responses after all of them.
    let mut chunks = vec![TestChunk::egress(1, wirelens_plugin_http2::PREFACE)];
    for (n, group) in ids.chunks(100).enumerate() {
        let heads: Vec<u8> = group
            .iter()
            .flat_map(|&id| {
                let mut h = get_request(id, "/s", "h");
                h[4] = 0x4; // END_HEADERS only: the stream stays open
                h
            })
            .collect();
        chunks.push(TestChunk::egress(2 + n as u64, heads));
    }
    for group in ids.chunks(100) {
        let ends: Vec<u8> = group.iter().flat_map(|&id| frame(0, 0x1, id, b"x")).collect();
        chunks.push(TestChunk::egress(500, ends));
    }
    for group in ids.chunks(100) {
        let replies: Vec<u8> =
            group.iter().flat_map(|&id| wirelens_plugin_http2::cases::ok_response(id, b"ok")).collect();
        chunks.push(TestChunk::ingress(600, replies));
    }
    let mut lines = Vec::new();
    for chunk in &chunks {
        let (h, d) = common::host_chunks(std::slice::from_ref(chunk));
        lines.extend(render(&common::sdk_batch(sandbox.feed(&h, &d).unwrap()), &names));
    }
    let requests = lines.iter().filter(|l| l.contains(" req ")).count();
    let responses = lines.iter().filter(|l| l.contains(" resp ") && l.contains(" ok ")).count();
    assert_eq!((requests, responses), (STREAMS as usize, STREAMS as usize));
    assert!(lines.iter().all(|l| !l.contains("error")), "{:?}", lines.iter().find(|l| l.contains("error")));
}

/// The streams recorded from real servers (`tests/fixtures`) give, through
/// each built-in plugin's wasm build, what the native tests expect.
#[test]
fn recorded_fixtures_through_wasm() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let mut checked = 0;
    for protocol in ["http", "redis", "dns", "mysql", "pgsql", "http2", "memcached", "nats", "mqtt", "kafka", "amqp"] {
        let plugin = registry.catalog().get(protocol).expect("built-in plugin").clone();
        let dir = common::root().join("tests/fixtures").join(protocol);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "chunks") {
                continue;
            }
            let chunks = load_fixture(&path);
            let mut conns: Vec<u64> = chunks.iter().map(|c| c.conn).collect();
            conns.sort_unstable();
            conns.dedup();
            let lines = common::sandbox_lines(&plugin, registry.runtime(), &chunks, &conns);
            let want = std::fs::read_to_string(path.with_extension("expect")).unwrap();
            assert_eq!(without_times(&lines), want.lines().collect::<Vec<_>>(), "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} fixtures");
}

#[test]
fn sdk_example_cases_through_wasm() {
    let runtime = common::runtime(SandboxLimits::default());
    let bytes = common::build_plugin("sdk/example", &[]);
    let minikv = LoadedPlugin::load(&runtime, &bytes, Source::Builtin, &Default::default()).unwrap();
    assert_eq!(&*minikv.meta.name, "minikv");
    common::run_cases(&minikv, &runtime, &wirelens_plugin_minikv::cases::all());
}

/// No built-in plugin claims another's traffic: the first bytes of each
/// direction of every recorded stream are offered to every other plugin
/// (through its wasm build), whole and cut short, from both ends; none
/// reaches the daemon's claim threshold.
#[test]
fn no_plugin_claims_another_protocols_recordings() {
    use wirelens::protocols::bindings::{Direction, Role};
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let protocols = ["http", "redis", "dns", "mysql", "pgsql", "http2", "memcached", "nats", "mqtt", "kafka", "amqp"];
    let mut checked = 0;
    for owner in protocols {
        let dir = common::root().join("tests/fixtures").join(owner);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "chunks") {
                continue;
            }
            let chunks = load_fixture(&path);
            // The first chunk of each direction of each connection.
            let mut firsts: Vec<&wirelens_sdk::testing::TestChunk> = Vec::new();
            for c in &chunks {
                if !firsts.iter().any(|f| f.conn == c.conn && f.direction == c.direction) {
                    firsts.push(c);
                }
            }
            for other in protocols.iter().filter(|p| **p != owner) {
                let plugin = registry.catalog().get(other).unwrap().clone();
                let mut sandbox = common::new_sandbox(&plugin, registry.runtime());
                for c in &firsts {
                    let client_dir = match c.direction {
                        wirelens_sdk::Direction::Egress => Direction::Egress,
                        wirelens_sdk::Direction::Ingress => Direction::Ingress,
                    };
                    let server_dir = match client_dir {
                        Direction::Egress => Direction::Ingress,
                        Direction::Ingress => Direction::Egress,
                    };
                    for (dir, role) in
                        [(client_dir, Role::Client), (server_dir, Role::Server), (client_dir, Role::Unknown)]
                    {
                        for len in [c.bytes.len(), c.bytes.len().min(16)] {
                            let confidence = sandbox.detect(dir, role, &c.bytes[..len]).unwrap();
                            assert!(
                                confidence < WorkerConfig::default().detect_threshold,
                                "{other} claims {} ({dir:?}, {role:?}, {len} bytes) with {confidence}",
                                path.display()
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 200, "{checked} checks");
}
