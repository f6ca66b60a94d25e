//! Test cases shared by the native unit tests (below) and the daemon's test
//! that runs them through the WebAssembly build (`host/tests/http_wasm.rs`).

use wirelens_sdk::testing::{Case, TestChunk};
use wirelens_sdk::Role;

fn req_line(conn: u64, ts: u64, size: usize, tail: &str) -> String {
    format!("{conn} req out {ts}-{ts} size={size} ok {tail}")
}

fn resp_line(conn: u64, start: u64, end: u64, size: usize, ok: bool, code: u16) -> String {
    let ok = if ok { "ok" } else { "fail" };
    format!("{conn} resp in {start}-{end} size={size} {ok} version=1 resp_code={code}")
}

const GET: &str = "GET /index.html?user=7&x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
const GET_FIELDS: &str = "version=1 method=GET url=/index.html host=example.com";
const OK_HELLO: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/// Every case the HTTP parser must pass.
pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();

    // nginx's `return 201` answers a chunked POST as soon as it has read the
    // head, before the body (a server's view: the request arrives in two
    // reads, the answer leaves between them). The two still pair.
    let post_head = "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let post_body = "9\r\npart one,\r\n0\r\n\r\n";
    let created = "HTTP/1.1 201 Created\r\nContent-Length: 8\r\n\r\ncreated\n";
    cases.push(Case {
        name: "server side: a response before its request's body",
        chunks: vec![
            TestChunk::ingress(10, post_head).role(Role::Server).on(9),
            TestChunk::egress(11, created).role(Role::Server).on(9),
            TestChunk::ingress(12, post_body).role(Role::Server).on(9),
            TestChunk::ingress(20, GET).role(Role::Server).on(9),
            TestChunk::egress(21, OK_HELLO).role(Role::Server).on(9),
        ],
        close: vec![],
        expect: vec![
            format!(
                "9 req in 10-12 size={} ok version=1 method=POST url=/echo host=h",
                post_head.len() + post_body.len()
            ),
            format!("9 resp out 11-11 size={} ok version=1 resp_code=201", created.len()),
            format!("9 req in 20-20 size={} ok {GET_FIELDS}", GET.len()),
            format!("9 resp out 21-21 size={} ok version=1 resp_code=200", OK_HELLO.len()),
        ],
    });

    cases.push(Case {
        name: "content-length response",
        chunks: vec![TestChunk::egress(10, GET), TestChunk::ingress(20, OK_HELLO)],
        close: vec![],
        expect: vec![req_line(1, 10, GET.len(), GET_FIELDS), resp_line(1, 20, 20, OK_HELLO.len(), true, 200)],
    });

    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    cases.push(Case {
        name: "chunked response split in three",
        chunks: vec![
            TestChunk::egress(10, GET),
            TestChunk::ingress(20, &chunked[..30]),
            TestChunk::ingress(21, &chunked[30..60]),
            TestChunk::ingress(22, &chunked[60..]),
        ],
        close: vec![],
        expect: vec![req_line(1, 10, GET.len(), GET_FIELDS), resp_line(1, 20, 22, chunked.len(), true, 200)],
    });

    let chunked_post = "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    cases.push(Case {
        name: "chunked request",
        chunks: vec![TestChunk::egress(10, chunked_post), TestChunk::ingress(20, OK_HELLO)],
        close: vec![],
        expect: vec![
            req_line(1, 10, chunked_post.len(), "version=1 method=POST url=/upload host=h"),
            resp_line(1, 20, 20, OK_HELLO.len(), true, 200),
        ],
    });

    let close_body = "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until the end";
    cases.push(Case {
        name: "connection-close body",
        chunks: vec![
            TestChunk::egress(10, "GET /old HTTP/1.0\r\n\r\n"),
            TestChunk::ingress(20, close_body),
            TestChunk::ingress(25, " and more").truncated(1000),
        ],
        close: vec![1],
        expect: vec![
            req_line(1, 10, 21, "version=0 method=GET url=/old"),
            format!("1 resp in 20-25 size={} ok version=0 resp_code=200", close_body.len() + 1000),
        ],
    });

    cases.push(Case {
        name: "keep-alive",
        chunks: vec![
            TestChunk::egress(10, GET),
            TestChunk::ingress(20, OK_HELLO),
            TestChunk::egress(30, GET),
            TestChunk::ingress(40, OK_HELLO),
        ],
        close: vec![],
        expect: vec![
            req_line(1, 10, GET.len(), GET_FIELDS),
            resp_line(1, 20, 20, OK_HELLO.len(), true, 200),
            req_line(1, 30, GET.len(), GET_FIELDS),
            resp_line(1, 40, 40, OK_HELLO.len(), true, 200),
        ],
    });

    let post = "POST /api/v1/items HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\n\r\nabcd";
    let not_found = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop";
    cases.push(Case {
        name: "pipelined requests and responses in one chunk each",
        chunks: vec![
            TestChunk::egress(10, format!("{GET}{post}{GET}")),
            TestChunk::ingress(20, format!("{OK_HELLO}{not_found}{OK_HELLO}")),
        ],
        close: vec![],
        expect: vec![
            req_line(1, 10, GET.len(), GET_FIELDS),
            req_line(1, 10, post.len(), "version=1 method=POST url=/api/v1/items host=api"),
            req_line(1, 10, GET.len(), GET_FIELDS),
            resp_line(1, 20, 20, OK_HELLO.len(), true, 200),
            resp_line(1, 20, 20, not_found.len(), false, 404),
            resp_line(1, 20, 20, OK_HELLO.len(), true, 200),
        ],
    });

    let head = "HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n";
    let head_resp = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    cases.push(Case {
        name: "HEAD response has no body",
        chunks: vec![
            TestChunk::egress(10, format!("{head}{GET}")),
            TestChunk::ingress(20, format!("{head_resp}{OK_HELLO}")),
        ],
        close: vec![],
        expect: vec![
            req_line(1, 10, head.len(), "version=1 method=HEAD url=/big host=h"),
            req_line(1, 10, GET.len(), GET_FIELDS),
            resp_line(1, 20, 20, head_resp.len(), true, 200),
            resp_line(1, 20, 20, OK_HELLO.len(), true, 200),
        ],
    });

    let expect_post = "POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let no_content = "HTTP/1.1 204 No Content\r\nContent-Length: 50\r\n\r\n";
    let not_modified = "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n";
    cases.push(Case {
        name: "1xx interim, 204 and 304 without bodies",
        chunks: vec![
            TestChunk::egress(10, expect_post),
            TestChunk::ingress(11, "HTTP/1.1 100 Continue\r\n\r\n"),
            TestChunk::egress(12, "ok"),
            TestChunk::ingress(20, no_content),
            TestChunk::egress(30, GET),
            TestChunk::egress(31, GET),
            TestChunk::ingress(40, format!("{not_modified}{OK_HELLO}")),
        ],
        close: vec![],
        expect: vec![
            format!("1 req out 10-12 size={} ok version=1 method=POST url=/e", expect_post.len() + 2),
            resp_line(1, 20, 20, no_content.len(), true, 204),
            req_line(1, 30, GET.len(), GET_FIELDS),
            req_line(1, 31, GET.len(), GET_FIELDS),
            resp_line(1, 40, 40, not_modified.len(), true, 304),
            resp_line(1, 40, 40, OK_HELLO.len(), true, 200),
        ],
    });

    // The capture copied 4 KiB of a 100 KiB upload: the parser skips the
    // missing body and still parses the next request.
    let upload_head = "PUT /blob HTTP/1.1\r\nHost: s3\r\nContent-Length: 100000\r\n\r\n";
    let mut captured = upload_head.as_bytes().to_vec();
    captured.resize(4096, b'x');
    let upload_len = upload_head.len() + 100_000;
    let big_resp_head = "HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n";
    let mut big_resp = big_resp_head.as_bytes().to_vec();
    big_resp.resize(4096, b'y');
    cases.push(Case {
        name: "truncated captures stay in sync",
        chunks: vec![
            TestChunk::egress(10, &captured).truncated(upload_len as u64),
            TestChunk::ingress(20, &big_resp).truncated((big_resp_head.len() + 65536) as u64),
            TestChunk::egress(30, GET),
            TestChunk::ingress(40, OK_HELLO),
        ],
        close: vec![],
        expect: vec![
            req_line(1, 10, upload_len, "version=1 method=PUT url=/blob host=s3"),
            resp_line(1, 20, 20, big_resp_head.len() + 65536, true, 200),
            req_line(1, 30, GET.len(), GET_FIELDS),
            resp_line(1, 40, 40, OK_HELLO.len(), true, 200),
        ],
    });

    // A body sent in several writes, the first of them truncated.
    let mut first = big_resp_head.as_bytes().to_vec();
    first.resize(1000, b'z');
    cases.push(Case {
        name: "truncated body continued by later writes",
        chunks: vec![
            TestChunk::egress(10, GET),
            TestChunk::ingress(20, &first).truncated(30000),
            TestChunk::ingress(21, vec![b'z'; 512]).truncated(big_resp_head.len() as u64 + 65536 - 30000),
            TestChunk::egress(30, GET),
        ],
        close: vec![],
        expect: vec![
            req_line(1, 10, GET.len(), GET_FIELDS),
            resp_line(1, 20, 21, big_resp_head.len() + 65536, true, 200),
            req_line(1, 30, GET.len(), GET_FIELDS),
        ],
    });

    cases.push(Case {
        name: "server role: requests come in",
        chunks: vec![
            TestChunk::ingress(10, GET).role(Role::Server).on(7),
            TestChunk::egress(20, OK_HELLO).role(Role::Server).on(7),
        ],
        close: vec![],
        expect: vec![
            format!("7 req in 10-10 size={} ok {GET_FIELDS}", GET.len()),
            format!("7 resp out 20-20 size={} ok version=1 resp_code=200", OK_HELLO.len()),
        ],
    });

    cases.push(Case {
        name: "two connections interleaved",
        chunks: vec![
            TestChunk::egress(10, &GET[..20]).on(1),
            TestChunk::egress(11, GET).on(2),
            TestChunk::egress(12, &GET[20..]).on(1),
            TestChunk::ingress(20, OK_HELLO).on(2),
            TestChunk::ingress(21, not_found).on(1),
        ],
        close: vec![],
        expect: vec![
            req_line(2, 11, GET.len(), GET_FIELDS),
            format!("1 req out 10-12 size={} ok {GET_FIELDS}", GET.len()),
            resp_line(2, 20, 20, OK_HELLO.len(), true, 200),
            resp_line(1, 21, 21, not_found.len(), false, 404),
        ],
    });

    let ws = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
    let switching = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    cases.push(Case {
        name: "upgrade ends HTTP on the connection",
        chunks: vec![
            TestChunk::egress(10, ws),
            TestChunk::ingress(20, switching),
            TestChunk::ingress(30, [0x81u8, 0x02, b'h', b'i']),
        ],
        close: vec![],
        expect: vec![
            req_line(1, 10, ws.len(), "version=1 method=GET url=/ws"),
            resp_line(1, 20, 20, switching.len(), true, 101),
            "1 error: connection switched protocols (101); no longer HTTP".into(),
        ],
    });

    cases.push(Case {
        name: "not HTTP",
        chunks: vec![TestChunk::egress(10, "*1\r\n$4\r\nPING\r\n")],
        close: vec![],
        expect: vec!["1 error: not an HTTP/1.x message start: `*1\\r\\n$4\\r\\nPING\\r\\n`".into()],
    });

    // curl --http2 to a server that agrees: the upgraded GET is answered
    // on stream 1 in HTTP/2; then a second stream in HTTP/2 throughout.
    {
        use wirelens_plugin_http2::cases::{frame, get_request, indexed, ok_response};
        let upgrade = "GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        let switching = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
        let settings = frame(4, 0, 0, &[]);
        let answer = ok_response(1, b"hi");
        let second = get_request(3, "/b", "x");
        let not_found = [frame(1, 0x4, 3, &indexed(13)), frame(0, 0x1, 3, b"no")].concat();
        cases.push(Case {
            name: "h2c: upgraded by the request, answered on stream 1, then HTTP/2",
            chunks: vec![
                TestChunk::egress(1, upgrade),
                TestChunk::ingress(2, [switching.as_bytes(), &settings[..], &answer[..]].concat()),
                TestChunk::egress(
                    3,
                    [wirelens_plugin_http2::PREFACE, &settings[..], &frame(4, 1, 0, &[])[..]].concat(),
                ),
                TestChunk::egress(4, &second),
                TestChunk::ingress(5, &not_found),
            ],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=1 ok version=1 method=GET url=/a host=x", upgrade.len()),
                format!("1 resp in 2-2 size={} id=1 ok resp_code=200", answer.len()),
                format!("1 req out 4-4 size={} id=3 ok version=2 method=GET url=/b host=x", second.len()),
                format!("1 resp in 5-5 size={} id=3 fail resp_code=404", not_found.len()),
            ],
        });
        // A server that does not upgrade answers in HTTP/1.1: that answer
        // is the call's, and the connection stays HTTP/1.
        cases.push(Case {
            name: "h2c: the server does not upgrade",
            chunks: vec![TestChunk::egress(1, upgrade), TestChunk::ingress(2, OK_HELLO), TestChunk::egress(3, GET)],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=1 ok version=1 method=GET url=/a host=x", upgrade.len()),
                resp_line(1, 2, 2, OK_HELLO.len(), true, 200),
                req_line(1, 3, GET.len(), GET_FIELDS),
            ],
        });
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Http;
    use wirelens_sdk::testing::{all_two_way_splits, check, run};
    use wirelens_sdk::{Direction, Engine, Protocol};

    #[test]
    fn every_case() {
        for case in all() {
            check::<Http>(&case);
        }
    }

    #[test]
    fn any_split_of_a_pipelined_stream_gives_the_same_messages() {
        let requests = format!("{GET}POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc{GET}");
        let responses =
            format!("{OK_HELLO}HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n{OK_HELLO}");
        for (dir, stream) in [(Direction::Egress, &requests), (Direction::Ingress, &responses)] {
            let whole = run::<Http>(&[TestChunk::egress(1, stream.as_bytes()).direction(dir)], &[1]);
            assert_eq!(whole.len(), 3, "{whole:?}");
            for (at, got) in all_two_way_splits::<Http>(dir, stream.as_bytes()) {
                assert_eq!(got, whole, "split at byte {at}");
            }
        }
    }

    #[test]
    fn every_byte_in_its_own_chunk() {
        let stream = format!("{GET}{OK_HELLO}");
        let chunks: Vec<_> = stream.bytes().map(|b| TestChunk::egress(1, [b])).collect();
        let got = run::<Http>(&chunks, &[1]);
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn keep_query_option() {
        let mut engine = Engine::<Http>::new();
        engine.configure(&[("keep_query".into(), "true".into())]).unwrap();
        let (h, d) = wirelens_sdk::testing::to_wire(&[TestChunk::egress(1, GET)]);
        let lines = wirelens_sdk::testing::render(&engine.feed(&h, &d), Http::info().field_names);
        assert!(lines[0].contains("url=/index.html?user=7&x=1 "), "{lines:?}");
        let err = engine.configure(&[("keep_qurey".into(), "1".into())]).unwrap_err();
        assert!(err.contains("keep_qurey"), "{err}");
    }

    #[test]
    fn detect() {
        let http = Http::default();
        assert!(http.detect(Direction::Egress, wirelens_sdk::Role::Client, b"GET / HTTP/1.1\r\n") >= 90);
        assert!(http.detect(Direction::Ingress, wirelens_sdk::Role::Client, b"HTTP/1.1 200 OK\r\n") >= 90);
        assert_eq!(http.detect(Direction::Egress, wirelens_sdk::Role::Client, b"*1\r\n$4\r\nPING\r\n"), 0);
        assert_eq!(http.detect(Direction::Egress, wirelens_sdk::Role::Client, b"GETX / HTTP/1.1"), 0);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/http");
        assert!(wirelens_sdk::testing::check_fixtures::<Http>(&dir, 50) >= 1);
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        wirelens_sdk::testing::check_rechunking::<Http>(&all(), 200, 0x5eed);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Http>(&all(), 20_000, 11);
    }

    /// Reads of one byte, and the server's view of every case (whole and a
    /// byte at a time), give the same messages.
    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<crate::Http>(&all());
        wirelens_sdk::testing::check_server_side::<crate::Http>(&all());
    }

    /// Other protocols' first bytes and random bytes are not claimed.
    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_no_foreign_protocol::<crate::Http>();
    }
}
