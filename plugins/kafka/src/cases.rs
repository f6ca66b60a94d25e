//! Test cases shared by the native tests and the daemon's wasm test. The
//! messages follow the Kafka protocol's message specifications and what
//! kafka-python 3.0 and Tansu send (`tests/fixtures/kafka` holds streams
//! recorded from them).

use wirelens_sdk::testing::{Case, TestChunk};

/// A request: size, API key, version, correlation id, client id (header
/// v1, or v2 with empty tagged fields when `flexible`), then `body`.
pub fn request(key: u16, version: u16, correlation: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&key.to_be_bytes());
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&correlation.to_be_bytes());
    m.extend_from_slice(&(b"wl-test".len() as u16).to_be_bytes());
    m.extend_from_slice(b"wl-test");
    if flexible {
        m.push(0);
    }
    m.extend_from_slice(body);
    sized(m)
}

/// A response: size, correlation id (and empty tagged fields when
/// `flexible`), then `body`.
pub fn response(correlation: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut m = correlation.to_be_bytes().to_vec();
    if flexible {
        m.push(0);
    }
    m.extend_from_slice(body);
    sized(m)
}

fn sized(m: Vec<u8>) -> Vec<u8> {
    [&(m.len() as u32).to_be_bytes()[..], &m].concat()
}

/// A compact string (varint length + 1; short strings only).
fn compact(s: &[u8]) -> Vec<u8> {
    [&[s.len() as u8 + 1][..], s].concat()
}

fn string(s: &[u8]) -> Vec<u8> {
    [&(s.len() as u16).to_be_bytes()[..], s].concat()
}

/// ApiVersions v3 request (flexible): client software name and version.
pub fn api_versions_request(correlation: i32) -> Vec<u8> {
    request(18, 3, correlation, true, &[compact(b"wl"), compact(b"1.0"), vec![0]].concat())
}

/// ApiVersions response (header v0 whatever the version): error code, one
/// API range, throttle time, tagged fields.
pub fn api_versions_response(correlation: i32, error: i16) -> Vec<u8> {
    let body = [&error.to_be_bytes()[..], &[2], &0u16.to_be_bytes(), &0u16.to_be_bytes(), &9u16.to_be_bytes(), &[0], &[0, 0, 0, 0], &[0]].concat();
    response(correlation, false, &body)
}

/// Produce v9 (flexible) of `value` to partition 0 of `topic` with `acks`.
pub fn produce(correlation: i32, topic: &str, acks: i16, value: &[u8]) -> Vec<u8> {
    let body = [
        &[0][..], // transactional id: null
        &acks.to_be_bytes(),
        &30_000i32.to_be_bytes(),
        &[2],
        &compact(topic.as_bytes()),
        &[2],
        &0i32.to_be_bytes(),
        &[0x80 | ((value.len() + 1) & 0x7f) as u8, ((value.len() + 1) >> 7) as u8], // records (compact bytes)
        value,
        &[0, 0], // partition and topic tagged fields
        &[0],
    ]
    .concat();
    request(0, 9, correlation, true, &body)
}

/// Produce v9 response: one topic, one partition with `error`.
pub fn produce_response(correlation: i32, topic: &str, error: i16) -> Vec<u8> {
    let body = [
        &[2][..],
        &compact(topic.as_bytes()),
        &[2],
        &0i32.to_be_bytes(),
        &error.to_be_bytes(),
        &7i64.to_be_bytes(),  // base offset
        &(-1i64).to_be_bytes(), // log append time
        &0i64.to_be_bytes(),  // log start offset
        &[1, 0],              // record errors (empty), error message (null)
        &[0, 0],
        &0i32.to_be_bytes(), // throttle time
        &[0],
    ]
    .concat();
    response(correlation, true, &body)
}

/// Metadata v1 (not flexible) for `topic`.
pub fn metadata_v1(correlation: i32, topic: &str) -> Vec<u8> {
    request(3, 1, correlation, false, &[&1i32.to_be_bytes()[..], &string(topic.as_bytes())].concat())
}

/// A Metadata v1 response with no brokers and no topics (the plugin reads
/// no error code from Metadata: its errors are per topic).
pub fn metadata_v1_response(correlation: i32) -> Vec<u8> {
    response(correlation, false, &[&0i32.to_be_bytes()[..], &0i32.to_be_bytes(), &0i32.to_be_bytes()].concat())
}

/// Fetch v12 (flexible) of partition 0 of `topic`.
fn fetch(correlation: i32, topic: &str) -> Vec<u8> {
    let body = [
        &(-1i32).to_be_bytes()[..],
        &500i32.to_be_bytes(),
        &1i32.to_be_bytes(),
        &(50i32 << 20).to_be_bytes(),
        &[0],
        &0i32.to_be_bytes(),
        &(-1i32).to_be_bytes(),
        &[2],
        &compact(topic.as_bytes()),
        &[1], // no partitions, for brevity
        &[0],
        &[1], // forgotten topics
        &[1], // rack id ""
        &[0],
    ]
    .concat();
    request(1, 12, correlation, true, &body)
}

