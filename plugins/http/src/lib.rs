//! HTTP/1.x protocol plugin.
//!
//! Requests and responses are told apart by their first line, so the role of
//! the observed process does not matter. Bodies are delimited by
//! Content-Length, chunked transfer coding, or the connection's close;
//! responses to HEAD and 1xx/204/304 responses have none. Interim 1xx
//! responses are not messages. After `101 Switching Protocols` to h2c (a
//! request's `Upgrade: h2c`), the connection is HTTP/2 and is parsed with
//! `wirelens-plugin-http2` (the upgraded request is answered on stream 1:
//! its call ends with that response); after any other 101 the connection
//! is no longer HTTP and is handed back to layer-4 only.
//!
//! Fields: `version` (minor version, as iLogtail reports it: 1 for HTTP/1.1),
//! `method`, `url` (path; the query is dropped unless the `keep_query` option
//! is `true`), `host`, `resp_code`.

use std::collections::VecDeque;

use wirelens_sdk::cursor::{parse_decimal, parse_hex, Cursor};
use wirelens_sdk::memchr::{memchr, memrchr};
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const VERSION: FieldKey = FieldKey(0);
pub const METHOD: FieldKey = FieldKey(1);
pub const URL: FieldKey = FieldKey(2);
pub const HOST: FieldKey = FieldKey(3);
pub const RESP_CODE: FieldKey = FieldKey(4);

