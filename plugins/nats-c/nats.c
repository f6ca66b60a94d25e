/*
 * NATS client protocol plugin, in C: a second implementation of
 * plugins/nats (Rust), written with the C SDK (sdk/README-c.md). It reads
 * the same messages from the same bytes; host/tests/plugin_c.rs runs the
 * Rust plugin's cases, its recordings and random cuttings of them through
 * this plugin's wasm build and compares.
 *
 * Calls: a client's PING is answered by the server's PONG. On a connection
 * whose CONNECT asked for "verbose": true, every CONNECT, PUB, HPUB, SUB
 * and UNSUB is answered by +OK, or by -ERR (a permission violation), which
 * fails the call; nats-server answers a publish to an invalid subject
 * (pedantic) with -ERR and then +OK: that +OK fails it. Otherwise these are
 * one-way, as are deliveries (MSG, HMSG), INFO, the server's PING and the
 * client's PONG; a -ERR is then a failed one-way message. Payloads are
 * skipped by the length their line gives, copied or not.
 *
 * Fields: op (upper case), subject (PUB, HPUB, SUB, MSG, HMSG).
 */
#include <string.h>

#include "wirelens.h"

enum { OP = 0, SUBJECT = 1 };

/* Longest line accepted while waiting for its end (INFO and CONNECT carry
 * JSON: a server's INFO lists its cluster's URLs). */
#define MAX_LINE (64 * 1024)

typedef struct {
    bool verbose; /* the client's CONNECT asked for +OK after every operation */
    bool refused; /* verbose: a -ERR came, the next +OK answers what it refused */
} conn_state;

/* An operation line, read. */
typedef struct {
    int op;       /* an enum op_code */
    char name[9]; /* upper case, NUL-terminated */
    const uint8_t *subject;
    size_t subject_len;
    bool has_payload;
    uint64_t payload;
    const uint8_t *args; /* the rest of the line after the operation */
    size_t args_len;
} op_line;

static bool is_alpha(uint8_t b) { return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'); }
static bool is_blank(uint8_t b) { return b == ' ' || b == '\t'; }
/* Rust's u8::is_ascii_whitespace. */
static bool is_space(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f'; }

/* The operations, in the order of `op_names`. */
enum op_code { PUB, HPUB, MSG, HMSG, SUB, UNSUB, CONNECT, INFO, ERR, PING, PONG, OK };
static const char *const op_names[] = {"PUB", "HPUB", "MSG", "HMSG", "SUB", "UNSUB", "CONNECT",
                                       "INFO", "-ERR", "PING", "PONG", "+OK"};

/* The operation word, upper case, if it is one NATS knows. */
static bool read_op(const uint8_t *word, size_t len, op_line *l) {
    if (len == 0 || len > 8) return false;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = word[i];
        if (!is_alpha(b) && b != '+' && b != '-') return false;
        l->name[i] = (char)(b >= 'a' && b <= 'z' ? b - 32 : b);
    }
    l->name[len] = 0;
    for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++) {
        if (strcmp(op_names[i], l->name) == 0) {
            l->op = (enum op_code)i;
            return true;
        }
    }
    return false;
}

static bool is_op(const op_line *l, enum op_code op) { return l->op == op; }

