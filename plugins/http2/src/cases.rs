//! Test cases shared by the native tests and the daemon's wasm test. Frames
//! and header blocks are built here the way curl, nginx and grpcio write
//! them (static-table indexes, literals with incremental indexing, then
//! dynamic-table indexes on later streams).

use wirelens_sdk::testing::{Case, TestChunk};

use crate::PREFACE;

/// A frame: type, flags, stream, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A literal field with incremental indexing and a literal name (not
/// Huffman coded): it enters the dynamic table.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut v = vec![0x40, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.push(value.len() as u8);
    v.extend_from_slice(value.as_bytes());
    v
}

/// A literal field with incremental indexing whose name is static entry
/// `index`.
pub fn literal_indexed_name(index: u8, value: &str) -> Vec<u8> {
    let mut v = vec![0x40 | index, value.len() as u8];
    v.extend_from_slice(value.as_bytes());
    v
}

/// An indexed field (static 1-61, dynamic from 62).
pub fn indexed(index: u8) -> Vec<u8> {
    vec![0x80 | index]
}

/// A gRPC message of `len` bytes (uncompressed).
pub fn grpc_message(len: u32) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&len.to_be_bytes());
    v.resize(5 + len as usize, b'm');
    v
}

/// A GET on `stream` the way curl writes it once its table is warm:
/// static entries and literals without indexing (so it can repeat).
pub fn get_request(stream: u32, path: &str, authority: &str) -> Vec<u8> {
    let without_indexing = |index: u8, value: &str| {
        let mut v = vec![index, value.len() as u8];
        v.extend_from_slice(value.as_bytes());
        v
    };
    let block = [indexed(2), indexed(6), without_indexing(4, path), without_indexing(1, authority)].concat();
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
}

/// `200` and `body` on `stream`.
pub fn ok_response(stream: u32, body: &[u8]) -> Vec<u8> {
    [frame(HEADERS, END_HEADERS, stream, &indexed(8)), frame(DATA, END_STREAM, stream, body)].concat()
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn settings() -> Vec<u8> {
    // HEADER_TABLE_SIZE 4096, MAX_CONCURRENT_STREAMS 100.
    frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0, 0, 3, 0, 0, 0, 100])
}

fn line(kind: &str, dir: &str, ts: u64, end: u64, size: usize, id: u32, ok: bool, fields: &str) -> String {
    let outcome = if ok { "ok" } else { "fail" };
    let fields = if fields.is_empty() { String::new() } else { format!(" {fields}") };
    format!("1 {kind} {dir} {ts}-{end} size={size} id={id} {outcome}{fields}")
}