const METHODS: &[&[u8]] =
    &[b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE", b"PROPFIND"];
/// Longest start line or header line accepted while waiting for its end.
const MAX_LINE: usize = 16 * 1024;
/// Longest head (start line and headers) accepted while waiting for its end.
const MAX_HEAD: usize = 48 * 1024;
/// Requests remembered while waiting for their responses (HEAD matters).
const MAX_QUEUED_REQUESTS: usize = 1024;

/// The protocol; `keep_query` is its one option.
#[derive(Default)]
pub struct Http {
    keep_query: bool,
    /// What parses a connection upgraded to h2c.
    h2: wirelens_plugin_http2::Http2,
}

/// Per-connection state.
#[derive(Default)]
pub struct Conn {
    body: [Body; 2],
    /// Meta of the message whose body is being read, per direction.
    meta: [Option<Meta>; 2],
    /// One entry per request not yet answered: true for HEAD.
    head_requests: VecDeque<bool>,
    upgraded: bool,
    /// A request asked to upgrade to h2c (`Upgrade: h2c`).
    h2c_asked: bool,
    /// Upgraded to h2c: HTTP/2 from the 101 on.
    h2: Option<Box<wirelens_plugin_http2::Conn>>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Body {
    /// The next bytes start a message.
    #[default]
    None,
    /// Inside a chunked body: the next bytes are a chunk-size line.
    Chunked,
    /// The body runs to the end of the stream.
    UntilClose,
}

impl Protocol for Http {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "http",
            version: env!("CARGO_PKG_VERSION"),
            description: "HTTP/1.0 and HTTP/1.1 requests and responses",
            default_ports: &[80, 8080, 8000, 8008, 8888],
            field_names: &["version", "method", "url", "host", "resp_code"],
            max_buffer: 64 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("method")
    }

    /// Heads: a request line and its headers (1 KiB: long URLs, `Host`
    /// after cookies), a status line and its headers (512 bytes: a
    /// response's fields are all on its first line; past that, its
    /// headers only frame it). Bodies of known length are skipped (not
    /// copied at all). A head cut at the budget loses its framing, not
    /// the call: the SDK closes it as lost bytes when the next request
    /// proves it over (`response_heads_longer_than_the_budget_still_make_whole_calls`).
    /// Measured under nginx at 60k requests/s (612-byte page, 850-byte
    /// responses): the daemon's CPU 0.177-0.185 cores with 1 KiB, 0.152-0.155
    /// with 512 bytes.
    fn capture_bytes() -> Option<(u32, u32)> {
        Some((1024, 512))
    }

    fn configure(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "keep_query" => {
                self.keep_query = value.parse().map_err(|_| format!("must be true or false, not `{value}`"))?;
                self.h2 = wirelens_plugin_http2::Http2::for_upgrade(self.keep_query);
                Ok(())
            }
            _ => Err("unknown option (known: keep_query)".to_string()),
        }
    }

    fn detect(&self, _direction: Direction, _role: Role, bytes: &[u8]) -> u8 {
        if bytes.starts_with(b"HTTP/1.") {
            return 90;
        }
        let method_len = bytes.iter().position(|&b| b == b' ');
        match method_len {
            Some(n) if METHODS.contains(&&bytes[..n]) && bytes.len() > n + 1 && bytes[n + 1] == b'/' => 95,
            // `CONNECT host:443 HTTP/1.1`, `OPTIONS * HTTP/1.1`: only with the
            // version on the line (NATS sends `CONNECT {...}`).
            Some(n) if METHODS.contains(&&bytes[..n]) => {
                let line = &bytes[..memchr(b'\n', bytes).unwrap_or(bytes.len())];
                if wirelens_sdk::cursor::find(line, b" HTTP/1.").is_some() {
                    80
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let d = ctx.direction.index();
        if let Some(h2) = conn.h2.as_mut() {
            return self.h2.parse(h2, ctx, buf, fields);
        }
        if conn.upgraded {
            return Step::Invalid("connection switched protocols (101); no longer HTTP".into());
        }
        match conn.body[d] {
            Body::Chunked => self.parse_chunk(conn, d, buf),
            Body::UntilClose => Step::RestOfStream,
            Body::None => self.parse_head(conn, d, buf, fields),
        }
    }

    fn finish(&self, conn: &mut Conn, ctx: &Ctx) -> Option<Meta> {
        let d = ctx.direction.index();
        conn.body[d] = Body::None;
        conn.meta[d].take()
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        let d = ctx.direction.index();
        conn.body[d] = Body::None;
        // The headers were seen, the body was lost: the call still happened.
        if let Some(meta) = conn.meta[d].take() {
            if meta.kind == wirelens_sdk::MessageKind::Response {
                // Requests still waiting were answered in the lost bytes.
                conn.head_requests.clear();
            }
            return Some(meta);
        }
        // A head cut before its end: its start line tells the call.
        let line = &head[..memchr(b'\n', head).unwrap_or(head.len())];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"HTTP/") {
            let (version, code) = split_status_line(line)?;
            let code = status_code(code)?;
            // The requests still waiting were answered in the lost bytes.
            conn.head_requests.clear();
            if let Some(minor) = minor_version(version) {
                fields.int(VERSION, minor);
            }
            fields.int(RESP_CODE, i64::from(code));
            return Some(Meta::response(code < 400));
        }
        let (method, target, version) = match split_request_line(line) {
            Some(parts) => parts,
            // The line itself was cut: the method at least.
            None => {
                let method = &line[..memchr(b' ', line)?];
                (method, &b""[..], &b""[..])
            }
        };
        if !METHODS.contains(&method) {
            return None;
        }
        conn.head_requests.push_back(method == b"HEAD");
        if let Some(minor) = minor_version(version) {
            fields.int(VERSION, minor);
        }
        fields.text(METHOD, method);
        if !target.is_empty() {
            fields.text(URL, wirelens_plugin_http2::url_path(target, self.keep_query));
        }
        Some(Meta::request())
    }
}

impl Http {
    fn parse_head(&self, conn: &mut Conn, d: usize, buf: &[u8], fields: &mut Fields) -> Step {
        // Robustness (RFC 9112 2.2): empty lines before a message are ignored.
        if buf[0] == b'\n' {
            return Step::Discard(1);
        }
        if buf.starts_with(b"\r\n") {
            return Step::Discard(2);
        }
        // One pass over the head: start line, then header lines up to the
        // empty one.
        let mut cur = Cursor::new(buf);
        let Some(first) = cur.line() else {
            return match start_line_error(buf) {
                Some(reason) => Step::Invalid(reason),
                None => Step::NeedMore,
            };
        };
        let is_response = first.starts_with(b"HTTP/");
        if !is_response && start_line_error(first).is_some() {
            return Step::Invalid(start_line_error(buf).unwrap_or_else(|| "bad start line".into()));
        }
        let mut headers = Headers { host: None, content_length: None, chunked: false, upgrade_h2c: false };
        loop {
            match cur.line() {
                Some([]) => break,
                Some(line) => headers.add(line),
                None if buf.len() > MAX_HEAD => return Step::Invalid(format!("head longer than {MAX_HEAD} bytes")),
                None => return Step::NeedMore,
            }
        }
        let head_len = cur.position() as u64;
        if is_response {
            self.parse_response(conn, d, first, &headers, head_len, fields)
        } else {
            self.parse_request(conn, d, first, &headers, head_len, fields)
        }
    }

    fn parse_request(
        &self,
        conn: &mut Conn,
        d: usize,
        line: &[u8],
        headers: &Headers,
        head_len: u64,
        fields: &mut Fields,
    ) -> Step {
        // METHOD SP target SP version, split with memchr rather than a byte
        // iterator (byte loops are what costs most inside the sandbox).
        let Some((method, target, version)) = split_request_line(line) else {
            return Step::Invalid(format!("bad request line `{}`", String::from_utf8_lossy(line)));
        };
        let Some(minor) = minor_version(version) else {
            return Step::Invalid(format!("bad HTTP version `{}`", String::from_utf8_lossy(version)));
        };
        if !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_') {
            return Step::Invalid(format!("bad method `{}`", String::from_utf8_lossy(method)));
        }
        if conn.head_requests.len() >= MAX_QUEUED_REQUESTS {
            conn.head_requests.pop_front();
        }
        conn.head_requests.push_back(method == b"HEAD");
        fields.int(VERSION, minor);
        fields.text(METHOD, method);
        fields.text(URL, wirelens_plugin_http2::url_path(target, self.keep_query));
        if let Some(host) = headers.host {
            fields.text(HOST, host);
        }
        let mut meta = Meta::request();
        if headers.upgrade_h2c && !headers.chunked && headers.content_length.unwrap_or(0) == 0 {
            // RFC 9113 3.1 (h2c, as RFC 7540 3.2 had it): if the server
            // agrees, it answers this request on stream 1. Paired by that id
            // (a plain HTTP/1 answer pairs all the same: it is the oldest).
            conn.h2c_asked = true;
            meta = meta.with_pair_id(1);
        }
        if headers.chunked {
            conn.body[d] = Body::Chunked;
            conn.meta[d] = Some(meta);
            return Step::Continue(head_len);
        }
        Step::Complete(head_len + headers.content_length.unwrap_or(0), meta)
    }

    fn parse_response(
        &self,
        conn: &mut Conn,
        d: usize,
        line: &[u8],
        headers: &Headers,
        head_len: u64,
        fields: &mut Fields,
    ) -> Step {
        let Some((version, code)) = split_status_line(line) else {
            return Step::Invalid(format!("bad status line `{}`", String::from_utf8_lossy(line)));
        };
        let (Some(minor), Some(code)) = (minor_version(version), status_code(code)) else {
            return Step::Invalid(format!("bad status line `{}`", String::from_utf8_lossy(line)));
        };
        if (100..200).contains(&code) && code != 101 {
            return Step::Discard(head_len); // interim response (100 Continue, 103 Early Hints)
        }
        let answers_head = conn.head_requests.pop_front().unwrap_or(false);
        fields.int(VERSION, minor);
        fields.int(RESP_CODE, i64::from(code));
        let meta = Meta::response(code < 400);
        if code == 101 && conn.h2c_asked && headers.upgrade_h2c {
            // Switched to h2c: the 101 is not the answer (that comes on
            // stream 1); HTTP/2 from here on, both ways.
            conn.head_requests.push_front(answers_head);
            fields.clear();
            conn.h2 = Some(Box::default());
            return Step::Discard(head_len);
        }
        if code == 101 {
            conn.upgraded = true;
            return Step::Complete(head_len, meta);
        }
        if answers_head || code == 204 || code == 304 {
            return Step::Complete(head_len, meta);
        }
        if headers.chunked {
            conn.body[d] = Body::Chunked;
            conn.meta[d] = Some(meta);
            return Step::Continue(head_len);
        }
        if let Some(len) = headers.content_length {
            return Step::Complete(head_len + len, meta);
        }
        conn.body[d] = Body::UntilClose;
        conn.meta[d] = Some(meta);
        Step::RestOfStream
    }

    /// One chunk of a chunked body: its size line, data and CRLF; or the
    /// last chunk and the trailers, which end the message.
    fn parse_chunk(&self, conn: &mut Conn, d: usize, buf: &[u8]) -> Step {
        let mut cur = Cursor::new(buf);
        let Some(size_line) = cur.line() else {
            return if buf.len() > MAX_LINE {
                Step::Invalid("chunk-size line too long".into())
            } else {
                Step::NeedMore
            };
        };
        let digits = size_line.split(|&b| b == b';').next().unwrap_or_default();
        let Some(size) = parse_hex(trim(digits)) else {
            return Step::Invalid(format!("bad chunk size `{}`", String::from_utf8_lossy(size_line)));
        };
        if size > 0 {
            return match size.checked_add(cur.position() as u64 + 2) {
                Some(n) => Step::Continue(n),
                None => Step::Invalid("chunk size overflows".into()),
            };
        }
        // Last chunk: trailer lines up to an empty one.
        loop {
            match cur.line() {
                Some([]) => break,
                Some(_) => continue,
                None if buf.len() > MAX_LINE => return Step::Invalid("chunked trailers too long".into()),
                None => return Step::NeedMore,
            }
        }
        conn.body[d] = Body::None;
        let meta = conn.meta[d].take().unwrap_or_else(Meta::request);
        Step::Complete(cur.position() as u64, meta)
    }
}

/// The headers that matter for framing and fields.
struct Headers<'a> {
    host: Option<&'a [u8]>,
    content_length: Option<u64>,
    chunked: bool,
    /// `Upgrade: h2c` (a request's wish, or a 101's answer).
    upgrade_h2c: bool,
}

