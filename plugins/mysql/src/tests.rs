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
