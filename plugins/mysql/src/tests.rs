use wirelens_sdk::testing::{all_two_way_splits, check, check_rechunking, fuzz, run};
use wirelens_sdk::Direction;

use crate::cases::{self, query, result_set};
use crate::Mysql;

#[test]
fn cases() {
    for case in cases::all() {
        check::<Mysql>(&case);
    }
}

#[test]
fn any_two_way_split_of_a_response_gives_the_same_call() {
    let mut chunks = vec![wirelens_sdk::testing::TestChunk::egress(1, query("SELECT 1"))];
    let stream = result_set(true, 2);
    let whole = {
        chunks.push(wirelens_sdk::testing::TestChunk::ingress(1, &stream));
        run::<Mysql>(&chunks, &[1])
    };
    assert_eq!(whole.len(), 2, "{whole:?}");
    // The response alone (no request seen) is dropped whichever way it is cut.
    for (at, out) in all_two_way_splits::<Mysql>(Direction::Ingress, &stream) {
        assert!(out.is_empty(), "split at {at}: {out:?}");
    }
    for at in 1..stream.len() {
        let mut split = chunks[..1].to_vec();
        split.push(wirelens_sdk::testing::TestChunk::ingress(1, &stream[..at]));
        split.push(wirelens_sdk::testing::TestChunk::ingress(1, &stream[at..]));
        assert_eq!(run::<Mysql>(&split, &[1]), whole, "split at {at}");
    }
}

#[test]
fn random_rechunking_gives_the_same_messages() {
    check_rechunking::<Mysql>(&cases::all(), 200, 0x5eed);
}

#[test]
fn random_bytes_never_panic() {
    fuzz::<Mysql>(&cases::all(), 20_000, 7);
}

#[test]
fn fixtures_recorded_from_mariadb() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mysql");
    assert!(wirelens_sdk::testing::check_fixtures::<Mysql>(&dir, 50) >= 2);
}

/// A large result set cut by the capture: the call is reported once the
/// next command proves the response over, with every byte of the response
/// (the read that may start mid-packet included) and the time of its last
/// read; the next command pairs with its own answer.
#[test]
fn lost_response_bytes_resume_at_the_next_request() {
    use crate::cases::{command, ok};
    use wirelens_sdk::testing::TestChunk;
    let rows = result_set(true, 2);
    let chunks = vec![
        TestChunk::egress(1, query("SELECT * FROM big")),
        // 40 bytes captured of a 100,040-byte read.
        TestChunk::ingress(2, &rows[..40]).truncated(100_040),
        // The next read starts inside a row: "abc" would be a 6 MB header.
        TestChunk::ingress(3, b"abcdefgh\x00\x01\x02row data"),
        TestChunk::egress(4, command(0x0e, b"")),
        TestChunk::ingress(5, ok(1, 2)),
    ];
    let got = run::<Mysql>(&chunks, &[]);
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(got[0].contains("command=QUERY"), "{got:#?}");
    assert!(got[1].starts_with("1 resp in 2-3 size=100059 ok"), "the cut response, whole: {got:#?}");
    assert!(got[2].contains("command=PING"), "{got:#?}");
    assert_eq!(got[3], "1 resp in 5-5 size=11 ok", "the PING's own answer");
}

/// Reads of one byte, and the server's view of every case (whole and a
/// byte at a time), give the same messages.
#[test]
fn one_byte_reads_and_the_server_side() {
    wirelens_sdk::testing::check_one_byte_reads::<Mysql>(&cases::all());
    wirelens_sdk::testing::check_server_side::<Mysql>(&cases::all());
}

/// Other protocols' first bytes and random bytes are not claimed.
#[test]
fn claims_no_foreign_protocol() {
    wirelens_sdk::testing::check_claims_no_foreign_protocol::<Mysql>();
}