impl<'a> Headers<'a> {
    fn add(&mut self, line: &'a [u8]) {
        // A field name ends at its colon, with no whitespace before it (RFC
        // 9112 5.1), so the four wanted names are told by where a colon
        // stands: no search for the colon of every header line (a `memchr`
        // call each: 5% of the SDK and parser's instructions on nginx's
        // 8-header responses, native).
        let Some(colon) = [4, 7, 14, 17].into_iter().find(|&at| line.get(at) == Some(&b':')) else { return };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade_h2c = value.split(|&b| b == b',').any(|p| trim(p).eq_ignore_ascii_case(b"h2c"));
        } else if name.eq_ignore_ascii_case(b"host") {
            self.host = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.content_length = parse_decimal(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked must be the final coding (RFC 9112 6.1).
            self.chunked =
                value.rsplit(|&b| b == b',').next().is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
        }
    }
}

/// Why the bytes at the front cannot start an HTTP message, if that is
/// already certain before the head is complete.
fn start_line_error(buf: &[u8]) -> Option<String> {
    // `HTTP/` (or a prefix of it, for a response whose first bytes are all
    // that arrived), or an upper-case method token followed by a space.
    let looks_like_start = if buf.starts_with(b"HTTP/") || b"HTTP/".starts_with(&buf[..buf.len().min(5)]) {
        true
    } else {
        let token = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
        token > 0 && (token == buf.len() || buf[token] == b' ') && token <= 16
    };
    if !looks_like_start {
        let shown = String::from_utf8_lossy(&buf[..buf.len().min(16)]).into_owned();
        return Some(format!("not an HTTP/1.x message start: `{}`", shown.escape_debug()));
    }
    if buf.len() > MAX_LINE && !buf[..MAX_LINE].contains(&b'\n') {
        return Some("start line too long".into());
    }
    None
}

/// `(method, target, version)` of a request line.
#[inline]
fn split_request_line(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let first = memchr(b' ', line)?;
    let rest = &line[first + 1..];
    let second = memrchr(b' ', rest)?;
    let (method, target, version) = (&line[..first], trim(&rest[..second]), &rest[second + 1..]);
    (!method.is_empty() && !target.is_empty() && !version.is_empty()).then_some((method, target, version))
}

/// `(version, status code)` of a status line `VERSION SP CODE [SP REASON]`.
#[inline]
fn split_status_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = memchr(b' ', line)?;
    let rest = &line[first + 1..];
    let code = memchr(b' ', rest).map_or(rest, |end| &rest[..end]);
    Some((&line[..first], code))
}

#[inline]
fn minor_version(v: &[u8]) -> Option<i64> {
    match v {
        b"HTTP/1.1" => Some(1),
        b"HTTP/1.0" => Some(0),
        _ => None,
    }
}

#[inline]
fn status_code(code: &[u8]) -> Option<u16> {
    if code.len() != 3 {
        return None;
    }
    parse_decimal(code).map(|c| c as u16).filter(|c| (100..600).contains(c))
}

#[inline]
fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end]
}

wirelens_sdk::export_plugin!(Http);