pub fn all() -> Vec<Case> {
    // curl --http2-prior-knowledge: GET /a?x=1 and /b on streams 1 and 3.
    let get_a =
        [indexed(2), indexed(6), literal_indexed_name(4, "/a?x=1"), literal_indexed_name(1, "localhost")].concat();
    // Stream 3 names the authority by its dynamic index: once /b is in,
    // 62 is /b, 63 localhost, 64 /a?x=1.
    let get_b = [indexed(2), indexed(6), literal_indexed_name(4, "/b"), indexed(63)].concat();
    let req_a = frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_a);
    let req_b = frame(HEADERS, END_HEADERS | END_STREAM, 3, &get_b);
    let ok_head = frame(HEADERS, END_HEADERS, 3, &indexed(8));
    let body_b = frame(DATA, END_STREAM, 3, b"hello");
    let not_found = frame(HEADERS, END_HEADERS, 1, &indexed(13));
    let body_a = frame(DATA, END_STREAM, 1, b"nope");

    // grpcio: a unary call and a trailers-only NOT_FOUND.
    let grpc_req = |path: &str| {
        [indexed(3), indexed(6), literal_indexed_name(4, path), literal("content-type", "application/grpc")].concat()
    };
    let unary_head = frame(HEADERS, END_HEADERS, 1, &grpc_req("/demo.Store/Get"));
    let unary_body = frame(DATA, END_STREAM, 1, &grpc_message(3));
    let resp_head = frame(HEADERS, END_HEADERS, 1, &[indexed(8), literal("content-type", "application/grpc")].concat());
    let resp_body = frame(DATA, 0, 1, &grpc_message(7));
    let trailers = frame(HEADERS, END_HEADERS | END_STREAM, 1, &literal("grpc-status", "0"));
    let missing_head = frame(HEADERS, END_HEADERS, 3, &grpc_req("/demo.Store/Missing"));
    let missing_body = frame(DATA, END_STREAM, 3, &grpc_message(2));
    // Trailers-only: :status 200, content-type (dynamic 63 by now on the
    // server side: grpc-status 62, content-type 63), grpc-status 5.
    let not_found_only =
        frame(HEADERS, END_HEADERS | END_STREAM, 3, &[indexed(8), indexed(63), literal("grpc-status", "5")].concat());

    // Server streaming: one request message, three response messages in
    // two DATA frames.
    let stream_head = frame(HEADERS, END_HEADERS, 1, &grpc_req("/demo.Store/Watch"));
    let stream_req = frame(DATA, END_STREAM, 1, &grpc_message(1));
    let stream_resp1 = frame(DATA, 0, 1, &[grpc_message(2), grpc_message(2)].concat());
    let stream_resp2 = frame(DATA, 0, 1, &grpc_message(4));

    // Midway: the first bytes are stream 5's HEADERS naming dynamic
    // entries the capture never saw.
    let midway_req = frame(HEADERS, END_HEADERS | END_STREAM, 5, &[indexed(2), indexed(70), indexed(71)].concat());
    let midway_resp = frame(HEADERS, END_HEADERS | END_STREAM, 5, &indexed(8));

    // Midway, gRPC: the trailers name only unknown entries (grpc-status
    // among them, maybe): the outcome is unknown, not a guess.
    let midway_grpc_req = frame(HEADERS, END_HEADERS, 7, &[indexed(3), indexed(80), indexed(81)].concat());
    let midway_grpc_data = frame(DATA, END_STREAM, 7, &grpc_message(1));
    let midway_grpc_head = frame(HEADERS, END_HEADERS, 7, &[indexed(8), indexed(82)].concat());
    let midway_grpc_trailers = frame(HEADERS, END_HEADERS | END_STREAM, 7, &indexed(83));

    // A stream the server resets; one the client resets (CANCEL).
    let reset = frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]);
    let client_reset = frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]);

    // A header block split over HEADERS and CONTINUATION frames (servers
    // split blocks over the peer's frame size): decoded whole at the end.
    let split_head = frame(HEADERS, END_STREAM, 1, &get_a[..3]);
    let split_more = frame(CONTINUATION, 0, 1, &get_a[3..9]);
    let split_end = frame(CONTINUATION, END_HEADERS, 1, &get_a[9..]);
    let split_resp = frame(HEADERS, END_HEADERS | END_STREAM, 1, &indexed(8));

    // Six streams at once: GET / (static entries only) on each.
    const SIX: [u32; 6] = [1, 3, 5, 7, 9, 11];
    let on_six = |f: &dyn Fn(u32) -> Vec<u8>| SIX.iter().flat_map(|&s| f(s)).collect::<Vec<u8>>();
    let get_root = [indexed(2), indexed(6), indexed(4)].concat();
    let root_request = |s| frame(HEADERS, END_HEADERS | END_STREAM, s, &get_root);
    let root_request_len = root_request(1).len();

    // What the client's cancel of stream 1 and a next call on stream 3 give.
    let cancelled_then_b = vec![
        line("req", "out", 1, 1, req_a.len(), 1, true, "version=2 method=GET url=/a host=localhost"),
        line("resp", "out", 3, 3, client_reset.len(), 1, false, ""),
        line("req", "out", 5, 5, req_b.len(), 3, true, "version=2 method=GET url=/b host=localhost"),
        line("resp", "in", 6, 6, ok_head.len() + body_b.len(), 3, true, "resp_code=200"),
    ];

    vec![
        Case {
            name: "two interleaved GETs with prior knowledge",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), settings(), req_a.clone(), req_b.clone()].concat()),
                TestChunk::ingress(2, [settings(), ok_head.clone(), not_found.clone()].concat()),
                TestChunk::ingress(3, [body_b.clone(), body_a.clone()].concat()),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, 1, req_a.len(), 1, true, "version=2 method=GET url=/a host=localhost"),
                line("req", "out", 1, 1, req_b.len(), 3, true, "version=2 method=GET url=/b host=localhost"),
                line("resp", "in", 2, 3, ok_head.len() + body_b.len(), 3, true, "resp_code=200"),
                line("resp", "in", 2, 3, not_found.len() + body_a.len(), 1, false, "resp_code=404"),
            ],
        },
        Case {
            name: "grpc unary, and trailers-only NOT_FOUND",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), settings(), unary_head.clone(), unary_body.clone()].concat()),
                TestChunk::ingress(2, [settings(), resp_head.clone(), resp_body.clone()].concat()),
                TestChunk::ingress(3, trailers.clone()),
                TestChunk::egress(4, [missing_head.clone(), missing_body.clone()].concat()),
                TestChunk::ingress(5, not_found_only.clone()),
            ],
            close: vec![],
            expect: vec![
                line(
                    "req",
                    "out",
                    1,
                    1,
                    unary_head.len() + unary_body.len(),
                    1,
                    true,
                    "version=2 method=POST url=/demo.Store/Get grpc_service=demo.Store grpc_method=Get request_messages=1",
                ),
                line(
                    "resp",
                    "in",
                    2,
                    3,
                    resp_head.len() + resp_body.len() + trailers.len(),
                    1,
                    true,
                    "resp_code=200 grpc_status=0 response_messages=1",
                ),
                line(
                    "req",
                    "out",
                    4,
                    4,
                    missing_head.len() + missing_body.len(),
                    3,
                    true,
                    "version=2 method=POST url=/demo.Store/Missing grpc_service=demo.Store grpc_method=Missing request_messages=1",
                ),
                line("resp", "in", 5, 5, not_found_only.len(), 3, false, "resp_code=200 grpc_status=5 response_messages=0"),
            ],
        },
        Case {
            name: "grpc server streaming counts messages",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), stream_head.clone(), stream_req.clone()].concat()),
                TestChunk::ingress(2, [settings(), resp_head.clone(), stream_resp1.clone()].concat()),
                TestChunk::ingress(3, stream_resp2.clone()),
                TestChunk::ingress(4, trailers.clone()),
            ],
            close: vec![],
            expect: vec![
                line(
                    "req",
                    "out",
                    1,
                    1,
                    stream_head.len() + stream_req.len(),
                    1,
                    true,
                    "version=2 method=POST url=/demo.Store/Watch grpc_service=demo.Store grpc_method=Watch request_messages=1",
                ),
                line(
                    "resp",
                    "in",
                    2,
                    4,
                    resp_head.len() + stream_resp1.len() + stream_resp2.len() + trailers.len(),
                    1,
                    true,
                    "resp_code=200 grpc_status=0 response_messages=3",
                ),
            ],
        },
        Case {
            name: "a header block continued over two CONTINUATION frames, in separate reads",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), settings(), split_head.clone()].concat()),
                TestChunk::egress(2, split_more.clone()),
                TestChunk::egress(3, split_end.clone()),
                TestChunk::ingress(4, [settings(), split_resp.clone()].concat()),
            ],
            close: vec![],
            expect: vec![
                line(
                    "req",
                    "out",
                    1,
                    3,
                    split_head.len() + split_more.len() + split_end.len(),
                    1,
                    true,
                    "version=2 method=GET url=/a host=localhost",
                ),
                line("resp", "in", 4, 4, split_resp.len(), 1, true, "resp_code=200"),
            ],
        },
        Case {
            name: "a connection joined midway counts its calls",
            chunks: vec![TestChunk::egress(1, midway_req.clone()), TestChunk::ingress(2, midway_resp.clone())],
            close: vec![],
            expect: vec![
                line("req", "out", 1, 1, midway_req.len(), 5, true, "version=2 method=GET"),
                line("resp", "in", 2, 2, midway_resp.len(), 5, true, "resp_code=200"),
            ],
        },
        Case {
            name: "midway, trailers of unknown entries: the outcome is unknown",
            chunks: vec![
                TestChunk::egress(1, [midway_grpc_req.clone(), midway_grpc_data.clone()].concat()),
                TestChunk::ingress(2, [midway_grpc_head.clone(), midway_grpc_trailers.clone()].concat()),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, 1, midway_grpc_req.len() + midway_grpc_data.len(), 7, true, "version=2 method=POST"),
                format!(
                    "1 resp in 2-2 size={} id=7 unseen resp_code=200",
                    midway_grpc_head.len() + midway_grpc_trailers.len()
                ),
            ],
        },
        Case {
            name: "a stream the client resets after its request is a failed call, answered by the reset",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), req_a.clone()].concat()),
                TestChunk::ingress(2, settings()),
                TestChunk::egress(3, client_reset.clone()),
                // Frames of the stream already on their way, and a reset in
                // return (grpcio's server sends one), then the next call.
                TestChunk::ingress(
                    4,
                    [frame(WINDOW_UPDATE, 0, 1, &[0, 0, 0x10, 0]), frame(DATA, 0, 1, b"late"), reset.clone()].concat(),
                ),
                TestChunk::egress(5, req_b.clone()),
                TestChunk::ingress(6, [ok_head.clone(), body_b.clone()].concat()),
            ],
            close: vec![],
            expect: cancelled_then_b.clone(),
        },
        Case {
            name: "a stream the client resets after the server's response began is answered by the reset alone",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), req_a.clone()].concat()),
                TestChunk::ingress(2, [settings(), frame(HEADERS, END_HEADERS, 1, &indexed(8))].concat()),
                TestChunk::egress(3, client_reset.clone()),
                // The server's response goes on a little, and resets back.
                TestChunk::ingress(4, [frame(DATA, 0, 1, b"late"), reset.clone()].concat()),
                TestChunk::egress(5, req_b.clone()),
                TestChunk::ingress(6, [ok_head.clone(), body_b.clone()].concat()),
            ],
            // Nothing of stream 1's response is left to come out at the close.
            close: vec![1],
            expect: cancelled_then_b.clone(),
        },
        Case {
            name: "six streams the client resets at once (a parent call's deadline) answer nothing more",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), on_six(&|s| root_request(s))].concat()),
                TestChunk::ingress(2, [settings(), on_six(&|s| frame(HEADERS, END_HEADERS, s, &indexed(8)))].concat()),
                TestChunk::egress(3, on_six(&|s| frame(RST_STREAM, 0, s, &[0, 0, 0, 8]))),
                // Every response's last frame was on its way.
                TestChunk::ingress(4, on_six(&|s| frame(DATA, END_STREAM, s, b"late"))),
            ],
            close: vec![1],
            expect: SIX
                .iter()
                .map(|&s| line("req", "out", 1, 1, root_request_len, s, true, "version=2 method=GET url=/"))
                .chain(SIX.iter().map(|&s| line("resp", "out", 3, 3, client_reset.len(), s, false, "")))
                .collect(),
        },
        Case {
            name: "a stream the server resets is a failed call",
            chunks: vec![
                TestChunk::egress(1, [PREFACE.to_vec(), req_a.clone()].concat()),
                TestChunk::ingress(2, [settings(), reset.clone()].concat()),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, 1, req_a.len(), 1, true, "version=2 method=GET url=/a host=localhost"),
                line("resp", "in", 2, 2, reset.len(), 1, false, ""),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Http2;
    use wirelens_sdk::testing::{check, check_claims_none_but, check_one_byte_reads, check_rechunking, fuzz};

    #[test]
    fn every_case() {
        for case in all() {
            check::<Http2>(&case);
        }
    }

    #[test]
    fn any_cut_of_the_chunks_gives_the_same_calls() {
        check_rechunking::<Http2>(&all(), 200, 0x5eed);
        check_one_byte_reads::<Http2>(&all());
    }

    #[test]
    fn claims_no_other_protocol() {
        check_claims_none_but::<Http2>(&["HTTP/2"]);
        // And claims its own.
        let engine = wirelens_sdk::Engine::<Http2>::new();
        let (out, cli) = (wirelens_sdk::Direction::Egress, wirelens_sdk::Role::Client);
        assert_eq!(engine.detect(out, cli, crate::PREFACE), 100);
        let server_settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        assert_eq!(engine.detect(wirelens_sdk::Direction::Ingress, cli, &server_settings), 80);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/http2");
        assert!(wirelens_sdk::testing::check_fixtures::<Http2>(&dir, 50) >= 2);
    }

    #[test]
    fn mutations_never_panic() {
        fuzz::<Http2>(&all(), 5_000, 7);
    }
}