/// Fetch v12 response: throttle time, error code, session id, no topics.
fn fetch_response(correlation: i32, error: i16) -> Vec<u8> {
    let body = [&0i32.to_be_bytes()[..], &error.to_be_bytes(), &0i32.to_be_bytes(), &[1], &[0]].concat();
    response(correlation, true, &body)
}

fn req(ts: u64, size: usize, id: i32, api: &str, version: u16, topic: Option<&str>) -> String {
    let topic = topic.map(|t| format!(" topic={t}")).unwrap_or_default();
    format!("1 req out {ts}-{ts} size={size} id={id} ok api={api} api_version={version}{topic}")
}

fn resp(ts: u64, size: usize, id: i32, error: Option<i16>) -> String {
    match error {
        Some(e) => format!("1 resp in {ts}-{ts} size={size} id={id} {} error_code={e}", if e == 0 { "ok" } else { "fail" }),
        None => format!("1 resp in {ts}-{ts} size={size} id={id} ok"),
    }
}

pub fn all() -> Vec<Case> {
    let av = api_versions_request(1);
    let av_ok = api_versions_response(1, 0);
    let md = metadata_v1(2, "wl-events");
    let md_resp = metadata_v1_response(2);
    let p = produce(3, "wl-events", 1, b"hello");
    let p_ok = produce_response(3, "wl-events", 0);
    let p_bad = produce_response(4, "wl-events", 3);
    let p0 = produce(5, "wl-events", 0, b"fire");
    let f = fetch(6, "wl-events");
    let f_ok = fetch_response(6, 0);
    let big = produce(7, "wl-big", 1, &vec![b'x'; 100_000]);
    let big_ok = produce_response(7, "wl-big", 0);
    // FindCoordinator v4 (flexible): key type, coordinator keys; its
    // response: throttle time, coordinators (key, node, host, port, error
    // code, message, tagged fields).
    let find_coordinator_v4 = request(10, 4, 12, true, &[&[0][..], &[2], &compact(b"group-1"), &[0]].concat());
    let find_coordinator_v4_response = response(
        12,
        true,
        &[
            &0i32.to_be_bytes()[..],
            &[2],
            &compact(b"group-1"),
            &1i32.to_be_bytes(),
            &compact(b"127.0.0.1"),
            &9092i32.to_be_bytes(),
            &0i16.to_be_bytes(),
            &[0, 0],
            &[0],
        ]
        .concat(),
    );
    // DescribeTopicPartitions (key 75, after the table; flexible from v0).
    let describe_topic_partitions = request(75, 0, 13, true, &[&[2][..], &compact(b"t"), &[0], &[0xff, 0xff, 0xff, 0x7f], &[0xff], &[0]].concat());
    let describe_topic_partitions_response = response(13, true, &[&0i32.to_be_bytes()[..], &[1], &[0xff], &[0]].concat());
    vec![
        Case {
            name: "ApiVersions, Metadata, Produce (an error), acks=0, Fetch",
            chunks: vec![
                TestChunk::egress(1, &av),
                TestChunk::ingress(2, &av_ok),
                TestChunk::egress(3, &md),
                TestChunk::ingress(4, &md_resp),
                TestChunk::egress(5, &p),
                TestChunk::ingress(6, &p_ok),
                TestChunk::egress(7, produce(4, "wl-events", 1, b"again")),
                TestChunk::ingress(8, &p_bad),
                TestChunk::egress(9, &p0),
                // Tansu answers acks=0 anyway: passed over.
                TestChunk::ingress(9, produce_response(5, "wl-events", 0)),
                TestChunk::egress(10, &f),
                TestChunk::ingress(11, &f_ok),
            ],
            close: vec![],
            expect: vec![
                req(1, av.len(), 1, "ApiVersions", 3, None),
                resp(2, av_ok.len(), 1, Some(0)),
                req(3, md.len(), 2, "Metadata", 1, Some("wl-events")),
                resp(4, md_resp.len(), 2, None),
                req(5, p.len(), 3, "Produce", 9, Some("wl-events")),
                resp(6, p_ok.len(), 3, Some(0)),
                req(7, p.len(), 4, "Produce", 9, Some("wl-events")),
                resp(8, p_bad.len(), 4, Some(3)),
                format!("1 oneway out 9-9 size={} ok api=Produce api_version=9 topic=wl-events", p0.len()),
                req(10, f.len(), 6, "Fetch", 12, Some("wl-events")),
                resp(11, f_ok.len(), 6, Some(0)),
            ],
        },
        Case {
            name: "pipelined requests paired by correlation id; FindCoordinator v4; a key newer than the table",
            chunks: vec![
                TestChunk::egress(1, [api_versions_request(10), metadata_v1(11, "a")].concat()),
                TestChunk::ingress(2, [api_versions_response(10, 35), metadata_v1_response(11)].concat()),
                TestChunk::egress(3, &find_coordinator_v4),
                TestChunk::ingress(4, &find_coordinator_v4_response),
                TestChunk::egress(5, &describe_topic_partitions),
                TestChunk::ingress(6, &describe_topic_partitions_response),
            ],
            close: vec![],
            expect: vec![
                req(1, av.len(), 10, "ApiVersions", 3, None),
                req(1, metadata_v1(11, "a").len(), 11, "Metadata", 1, Some("a")),
                resp(2, av_ok.len(), 10, Some(35)),
                resp(2, md_resp.len(), 11, None),
                req(3, find_coordinator_v4.len(), 12, "FindCoordinator", 4, None),
                // v4 answers per key: no top-level error code to read.
                resp(4, find_coordinator_v4_response.len(), 12, None),
                req(5, describe_topic_partitions.len(), 13, "api_75", 0, None),
                resp(6, describe_topic_partitions_response.len(), 13, None),
            ],
        },
        Case {
            name: "a record batch longer than the capture is skipped by its size",
            chunks: vec![
                TestChunk::egress(1, &big[..4096]).truncated(big.len() as u64),
                TestChunk::ingress(2, &big_ok),
                TestChunk::egress(3, &av),
                TestChunk::ingress(4, &av_ok),
            ],
            close: vec![],
            expect: vec![
                req(1, big.len(), 7, "Produce", 9, Some("wl-big")),
                resp(2, big_ok.len(), 7, Some(0)),
                req(3, av.len(), 1, "ApiVersions", 3, None),
                resp(4, av_ok.len(), 1, Some(0)),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kafka;
    use wirelens_sdk::testing::run;
    use wirelens_sdk::{Direction, Protocol, Role};

    #[test]
    fn cases() {
        for case in all() {
            assert_eq!(run::<Kafka>(&case.chunks, &case.close), case.expect, "{}", case.name);
        }
    }

    #[test]
    fn detect() {
        let k = Kafka;
        assert!(k.detect(Direction::Egress, Role::Client, &api_versions_request(1)) >= 90);
        assert!(k.detect(Direction::Ingress, Role::Server, &metadata_v1(1, "t")) >= 90);
        assert!(k.detect(Direction::Egress, Role::Client, &produce(3, "t", 1, b"x")) >= 50);
        // Cut, or a size that does not match: no claim.
        assert_eq!(k.detect(Direction::Egress, Role::Client, &api_versions_request(1)[..10]), 0);
        assert_eq!(k.detect(Direction::Ingress, Role::Client, &api_versions_response(1, 0)), 0);
        // PostgreSQL's startup message reads as Metadata v0 with a bad client id.
        let mut pg = vec![0, 0, 0, 0x29, 0, 3, 0, 0];
        pg.extend_from_slice(b"user\0postgres\0database\0app\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        pg.truncate(0x29);
        assert_eq!(k.detect(Direction::Egress, Role::Client, &pg), 0);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/kafka");
        assert!(wirelens_sdk::testing::check_fixtures::<Kafka>(&dir, 50) >= 1);
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        wirelens_sdk::testing::check_rechunking::<Kafka>(&all(), 200, 0x5eed);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Kafka>(&all(), 20_000, 11);
    }

    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<Kafka>(&all());
        wirelens_sdk::testing::check_server_side::<Kafka>(&all());
    }

    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_none_but::<Kafka>(&["Kafka"]);
    }

    /// A lost response costs its call's outcome only: the others stay
    /// paired by correlation id.
    #[test]
    fn a_lost_response_costs_only_its_call() {
        let chunks = vec![
            TestChunk::egress(1, [metadata_v1(1, "a"), metadata_v1(2, "b"), metadata_v1(3, "c")].concat()),
            TestChunk::ingress(2, metadata_v1_response(1)),
            TestChunk::ingress(3, b"").truncated(metadata_v1_response(2).len() as u64),
            TestChunk::ingress(4, metadata_v1_response(3)),
        ];
        let got = run::<Kafka>(&chunks, &[1]);
        let requests = got.iter().filter(|l| l.contains(" req ")).count();
        let responses = got.iter().filter(|l| l.contains(" resp ")).count();
        assert!(!got.iter().any(|l| l.contains("error")), "{got:?}");
        assert_eq!((requests, responses), (3, 3), "{got:?}");
    }
}