/* Read a line (without its CR LF); false when it is not a NATS operation. */
static bool read_line(const uint8_t *line, size_t len, op_line *l) {
    memset(l, 0, sizeof *l);
    size_t word_end = 0;
    while (word_end < len && !is_blank(line[word_end])) word_end++;
    if (!read_op(line, word_end, l)) return false;
    size_t a = word_end;
    while (a < len && is_space(line[a])) a++;
    l->args = line + a;
    l->args_len = len - a;
    /* Tokens: runs of bytes between blanks. */
    size_t count = 0, first_at = 0, first_len = 0, last_at = 0, last_len = 0;
    for (size_t i = a; i < len;) {
        if (is_blank(line[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && !is_blank(line[j])) j++;
        if (count == 0) first_at = i, first_len = j - i;
        last_at = i, last_len = j - i;
        count++;
        i = j;
    }
    /* subject expected, payload length in the last token, arguments taken */
    bool subject = false, payload = false;
    size_t min = 0, max = (size_t)-1;
    if (is_op(l, PUB)) subject = payload = true, min = 2, max = 3;
    else if (is_op(l, HPUB) || is_op(l, MSG)) subject = payload = true, min = 3, max = 4;
    else if (is_op(l, HMSG)) subject = payload = true, min = 4, max = 5;
    else if (is_op(l, SUB)) subject = true, min = 2, max = 3;
    else if (is_op(l, UNSUB)) min = 1, max = 2;
    else if (is_op(l, PING) || is_op(l, PONG) || is_op(l, OK)) max = 0;
    if (count < min || count > max) return false;
    if (subject) l->subject = line + first_at, l->subject_len = first_len;
    if (payload) {
        if (!wl_parse_decimal(line + last_at, last_len, &l->payload)) return false;
        l->has_payload = true;
    }
    return true;
}

static void write_fields(const op_line *l, wl_fields *fields) {
    wl_field_str(fields, OP, l->name);
    if (l->subject) wl_field_text(fields, SUBJECT, l->subject, l->subject_len);
}

/* "key": true in a flat JSON object, found without a JSON parser. */
static bool json_true(const uint8_t *json, size_t len, const char *key) {
    size_t k = strlen(key);
    for (size_t i = 0; i + k + 2 <= len; i++) {
        if (json[i] != '"' || memcmp(json + i + 1, key, k) != 0 || json[i + k + 1] != '"') continue;
        size_t at = i + k + 2;
        while (at < len && is_space(json[at])) at++;
        if (at < len && json[at] == ':') {
            at++;
            while (at < len && is_space(json[at])) at++;
            return len - at >= 4 && memcmp(json + at, "true", 4) == 0;
        }
    }
    return false;
}

static bool json_has_key(const uint8_t *json, size_t len, const char *key) {
    size_t k = strlen(key);
    for (size_t i = 0; i + k + 2 <= len; i++)
        if (json[i] == '"' && memcmp(json + i + 1, key, k) == 0 && json[i + k + 1] == '"') return true;
    return false;
}

/* How an operation takes part in a call, sent in the direction that
 * carries requests or the other; false: passed over. */
static bool op_meta(const op_line *l, bool requests, conn_state *conn, wl_meta *meta) {
    if (requests) {
        if (is_op(l, PING)) return *meta = wl_request(), true;
        if (is_op(l, CONNECT)) {
            /* A line cut before its options leaves what was known. */
            if (l->args_len) conn->verbose = json_true(l->args, l->args_len, "verbose");
            *meta = conn->verbose ? wl_request() : wl_oneway();
            return true;
        }
        if (conn->verbose && (is_op(l, PUB) || is_op(l, HPUB) || is_op(l, SUB) || is_op(l, UNSUB)))
            return *meta = wl_request(), true;
    } else {
        if (is_op(l, PONG)) return *meta = wl_response(true), true;
        if (is_op(l, OK)) {
            if (!conn->verbose) {
                /* Joined midway: the connection is verbose after all; the
                 * request this answers was counted as one-way. */
                conn->verbose = true;
                return false;
            }
            *meta = wl_response(!conn->refused);
            conn->refused = false;
            return true;
        }
        if (is_op(l, ERR)) {
            static const char invalid[] = "Invalid Publish Subject";
            if (conn->verbose && wl_find(l->args, l->args_len, (const uint8_t *)invalid, sizeof invalid - 1) >= 0) {
                /* nats-server follows it with the +OK of the same publish. */
                conn->refused = true;
                return false;
            }
            if (conn->verbose) return *meta = wl_response(false), true;
            *meta = wl_oneway();
            meta->success = false;
            return true;
        }
    }
    *meta = wl_oneway();
    return true;
}

static bool starts_with_ci(const uint8_t *b, size_t len, const char *op, const char *json) {
    size_t o = strlen(op), j = strlen(json);
    return len >= o + j && wl_eq_ignore_case(b, o, op) && memcmp(b + o, json, j) == 0;
}

static uint8_t detect(wl_direction direction, wl_role role, const uint8_t *bytes, size_t len) {
    wl_ctx ctx = {0, direction, role, false};
    bool requests = wl_carries_requests_or_egress(&ctx);
    long nl = wl_find_byte(bytes, len, '\n');
    if (nl < 0) {
        /* A line still coming (a client reading a byte at a time shows
         * detection only the start of INFO or CONNECT). */
        if (!requests && starts_with_ci(bytes, len, "INFO ", "{\"server_id\":")) return 90;
        if (requests && starts_with_ci(bytes, len, "CONNECT ", "{\"")) return 70;
        return 0;
    }
    if (nl == 0 || bytes[nl - 1] != '\r') return 0;
    op_line l;
    if (!read_line(bytes, (size_t)nl - 1, &l)) return 0;
    bool json = l.args_len > 0 && l.args[0] == '{' && l.args[l.args_len - 1] == '}';
    if (!requests && is_op(&l, INFO) && json && json_has_key(l.args, l.args_len, "server_id")) return 95;
    if (requests && is_op(&l, CONNECT) && json) return 95;
    if (requests && (is_op(&l, PUB) || is_op(&l, HPUB) || is_op(&l, SUB))) return 60;
    if (!requests && (is_op(&l, MSG) || is_op(&l, HMSG))) return 55;
    return 0;
}

static wl_step parse(void *state, const wl_ctx *ctx, const uint8_t *buf, size_t len, wl_fields *fields) {
    long nl = wl_find_byte(buf, len, '\n');
    if (nl < 0) return len > MAX_LINE ? wl_invalid("line longer than 64 KiB") : wl_need_more();
    size_t line_len = (size_t)nl;
    if (line_len && buf[line_len - 1] == '\r') line_len--;
    op_line l;
    if (!read_line(buf, line_len, &l)) return wl_invalid("not a NATS operation");
    uint64_t n = (uint64_t)nl + 1;
    if (l.has_payload) {
        /* Saturating: a length near 2^64 is skipped to the stream's end. */
        n = l.payload > UINT64_MAX - n ? UINT64_MAX : n + l.payload;
        n = n > UINT64_MAX - 2 ? UINT64_MAX : n + 2;
    }
    wl_meta meta;
    if (!op_meta(&l, wl_carries_requests_or_egress(ctx), state, &meta)) return wl_discard(n);
    write_fields(&l, fields);
    return wl_complete(n, meta);
}

/* After lost bytes: a line start whose first byte can begin an operation. */
static size_t next_start(const wl_ctx *ctx, const uint8_t *data, size_t len) {
    (void)ctx;
    for (size_t i = 0; i + 1 < len; i++) {
        if (data[i] != '\n') continue;
        uint8_t first = data[i + 1];
        if (is_alpha(first) || first == '+' || first == '-') return i + 1;
    }
    return 0;
}

static bool lost(void *state, const wl_ctx *ctx, const uint8_t *head, size_t len, wl_fields *fields, wl_meta *meta) {
    /* The operation line if it was seen whole (a payload was cut), else
     * the operation's name alone (a line cut short). */
    long nl = wl_find_byte(head, len, '\n');
    long end = nl >= 0 ? nl : wl_find_byte(head, len, ' ');
    size_t line_len = end >= 0 ? (size_t)end : len;
    size_t trimmed = line_len && head[line_len - 1] == '\r' ? line_len - 1 : line_len;
    op_line l;
    if (!read_line(head, trimmed, &l)) {
        memset(&l, 0, sizeof l);
        if (!read_op(head, line_len, &l)) return false;
    }
    if (!op_meta(&l, wl_carries_requests_or_egress(ctx), state, meta)) return false;
    write_fields(&l, fields);
    return true;
}

static const char *const field_names[] = {"op", "subject"};
static const uint16_t ports[] = {4222};

const wl_protocol wl_plugin = {
    .name = "nats",
    .version = "0.1.0",
    .description = "NATS client protocol, in C (publish, subscribe, deliveries, ping)",
    .default_ports = ports,
    .default_ports_len = 1,
    .field_names = field_names,
    .field_names_len = 2,
    .call_field = "op",
    .max_buffer = 128 * 1024,
    .conn_size = sizeof(conn_state),
    .detect = detect,
    .parse = parse,
    .next_start = next_start,
    .lost = lost,
};
