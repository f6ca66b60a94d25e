/*
 * The C SDK's engine: per-connection stream reassembly around a
 * `wl_protocol`, and the plugin's exports (the functions the bindings
 * generated from wit/protocol.wit call).
 *
 * It follows the Rust SDK's engine (sdk/src/stream.rs) step for step, so a
 * protocol gives the same messages in either language; the comments there
 * explain the rules, in particular for lost bytes: a message whose length
 * the protocol gives is skipped exactly, copied or not; bytes past any
 * length start a *lost region* that ends where the other direction proves
 * it (or at close, or after 5 s of quiet), and the calls inside it keep
 * their count, pairing, size and latency.
 *
 * Not in the C SDK (yet): datagram protocols (each UDP datagram is parsed
 * as stream bytes) and interleaved parts (the Rust SDK's `Step::Part`).
 */
#include <stdlib.h>
#include <string.h>

#include "protocol_plugin.h"
#include "wirelens.h"

#define QUIET_NS 5000000000ull
#define MAX_FAILED_RESUMES 16
#define MAX_START_GUESSES 64
#define MAX_OUTSTANDING 65536
/* Responses seen one request at a time, outside holes, for a connection to
 * count as a client that waits for each response (`SERIAL_EVIDENCE` in
 * sdk/src/stream.rs). */
#define SERIAL_EVIDENCE 3
#define MAX_FIELD_TEXT 4096

#define CHUNK_INGRESS 1
#define CHUNK_TICK (1 << 4)
#define MSG_INGRESS (1 << 2)
#define MSG_SUCCESS (1 << 3)
#define MSG_HAS_PAIR_ID (1 << 4)
#define MSG_UNSEEN (1 << 5)

/* ---- growable arrays ---- */

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 8;
    while (c < need) {
        if (c > SIZE_MAX / 2) abort();
        c *= 2;
    }
    if (c > SIZE_MAX / elem) abort(); /* wasm32: size_t is 32 bits */
    void *q = realloc(p, c * elem);
    if (!q) abort();
    *cap = c;
    return q;
}

#define VEC(T)      \
    struct {        \
        T *p;       \
        size_t len; \
        size_t cap; \
    }
#define VEC_RESERVE(v, n) ((v).p = grow((v).p, &(v).cap, (v).len + (n), sizeof(*(v).p)))
#define VEC_PUSH(v, x)          \
    do {                        \
        VEC_RESERVE(v, 1);      \
        (v).p[(v).len++] = (x); \
    } while (0)
#define VEC_FREE(v)         \
    do {                    \
        free((v).p);        \
        (v).p = NULL;       \
        (v).len = (v).cap = 0; \
    } while (0)

typedef VEC(uint8_t) bytes_t;

static void bytes_append(bytes_t *b, const uint8_t *src, size_t n) {
    if (n == 0) return;
    VEC_RESERVE(*b, n);
    uint8_t *dst = b->p + b->len;
    b->len += n;
    /* Inside the sandbox a memcpy is a call out to the runtime
     * (`memory.copy`), dearer than a short loop for the few bytes most
     * field values are. */
    if (n > 32) {
        memcpy(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

/* ---- fields ---- */

typedef struct {
    uint16_t key;
    uint32_t offset, len;
} field_t;

struct wl_fields {
    VEC(field_t) keys;
    bytes_t text;
};

static void fields_push(wl_fields *f, uint16_t key, const uint8_t *value, size_t len) {
    field_t entry = {key, (uint32_t)f->text.len, (uint32_t)len};
    bytes_append(&f->text, value, len);
    VEC_PUSH(f->keys, entry);
}

/* What a UTF-8 lead byte says: the character's length (0: not a lead
 * byte) and the range its second byte must be in. */
static size_t utf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xbf;
    if (b < 0x80) return 1;
    if (b >= 0xc2 && b <= 0xdf) return 2;
    if (b >= 0xe0 && b <= 0xef) {
        if (b == 0xe0) *lo = 0xa0;
        if (b == 0xed) *hi = 0x9f;
        return 3;
    }
    if (b >= 0xf0 && b <= 0xf4) {
        if (b == 0xf0) *lo = 0x90;
        if (b == 0xf4) *hi = 0x8f;
        return 4;
    }
    return 0;
}

/* How many bytes from s[0] on are a valid start of one character, at most
 * its length (the maximal subpart of Unicode's replacement rule). */
static size_t utf8_valid_prefix(const uint8_t *s, size_t len, size_t *char_len) {
    uint8_t lo, hi;
    *char_len = utf8_lead(s[0], &lo, &hi);
    if (*char_len == 0) return 0;
    size_t i = 1;
    for (; i < *char_len && i < len; i++) {
        uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xbf;
        if (s[i] < l || s[i] > h) break;
    }
    return i;
}

/* Length of the UTF-8 character starting s[0..len], or 0 when the bytes
 * there are not one; *cut when they are the start of one cut by the end. */
static size_t utf8_char(const uint8_t *s, size_t len, bool *cut) {
    size_t n;
    size_t valid = utf8_valid_prefix(s, len, &n);
    *cut = n > 0 && valid == len && valid < n;
    return n > 0 && valid == n ? n : 0;
}

/* Bytes of the invalid sequence at s[0..len] that one U+FFFD replaces. */
static size_t utf8_bad_run(const uint8_t *s, size_t len) {
    size_t n;
    size_t valid = utf8_valid_prefix(s, len, &n);
    return valid ? valid : 1;
}

void wl_field_text(wl_fields *f, uint16_t key, const uint8_t *value, size_t len) {
    if (len > MAX_FIELD_TEXT) len = MAX_FIELD_TEXT;
    bool ascii = true;
    for (size_t i = 0; i < len; i++) ascii &= value[i] < 0x80;
    if (ascii) return fields_push(f, key, value, len);
    /* As the Rust SDK does: valid UTF-8 is kept; when the only flaw is a
     * character cut at the end (by the 4 KiB limit or the capture), the
     * whole characters are kept; otherwise bad bytes become U+FFFD. */
    size_t valid = 0;
    bool cut = false;
    while (valid < len) {
        size_t n = utf8_char(value + valid, len - valid, &cut);
        if (!n) break;
        valid += n;
    }
    if (valid == len || cut) return fields_push(f, key, value, valid);
    static const uint8_t replacement[3] = {0xef, 0xbf, 0xbd};
    field_t entry = {key, (uint32_t)f->text.len, 0};
    size_t at = 0;
    while (at < len) {
        bool c;
        size_t n = utf8_char(value + at, len - at, &c);
        if (n) {
            bytes_append(&f->text, value + at, n);
            at += n;
        } else {
            bytes_append(&f->text, replacement, 3);
            at += utf8_bad_run(value + at, len - at);
        }
    }
    entry.len = (uint32_t)(f->text.len - entry.offset);
    VEC_PUSH(f->keys, entry);
}

void wl_field_str(wl_fields *f, uint16_t key, const char *value) {
    wl_field_text(f, key, (const uint8_t *)value, strlen(value));
}

void wl_field_int(wl_fields *f, uint16_t key, int64_t value) {
    uint8_t digits[20];
    uint64_t n = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
    size_t at = sizeof digits;
    do {
        digits[--at] = (uint8_t)('0' + n % 10);
        n /= 10;
    } while (n);
    if (value < 0) digits[--at] = '-';
    fields_push(f, key, digits + at, sizeof digits - at);
}

typedef struct {
    size_t keys, text;
} fields_mark;

static fields_mark fields_mark_of(const wl_fields *f) { return (fields_mark){f->keys.len, f->text.len}; }
static void fields_rewind(wl_fields *f, fields_mark m) {
    f->keys.len = m.keys;
    f->text.len = m.text;
}
static void fields_clear(wl_fields *f) { fields_rewind(f, (fields_mark){0, 0}); }
static void fields_free(wl_fields *f) {
    VEC_FREE(f->keys);
    VEC_FREE(f->text);
}
/* Move out (the source is left empty, owning nothing). */
static wl_fields fields_take(wl_fields *f) {
    wl_fields t = *f;
    memset(f, 0, sizeof *f);
    return t;
}

/* ---- small helpers for plugins ---- */

long wl_find_byte(const uint8_t *data, size_t len, uint8_t byte) {
    const uint8_t *p = memchr(data, byte, len);
    return p ? (long)(p - data) : -1;
}

long wl_find(const uint8_t *data, size_t len, const uint8_t *needle, size_t needle_len) {
    if (needle_len == 0) return 0;
    for (size_t i = 0; i + needle_len <= len; i++) {
        if (data[i] == needle[0] && memcmp(data + i, needle, needle_len) == 0) return (long)i;
    }
    return -1;
}

bool wl_parse_decimal(const uint8_t *data, size_t len, uint64_t *out) {
    if (len == 0) return false;
    const uint64_t limit = UINT64_MAX / 10;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] < '0' || data[i] > '9') return false;
        uint64_t digit = (uint64_t)(data[i] - '0');
        if (n > limit || (n == limit && digit > UINT64_MAX % 10)) return false;
        n = n * 10 + digit;
    }
    *out = n;
    return true;
}

bool wl_eq_ignore_case(const uint8_t *a, size_t len, const char *b) {
    for (size_t i = 0; i < len; i++) {
        uint8_t x = a[i], y = (uint8_t)b[i];
        if (y == 0) return false;
        if (x >= 'a' && x <= 'z') x -= 32;
        if (y >= 'a' && y <= 'z') y -= 32;
        if (x != y) return false;
    }
    return b[len] == 0;
}

/* ---- metas and steps ---- */

wl_meta wl_request(void) { return (wl_meta){WL_REQUEST, true, false, false, 0}; }
wl_meta wl_response(bool success) { return (wl_meta){WL_RESPONSE, success, false, false, 0}; }
wl_meta wl_oneway(void) { return (wl_meta){WL_ONEWAY, true, false, false, 0}; }
wl_meta wl_with_pair_id(wl_meta m, uint64_t id) {
    m.has_pair_id = true;
    m.pair_id = id;
    return m;
}

wl_step wl_need_more(void) { return (wl_step){WL_STEP_NEED_MORE, 0, {0}, NULL}; }
wl_step wl_continue(uint64_t n) { return (wl_step){WL_STEP_CONTINUE, n, {0}, NULL}; }
wl_step wl_complete(uint64_t n, wl_meta meta) { return (wl_step){WL_STEP_COMPLETE, n, meta, NULL}; }
wl_step wl_discard(uint64_t n) { return (wl_step){WL_STEP_DISCARD, n, {0}, NULL}; }
wl_step wl_rest_of_stream(void) { return (wl_step){WL_STEP_REST_OF_STREAM, 0, {0}, NULL}; }
wl_step wl_invalid(const char *reason) { return (wl_step){WL_STEP_INVALID, 0, {0}, reason}; }

int wl_carries_requests(const wl_ctx *ctx) {
    switch (ctx->role) {
    case WL_CLIENT: return ctx->direction == WL_EGRESS;
    case WL_SERVER: return ctx->direction == WL_INGRESS;
    default: return -1;
    }
}

bool wl_carries_requests_or_egress(const wl_ctx *ctx) {
    int r = wl_carries_requests(ctx);
    return r < 0 ? ctx->direction == WL_EGRESS : r == 1;
}

void wl_log(wl_log_level level, const char *message) {
    protocol_plugin_string_t s = {(uint8_t *)message, strlen(message)};
    wirelens_protocol_host_log((wirelens_protocol_host_log_level_t)level, &s);
}

/* ---- the batch being written ---- */

typedef struct {
    VEC(uint64_t) conn, start_ns, end_ns, size, pair_id;
    VEC(uint8_t) flags;
    VEC(uint16_t) field_count, field_key;
    VEC(uint32_t) field_offset, field_len;
    bytes_t arena;
    VEC(wirelens_protocol_types_conn_error_t) errors;
    VEC(uint64_t) skip_conn, skip_bytes;
    VEC(uint8_t) skip_flags;
} out_t;

/* Room for `more` messages in every per-message column (they grow
 * together), and fields for them at a guess. */
static void out_reserve(out_t *out, size_t more) {
    VEC_RESERVE(out->conn, more);
    VEC_RESERVE(out->start_ns, more);
    VEC_RESERVE(out->end_ns, more);
    VEC_RESERVE(out->size, more);
    VEC_RESERVE(out->pair_id, more);
    VEC_RESERVE(out->flags, more);
    VEC_RESERVE(out->field_count, more);
}

/* Messages per chunk in the last batch, so the next batch's columns are
 * sized once (as the Rust SDK does). */
static size_t messages_per_chunk = 1;

static void out_error(out_t *out, uint64_t conn, const char *prefix, const char *reason) {
    size_t a = strlen(prefix), b = reason ? strlen(reason) : 0;
    /* The bindings free only non-empty strings. */
    uint8_t *text = a + b ? malloc(a + b) : NULL;
    if (a + b && !text) abort();
    memcpy(text, prefix, a);
    if (b) memcpy(text + a, reason, b);
    wirelens_protocol_types_conn_error_t e = {conn, {text, a + b}};
    VEC_PUSH(out->errors, e);
}

/* Text into buf[at..size-1], NUL-terminated; returns the new end. */
static size_t append(char *buf, size_t size, size_t at, const char *text) {
    while (*text && at + 1 < size) buf[at++] = *text++;
    buf[at] = 0;
    return at;
}

static size_t append_u64(char *buf, size_t size, size_t at, uint64_t n) {
    char digits[21];
    size_t d = sizeof digits - 1;
    digits[d] = 0;
    do {
        digits[--d] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    return append(buf, size, at, digits + d);
}

/* a and b joined, in a buffer that lives until the next call (errors are
 * copied out at once). */
static const char *compose(const char *a, const char *b) {
    static char text[512];
    append(text, sizeof text, append(text, sizeof text, 0, a), b ? b : "");
    return text;
}

/* ---- per-connection state ---- */

typedef struct {
    bool on;
    uint64_t start_ns, size;
} in_progress_t;

typedef struct {
    bool on;
    bool has_head;
    wl_meta head_meta;
    uint64_t head_start_ns;
    uint64_t bytes, first_ns, last_ns;
    /* Only a hole in the records, after this direction's chunk at
     * `before_hole`: the next chunk starts a read or write of its own. */
    bool after_gap;
    uint64_t before_hole;
} lost_t;

typedef struct {
    size_t at;
    uint64_t ts;
} mark_t;

typedef VEC(mark_t) marks_t;

typedef struct {
    bytes_t buf;
    marks_t marks;
    uint64_t skip;
    bool skip_in_message;
    bool has_complete_after_skip;
    wl_meta complete_after_skip;
    bool to_end;
    in_progress_t current;
    wl_fields fields;
    lost_t lost;
    bool resuming, lossy;
    uint64_t last_ts;
} dir_t;

typedef struct {
    bool has_id;
    uint64_t id;
    uint64_t start_ns; /* when its first bytes were sent or received */
} pending_t;

typedef struct {
    wl_ctx ctx;
    wl_meta meta;
    uint64_t start_ns, end_ns, size;
    wl_fields fields;
} deferred_t;

typedef struct {
    uint64_t id;
    void *proto;
    wl_role role;
    dir_t s[2];
    /* Requests not answered yet, oldest first, from `head` on. */
    VEC(pending_t) outstanding;
    size_t outstanding_head;
    int request_dir; /* -1: none seen */
    bool hidden_on;
    int hidden_dir;
    uint64_t hidden_bytes, hidden_start_ns, hidden_end_ns;
    /* Responses seen with only their own request waiting, outside lost
     * regions and fences; `pipelines`: one seen there with two or more
     * waiting (see `ConnState::serial` in sdk/src/stream.rs). */
    uint32_t one_at_a_time;
    bool pipelines;
    uint32_t failed_resumes;
    VEC(deferred_t) deferred;
    /* Responses with no request to answer, held until the request
     * direction's next record tells whether a hole hid their requests
     * (`holds_orphan`). */
    VEC(deferred_t) orphans;
    /* Requests parsed right after a hole in their direction's records (see
     * `Fence` in sdk/src/stream.rs): `fence_before` outstanding requests are
     * from before it. */
    bool fence_on, fence_hidden_next;
    size_t fence_before;
    uint64_t fence_at_ns;
    /* The batch that last listed this connection in `skipping`. */
    uint64_t hint_batch;
} conn_t;

static void dir_reset(dir_t *s) {
    s->buf.len = 0;
    s->marks.len = 0;
    s->skip = 0;
    s->skip_in_message = false;
    s->has_complete_after_skip = false;
    s->current.on = false;
    s->to_end = false;
    fields_clear(&s->fields);
}

static size_t pending_count(const conn_t *c) { return c->outstanding.len - c->outstanding_head; }
static pending_t *pending_at(conn_t *c, size_t i) { return &c->outstanding.p[c->outstanding_head + i]; }
static void pending_remove(conn_t *c, size_t i) {
    if (c->fence_on && i < c->fence_before) c->fence_before--;
    if (i == 0) {
        c->outstanding_head++;
    } else {
        pending_t *p = pending_at(c, i);
        memmove(p, p + 1, (pending_count(c) - i - 1) * sizeof *p);
        c->outstanding.len--;
    }
    if (c->outstanding_head == c->outstanding.len) c->outstanding_head = c->outstanding.len = 0;
}
static void pending_push(conn_t *c, pending_t p) {
    if (c->outstanding_head > 0 && c->outstanding.len == c->outstanding.cap) {
        size_t n = pending_count(c);
        memmove(c->outstanding.p, c->outstanding.p + c->outstanding_head, n * sizeof(pending_t));
        c->outstanding.len = n;
        c->outstanding_head = 0;
    }
    VEC_PUSH(c->outstanding, p);
}

/* ---- connections by id: open addressing, linear probing ---- */

static conn_t **table;
static size_t table_cap, table_len;
static void *default_state; /* nothing: per-connection state is zeroed */

static size_t slot_of(uint64_t id, size_t cap) {
    uint64_t h = id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (cap - 1);
}

static conn_t *conn_get(uint64_t id) {
    if (!table_cap) return NULL;
    for (size_t i = slot_of(id, table_cap);; i = (i + 1) & (table_cap - 1)) {
        if (!table[i]) return NULL;
        if (table[i]->id == id) return table[i];
    }
}

static void table_put(conn_t **t, size_t cap, conn_t *c) {
    size_t i = slot_of(c->id, cap);
    while (t[i]) i = (i + 1) & (cap - 1);
    t[i] = c;
}

static conn_t *conn_insert(uint64_t id, wl_role role) {
    if ((table_len + 1) * 4 > table_cap * 3) {
        size_t cap = table_cap ? table_cap * 2 : 64;
        conn_t **t = calloc(cap, sizeof *t);
        if (!t) abort();
        for (size_t i = 0; i < table_cap; i++)
            if (table[i]) table_put(t, cap, table[i]);
        free(table);
        table = t;
        table_cap = cap;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->id = id;
    c->role = role;
    c->request_dir = -1;
    c->proto = wl_plugin.conn_size ? calloc(1, wl_plugin.conn_size) : &default_state;
    if (!c->proto) abort();
    table_put(table, table_cap, c);
    table_len++;
    return c;
}

static void conn_free(conn_t *c) {
    if (wl_plugin.drop_conn) wl_plugin.drop_conn(c->proto);
    if (wl_plugin.conn_size) free(c->proto);
    for (int d = 0; d < 2; d++) {
        VEC_FREE(c->s[d].buf);
        VEC_FREE(c->s[d].marks);
        fields_free(&c->s[d].fields);
    }
    VEC_FREE(c->outstanding);
    for (size_t i = 0; i < c->deferred.len; i++) fields_free(&c->deferred.p[i].fields);
    VEC_FREE(c->deferred);
    for (size_t i = 0; i < c->orphans.len; i++) fields_free(&c->orphans.p[i].fields);
    VEC_FREE(c->orphans);
    free(c);
}

/* Remove from the table (backward-shift deletion keeps probe chains whole). */
static void conn_remove(uint64_t id) {
    if (!table_cap) return;
    size_t i = slot_of(id, table_cap);
    while (table[i] && table[i]->id != id) i = (i + 1) & (table_cap - 1);
    if (!table[i]) return;
    conn_free(table[i]);
    table[i] = NULL;
    table_len--;
    for (size_t j = (i + 1) & (table_cap - 1); table[j]; j = (j + 1) & (table_cap - 1)) {
        size_t home = slot_of(table[j]->id, table_cap);
        /* Move j back to i when its home is not in (i, j]. */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            table[i] = table[j];
            table[j] = NULL;
            i = j;
        }
    }
}

/* Connections with a lost region (checked on clock ticks), and those a
 * chunk of this batch left skipping bytes. */
static VEC(uint64_t) with_lost;
static VEC(uint64_t) skipping;

/* ---- writing messages ---- */

static void write_message(out_t *out, const wl_ctx *ctx, wl_meta meta, uint64_t start_ns, uint64_t end_ns,
                          uint64_t size, wl_fields *fields, bool unseen) {
    if (fields) {
        size_t n = fields->keys.len > 65535 ? 65535 : fields->keys.len;
        uint32_t base = (uint32_t)out->arena.len;
        bytes_append(&out->arena, fields->text.p, fields->text.len);
        VEC_RESERVE(out->field_key, n);
        VEC_RESERVE(out->field_offset, n);
        VEC_RESERVE(out->field_len, n);
        for (size_t i = 0; i < n; i++) {
            out->field_key.p[out->field_key.len++] = fields->keys.p[i].key;
            out->field_offset.p[out->field_offset.len++] = base + fields->keys.p[i].offset;
            out->field_len.p[out->field_len.len++] = fields->keys.p[i].len;
        }
        VEC_PUSH(out->field_count, (uint16_t)n);
        fields_clear(fields);
    } else {
        VEC_PUSH(out->field_count, 0);
    }
    uint8_t flags = (uint8_t)meta.kind;
    if (ctx->direction == WL_INGRESS) flags |= MSG_INGRESS;
    unseen = unseen || (meta.outcome_unknown && meta.kind == WL_RESPONSE);
    if (meta.success && !unseen) flags |= MSG_SUCCESS;
    if (meta.has_pair_id) flags |= MSG_HAS_PAIR_ID;
    if (unseen) flags |= MSG_UNSEEN;
    if (out->conn.len == out->conn.cap) out_reserve(out, out->conn.len ? out->conn.len : 16);
    size_t i = out->conn.len++;
    out->conn.p[i] = ctx->conn;
    out->start_ns.p[i] = start_ns;
    out->end_ns.p[i] = end_ns > start_ns ? end_ns : start_ns;
    out->size.p[i] = size;
    out->pair_id.p[i] = meta.has_pair_id ? meta.pair_id : 0;
    out->flags.p[i] = flags;
    out->start_ns.len = out->end_ns.len = out->size.len = out->pair_id.len = out->flags.len = out->conn.len;
}

static wl_ctx ctx_of(const conn_t *c, int d) {
    return (wl_ctx){c->id, d ? WL_INGRESS : WL_EGRESS, c->role, false};
}

/* Which outstanding request a response answers: its index, or -1. */
static long answered_by(conn_t *c, const wl_meta *m) {
    size_t n = pending_count(c);
    for (size_t i = 0; i < n; i++) {
        pending_t *p = pending_at(c, i);
        if (m->has_pair_id ? (p->has_id && p->id == m->pair_id) : !p->has_id) return (long)i;
    }
    return -1;
}

static void answer(conn_t *c, const wl_ctx *ctx, int d, const wl_meta *m, out_t *out) {
    long i = answered_by(c, m);
    bool hidden_next = false;
    if (c->fence_on && c->fence_hidden_next && !m->has_pair_id && (i < 0 || (size_t)i >= c->fence_before)) {
        /* The requests before the fence are answered: the hidden ones come
         * next. */
        c->fence_on = false;
        hidden_next = c->hidden_on && c->hidden_dir != d && c->hidden_bytes > 0;
    }
    if (i >= 0 && !hidden_next) {
        pending_remove(c, (size_t)i);
    } else if (c->hidden_on && c->hidden_dir != d) {
        uint64_t size = c->hidden_bytes;
        c->hidden_bytes = 0;
        wl_meta request = wl_request();
        request.has_pair_id = m->has_pair_id;
        request.pair_id = m->pair_id;
        wl_ctx rctx = *ctx;
        rctx.direction = c->hidden_dir ? WL_INGRESS : WL_EGRESS;
        write_message(out, &rctx, request, c->hidden_start_ns, c->hidden_start_ns, size, NULL, true);
    }
}

static void close_lost(conn_t *c, int d, out_t *out);
static int carries_requests(const conn_t *c, int d);

/* Whether a response of direction `d` answers no request known yet: then
 * it is held until the request direction's next record, which shows
 * whether the kernel lost its request's record (`holds_orphan` in
 * sdk/src/stream.rs). */
static bool holds_orphan(conn_t *c, int d, const wl_meta *m) {
    if (m->has_pair_id || answered_by(c, m) >= 0) return false;
    if (c->hidden_on && c->hidden_dir != d && c->hidden_bytes > 0) return false;
    if (c->s[1 - d].lost.on || c->orphans.len >= MAX_OUTSTANDING) return false;
    return carries_requests(c, 1 - d) == 1;
}

/* Write the held responses with no request: each answers a request hidden
 * in a hole, if one just ended, else none. */
static void release_orphans(conn_t *c, out_t *out) {
    size_t n = c->orphans.len;
    c->orphans.len = 0;
    for (size_t i = 0; i < n; i++) {
        deferred_t *r = &c->orphans.p[i];
        int d = r->ctx.direction == WL_INGRESS;
        /* (Its request was made before it, whenever that was.) */
        if (c->hidden_on && c->hidden_dir != d && r->start_ns < c->hidden_start_ns) c->hidden_start_ns = r->start_ns;
        answer(c, &r->ctx, d, &r->meta, out);
        write_message(out, &r->ctx, r->meta, r->start_ns, r->end_ns, r->size, &r->fields, false);
        fields_free(&r->fields);
    }
}

static void release_deferred(conn_t *c, out_t *out) {
    size_t n = c->deferred.len, kept = 0;
    deferred_t *all = c->deferred.p;
    for (size_t i = 0; i < n; i++) {
        deferred_t *r = &all[i];
        int d = r->ctx.direction == WL_INGRESS;
        if (answered_by(c, &r->meta) < 0 && c->s[1 - d].current.on) {
            all[kept++] = *r; /* its own request is still arriving */
            continue;
        }
        answer(c, &r->ctx, d, &r->meta, out);
        write_message(out, &r->ctx, r->meta, r->start_ns, r->end_ns, r->size, &r->fields, false);
        fields_free(&r->fields);
    }
    c->deferred.len = kept;
}

static void emit(conn_t *c, const wl_ctx *ctx, int d, wl_meta meta, uint64_t start_ns, uint64_t end_ns, uint64_t size,
                 bool unseen, out_t *out) {
    if (meta.kind != WL_ONEWAY && !unseen && c->s[1 - d].lost.on) close_lost(c, 1 - d, out);
    bool early = meta.kind == WL_RESPONSE && !unseen && c->s[1 - d].current.on && answered_by(c, &meta) < 0 &&
                 c->deferred.len < MAX_OUTSTANDING;
    if (early) {
        deferred_t r = {*ctx, meta, start_ns, end_ns, size, fields_take(&c->s[d].fields)};
        VEC_PUSH(c->deferred, r);
        return;
    }
    if (meta.kind == WL_REQUEST) {
        if (!unseen && c->hidden_on && c->hidden_bytes == 0) c->hidden_on = false;
        c->request_dir = d;
        if (pending_count(c) >= MAX_OUTSTANDING) pending_remove(c, 0);
        pending_push(c, (pending_t){meta.has_pair_id, meta.pair_id, start_ns});
    } else if (meta.kind == WL_RESPONSE) {
        if (!unseen && holds_orphan(c, d, &meta)) {
            deferred_t r = {*ctx, meta, start_ns, end_ns, size, fields_take(&c->s[d].fields)};
            VEC_PUSH(c->orphans, r);
            return;
        }
        /* (Not while a hole is being accounted for.) */
        if (!unseen && !c->fence_on && !c->s[0].lost.on && !c->s[1].lost.on) {
            if (pending_count(c) >= 2) {
                c->pipelines = true;
            } else if (c->one_at_a_time < UINT32_MAX) {
                c->one_at_a_time++;
            }
        }
        /* A response seen after the fence with no hole before it. */
        if (!unseen && c->fence_on && !c->fence_hidden_next) c->fence_on = false;
        answer(c, ctx, d, &meta, out);
    }
    write_message(out, ctx, meta, start_ns, end_ns, size, &c->s[d].fields, unseen);
    if (meta.kind == WL_REQUEST && c->deferred.len) release_deferred(c, out);
}

/* Emit a lost region's head without ending the other direction's region
 * (this is already that ending). */
static void emit_held(conn_t *c, const wl_ctx *ctx, int d, wl_meta meta, uint64_t start_ns, uint64_t end_ns,
                      uint64_t size, out_t *out) {
    lost_t other = c->s[1 - d].lost;
    c->s[1 - d].lost.on = false;
    emit(c, ctx, d, meta, start_ns, end_ns, size, false, out);
    c->s[1 - d].lost = other;
}

/* Whether direction `d` carries requests (1) or not (0): by the role, else
 * by the direction requests were seen in; -1 when neither tells. */
static int carries_requests(const conn_t *c, int d) {
    wl_ctx ctx = ctx_of(c, d);
    int requests = wl_carries_requests(&ctx);
    if (requests >= 0) return requests;
    return c->request_dir < 0 ? -1 : c->request_dir == d;
}

static void close_lost_upto(conn_t *c, int d, size_t answers, out_t *out);
static void close_lost(conn_t *c, int d, out_t *out) { close_lost_upto(c, d, SIZE_MAX, out); }

/* A lost region of responses answers at most the `answers` oldest
 * outstanding requests. */
static void close_lost_upto(conn_t *c, int d, size_t answers, out_t *out) {
    if (!c->s[d].lost.on) return;
    lost_t lost = c->s[d].lost;
    c->s[d].lost.on = false;
    c->s[d].resuming = true;
    wl_ctx ctx = ctx_of(c, d);
    bool holds_responses;
    if (lost.has_head) {
        holds_responses = lost.head_meta.kind == WL_RESPONSE;
    } else {
        holds_responses = carries_requests(c, d) == 0;
    }
    if (!holds_responses) {
        uint64_t bytes = lost.bytes;
        if (lost.has_head) {
            uint64_t size = bytes;
            bytes = 0;
            emit_held(c, &ctx, d, lost.head_meta, lost.head_start_ns, lost.last_ns, size, out);
        } else {
            fields_clear(&c->s[d].fields);
        }
        if (c->hidden_on && c->hidden_dir == d) {
            c->hidden_bytes += bytes;
        } else {
            c->hidden_on = true;
            c->hidden_dir = d;
            c->hidden_bytes = bytes;
            c->hidden_start_ns = lost.first_ns;
        }
        c->hidden_end_ns = lost.last_ns;
        return;
    }
    /* Responses: every outstanding request was answered in the region
     * (those before the fence, when it ended at a fence). Proven over by a
     * request (or the end): the fence stays, for a hole of responses that
     * began before it and is found at the next response. */
    if (c->fence_on && answers == SIZE_MAX) {
        c->fence_hidden_next = false;
    } else {
        c->fence_on = false;
    }
    size_t n = pending_count(c);
    if (n > answers) n = answers;
    pending_t *unseen = malloc((n ? n : 1) * sizeof *unseen);
    if (!unseen) abort();
    if (n) memcpy(unseen, pending_at(c, 0), n * sizeof *unseen);
    if (lost.has_head && lost.head_meta.kind == WL_RESPONSE) {
        for (size_t i = 0; i < n; i++) {
            bool match = lost.head_meta.has_pair_id ? (unseen[i].has_id && unseen[i].id == lost.head_meta.pair_id)
                                                    : !unseen[i].has_id;
            if (match) {
                memmove(unseen + i, unseen + i + 1, (n - i - 1) * sizeof *unseen);
                n--;
                break;
            }
        }
    }
    uint64_t parts = n + (lost.has_head ? 1 : 0);
    if (parts == 0) {
        fields_clear(&c->s[d].fields);
        free(unseen);
        return;
    }
    uint64_t share = lost.bytes / parts;
    uint64_t first_extra = lost.bytes - share * parts;
    if (lost.has_head) {
        emit_held(c, &ctx, d, lost.head_meta, lost.head_start_ns, lost.last_ns, share + first_extra, out);
        first_extra = 0;
    } else {
        fields_clear(&c->s[d].fields);
    }
    for (size_t i = 0; i < n; i++) {
        wl_meta m = wl_response(false);
        m.has_pair_id = unseen[i].has_id;
        m.pair_id = unseen[i].id;
        emit(c, &ctx, d, m, lost.first_ns, lost.last_ns, share + first_extra, true, out);
        first_extra = 0;
    }
    free(unseen);
}

/* The plugin's `lost`, or its `resync` when it has none. */
static bool call_lost(conn_t *c, const wl_ctx *ctx, const uint8_t *head, size_t len, wl_fields *fields,
                      wl_meta *meta) {
    if (wl_plugin.lost) return wl_plugin.lost(c->proto, ctx, head, len, fields, meta);
    if (wl_plugin.resync) wl_plugin.resync(c->proto, ctx);
    return false;
}

/* `lost` bytes that will never be seen follow what is buffered: start a
 * lost region. */
static void lose(conn_t *c, const wl_ctx *ctx, int d, uint64_t ts, uint64_t lost, bool gap, uint64_t before_hole) {
    dir_t *s = &c->s[d];
    bool has_start = s->current.on || s->marks.len > 0;
    uint64_t head_start = s->current.on ? s->current.start_ns : (s->marks.len ? s->marks.p[0].ts : 0);
    uint64_t seen = (s->current.on ? s->current.size : 0) + s->buf.len;
    bool in_progress = s->current.on || s->buf.len > 0;
    wl_meta meta = {0};
    bool has_meta = in_progress && call_lost(c, ctx, s->buf.p, s->buf.len, &s->fields, &meta);
    uint64_t first_ns = has_start ? head_start : ts;
    wl_fields fields = fields_take(&s->fields);
    dir_reset(s);
    if (has_meta) {
        fields_free(&s->fields);
        s->fields = fields;
    } else {
        fields_free(&fields);
    }
    s->resuming = false;
    s->lossy = true;
    s->lost = (lost_t){true, has_meta, meta, first_ns, seen + lost, first_ns, ts, gap && !in_progress, before_hole};
}

/* The plugin's buffer bound (64 KiB when it sets none). */
static size_t max_buffer(void) { return wl_plugin.max_buffer ? wl_plugin.max_buffer : 65536; }

/* The timestamp of the chunk holding data[index] (marks: positions in data
 * of chunk starts; none: all are `ts`). */
static uint64_t ts_at(const mark_t *marks, size_t nmarks, uint64_t ts, size_t index) {
    uint64_t t = ts;
    bool any = false;
    for (size_t i = 0; i < nmarks && marks[i].at <= index; i++) {
        t = marks[i].ts;
        any = true;
    }
    return any || !marks ? t : ts;
}

/* Parse messages from the front of data; returns the bytes used, or -1
 * with *error set when the connection is given up. */
static long parse(conn_t *c, const wl_ctx *ctx, int d, const uint8_t *data, size_t len, const mark_t *marks,
                  size_t nmarks, uint64_t ts, out_t *out, const char **error) {
    size_t pos = 0;
    uint32_t tries = 0;
    while (pos < len && !c->s[d].to_end) {
        dir_t *s = &c->s[d];
        fields_mark mark = fields_mark_of(&s->fields);
        wl_step step = wl_plugin.parse(c->proto, ctx, data + pos, len - pos, &s->fields);
        uint64_t avail = len - pos;
        bool is_message = true, complete = false;
        switch (step.kind) {
        case WL_STEP_NEED_MORE:
            fields_rewind(&s->fields, mark);
            if (len - pos > max_buffer()) {
                /* A message longer than the plugin buffers: its head is all
                 * we get; the rest is a lost region. */
                uint64_t start = ts_at(marks, nmarks, ts, pos);
                s->buf.len = 0;
                bytes_append(&s->buf, data + pos, len - pos);
                s->marks.len = 0;
                VEC_PUSH(s->marks, ((mark_t){0, start}));
                lose(c, ctx, d, ts, 0, false, 0);
                return (long)len;
            }
            return (long)pos;
        case WL_STEP_INVALID: {
            fields_rewind(&s->fields, mark);
            if (!s->resuming && !s->lossy) {
                *error = step.reason ? step.reason : "invalid";
                return -1;
            }
            if (wl_plugin.resync) wl_plugin.resync(c->proto, ctx);
            size_t guess = 0;
            if (tries < MAX_START_GUESSES && wl_plugin.next_start) {
                guess = wl_plugin.next_start(ctx, data + pos, len - pos);
                if (guess >= len - pos) guess = 0;
            }
            if (guess) {
                tries++;
                pos += guess;
                continue;
            }
            c->failed_resumes++;
            if (c->failed_resumes > MAX_FAILED_RESUMES) {
                *error = compose("no message start found after lost bytes: ", step.reason);
                return -1;
            }
            dir_reset(s);
            s->lost = (lost_t){true, false, {0}, 0, avail, ts_at(marks, nmarks, ts, pos), ts, false, 0};
            s->resuming = false;
            return (long)len;
        }
        case WL_STEP_REST_OF_STREAM:
            if (!s->current.on) s->current = (in_progress_t){true, ts_at(marks, nmarks, ts, pos), 0};
            s->current.size += avail;
            s->resuming = false;
            s->to_end = true;
            return (long)len;
        case WL_STEP_CONTINUE: break;
        case WL_STEP_COMPLETE: complete = true; break;
        case WL_STEP_DISCARD: is_message = false; break;
        default: *error = "the plugin returned an unknown step"; return -1;
        }
        uint64_t n = step.n;
        if (n == 0) {
            *error = compose(wl_plugin.name, " parser made no progress");
            return -1;
        }
        s->resuming = false;
        c->failed_resumes = 0;
        if (is_message) {
            if (!s->current.on) s->current = (in_progress_t){true, ts_at(marks, nmarks, ts, pos), 0};
            s->current.size += n;
        }
        uint64_t take = n < avail ? n : avail;
        pos += (size_t)take;
        if (n > avail) {
            s->skip = n - avail;
            s->skip_in_message = is_message;
            s->has_complete_after_skip = complete;
            s->complete_after_skip = step.meta;
            return (long)pos;
        }
        if (complete && s->current.on) {
            uint64_t end_ns = ts_at(marks, nmarks, ts, pos - 1);
            in_progress_t cur = s->current;
            s->current.on = false;
            emit(c, ctx, d, step.meta, cur.start_ns, end_ns, cur.size, false, out);
        }
    }
    return (long)pos;
}

static void finish_skip(conn_t *c, const wl_ctx *ctx, int d, uint64_t ts, out_t *out) {
    dir_t *s = &c->s[d];
    if (s->has_complete_after_skip) {
        s->has_complete_after_skip = false;
        if (s->current.on) {
            in_progress_t cur = s->current;
            s->current.on = false;
            emit(c, ctx, d, s->complete_after_skip, cur.start_ns, ts, cur.size, false, out);
        }
    }
}

/* Drop n parsed bytes from the front of the buffer. */
static void consume(dir_t *s, size_t n) {
    if (n == 0) return;
    memmove(s->buf.p, s->buf.p + n, s->buf.len - n);
    s->buf.len -= n;
    /* Keep the mark of the chunk that holds the new first byte. */
    size_t drop = 0;
    while (s->marks.len - drop > 1 && s->marks.p[drop + 1].at <= n) drop++;
    if (s->buf.len == 0) {
        s->marks.len = 0;
        return;
    }
    memmove(s->marks.p, s->marks.p + drop, (s->marks.len - drop) * sizeof(mark_t));
    s->marks.len -= drop;
    for (size_t i = 0; i < s->marks.len; i++) s->marks.p[i].at = s->marks.p[i].at > n ? s->marks.p[i].at - n : 0;
}

/* Parse the stream's own buffer (taken out while the parser runs, as a
 * lost region may replace it); returns -1 on error. */
static long parse_buffer(conn_t *c, const wl_ctx *ctx, int d, uint64_t ts, out_t *out, const char **error) {
    dir_t *s = &c->s[d];
    bytes_t buf = s->buf;
    memset(&s->buf, 0, sizeof s->buf);
    marks_t marks = s->marks;
    memset(&s->marks, 0, sizeof s->marks);
    long used = parse(c, ctx, d, buf.p, buf.len, marks.p, marks.len, ts, out, error);
    s = &c->s[d];
    if (!s->lost.on && used >= 0) {
        VEC_FREE(s->buf);
        VEC_FREE(s->marks);
        s->buf = buf;
        s->marks = marks;
        consume(s, (size_t)used);
    } else {
        VEC_FREE(buf);
        VEC_FREE(marks);
    }
    return used;
}

/* For a connection whose client waits for each response, and whose
 * response direction `d` lost records before a chunk at `ts`: how many
 * outstanding requests were made before that chunk, when the last of them
 * is surely the one it answers; 0 otherwise (`serial_waiting_at` in
 * sdk/src/stream.rs). */
static size_t serial_waiting_at(conn_t *c, int d, uint64_t ts) {
    if (c->pipelines || c->one_at_a_time < SERIAL_EVIDENCE || c->s[1 - d].lost.on) return 0;
    size_t n = pending_count(c), waited = 0;
    for (size_t i = 0; i < n; i++) {
        if (pending_at(c, i)->has_id) return 0;
    }
    while (waited < n && pending_at(c, waited)->start_ns <= ts) waited++;
    if (waited == 0) return 0;
    bool hidden = c->hidden_on && c->hidden_dir != d && c->hidden_bytes > 0;
    if (hidden && c->hidden_end_ns > pending_at(c, waited - 1)->start_ns) return 0;
    return waited;
}

/* End direction `d`'s lost region, a hole in the records after its chunk at
 * `before_hole`, at the chunk at hand where that is sound
 * (`end_hole_at_chunk` in sdk/src/stream.rs): in the request direction
 * always (a fence goes up before the chunk's requests, moved there from an
 * earlier hole's); in the response direction of a connection whose client
 * waits for each response, answering the last request before the chunk
 * with it and the earlier ones with the hole; else only behind a fence,
 * when the hole began before it, answering the requests before the fence. */
static void end_hole_at_chunk(conn_t *c, int d, uint64_t before_hole, uint64_t ts, out_t *out) {
    int requests = carries_requests(c, d);
    if (requests < 0) return;
    size_t waited;
    if (requests) {
        close_lost(c, d, out);
        c->fence_on = true;
        c->fence_before = pending_count(c);
        c->fence_at_ns = ts;
        c->fence_hidden_next = c->s[1 - d].last_ts <= before_hole;
    } else if ((waited = serial_waiting_at(c, d, ts)) > 0) {
        c->hidden_on = false;
        close_lost_upto(c, d, waited - 1, out);
    } else if (c->fence_on && before_hole < c->fence_at_ns) {
        close_lost_upto(c, d, c->fence_before, out);
    }
}

/* One chunk of a byte stream; returns NULL, or why the connection is given
 * up. */
static const char *feed_stream(conn_t *c, const wl_ctx *ctx, uint64_t ts, const uint8_t *present, size_t plen,
                               uint64_t missing, out_t *out) {
    int d = ctx->direction == WL_INGRESS;
    const char *error = NULL;
    uint64_t previous_ts = c->s[d].last_ts;
    c->s[d].last_ts = ts;
    /* A chunk with no bytes at all stands for records the kernel lost. */
    bool gap = plen == 0;
    /* (Taken first: the region may close just below, and a hole's end
     * still puts up its fence.) */
    bool hole_ends = c->s[d].lost.on && c->s[d].lost.after_gap && !gap;
    uint64_t before_hole = c->s[d].lost.before_hole;
    if (c->s[d].lost.on && c->s[1 - d].lost.on) close_lost(c, d, out);
    if (hole_ends) end_hole_at_chunk(c, d, before_hole, ts, out);
    /* The request direction's next record: the hole before it (if any)
     * has ended above. */
    if (!gap && c->orphans.len && carries_requests(c, d) == 1) release_orphans(c, out);
    dir_t *s = &c->s[d];
    if (s->lost.on) {
        s->lost.bytes += plen + missing;
        s->lost.last_ns = ts;
        if (!gap) s->lost.after_gap = false;
        return NULL;
    }
    if (s->to_end) {
        if (s->current.on) s->current.size += plen + missing;
        return NULL;
    }
    if (s->skip > 0) {
        uint64_t from_present = s->skip < plen ? s->skip : plen;
        present += from_present;
        plen -= (size_t)from_present;
        s->skip -= from_present;
        uint64_t from_missing = s->skip < missing ? s->skip : missing;
        missing -= from_missing;
        s->skip -= from_missing;
        if (s->skip > 0) return NULL;
        finish_skip(c, ctx, d, ts, out);
    }
    s = &c->s[d];
    if (s->buf.len == 0) {
        long used = parse(c, ctx, d, present, plen, NULL, 0, ts, out, &error);
        if (used < 0) return error;
        s = &c->s[d];
        if ((size_t)used < plen && !s->to_end && s->skip == 0 && !s->lost.on) {
            VEC_PUSH(s->marks, ((mark_t){0, ts}));
            bytes_append(&s->buf, present + used, plen - (size_t)used);
        }
    } else if (plen > 0) {
        VEC_PUSH(s->marks, ((mark_t){s->buf.len, ts}));
        bytes_append(&s->buf, present, plen);
        if (parse_buffer(c, ctx, d, ts, out, &error) < 0) return error;
    }
    if (missing == 0) return NULL;
    s = &c->s[d];
    if (s->lost.on) {
        s->lost.bytes += missing;
        return NULL;
    }
    if (s->buf.len > 0 && s->skip == 0 && !s->to_end) {
        /* The head of a message waits for bytes that were lost: ask the
         * plugin for its length from what is here. */
        wl_ctx truncated = *ctx;
        truncated.truncated = true;
        if (parse_buffer(c, &truncated, d, ts, out, &error) < 0) return error;
        s = &c->s[d];
        if (s->lost.on) {
            s->lost.bytes += missing;
            return NULL;
        }
    }
    s = &c->s[d];
    if (s->to_end) {
        if (s->current.on) s->current.size += missing;
        return NULL;
    }
    uint64_t absorbed = s->skip < missing ? s->skip : missing;
    s->skip -= absorbed;
    missing -= absorbed;
    if (absorbed > 0 && s->skip == 0) finish_skip(c, ctx, d, ts, out);
    if (missing > 0) lose(c, ctx, d, ts, missing, gap, previous_ts);
    return NULL;
}

static void tick(uint64_t now_ns, out_t *out) {
    size_t n = with_lost.len;
    uint64_t *conns = with_lost.p;
    memset(&with_lost, 0, sizeof with_lost);
    for (size_t i = 0; i < n; i++) {
        conn_t *c = conn_get(conns[i]);
        if (!c) continue;
        for (int d = 0; d < 2; d++) {
            if (c->s[d].lost.on && now_ns >= c->s[d].lost.last_ns && now_ns - c->s[d].lost.last_ns >= QUIET_NS)
                close_lost(c, d, out);
        }
        if (c->s[0].lost.on || c->s[1].lost.on) VEC_PUSH(with_lost, conns[i]);
    }
    free(conns);
}

/* Tell the host how many bytes of each direction the plugin will skip
 * (each connection once per batch). */
static void skip_hints(out_t *out) {
    static uint64_t batch;
    batch++;
    for (size_t i = 0; i < skipping.len; i++) {
        conn_t *c = conn_get(skipping.p[i]);
        if (!c || c->hint_batch == batch) continue;
        c->hint_batch = batch;
        for (int d = 0; d < 2; d++) {
            if (c->s[d].skip > 0 && !c->s[d].lost.on) {
                VEC_PUSH(out->skip_conn, c->id);
                VEC_PUSH(out->skip_flags, (uint8_t)d);
                VEC_PUSH(out->skip_bytes, c->s[d].skip);
            }
        }
    }
    skipping.len = 0;
}

/* ---- the exports ---- */

#define LIST(v) {(v).p, (v).len}

/* The bindings free a returned list only when it is not empty: free the
 * empty ones here (their room was reserved ahead). */
#define FREE_IF_EMPTY(v) \
    if ((v).len == 0) VEC_FREE(v)

static void out_to_batch(out_t *o, exports_wirelens_protocol_parser_batch_t *ret) {
    FREE_IF_EMPTY(o->conn);
    FREE_IF_EMPTY(o->start_ns);
    FREE_IF_EMPTY(o->end_ns);
    FREE_IF_EMPTY(o->size);
    FREE_IF_EMPTY(o->pair_id);
    FREE_IF_EMPTY(o->flags);
    FREE_IF_EMPTY(o->field_count);
    FREE_IF_EMPTY(o->field_key);
    FREE_IF_EMPTY(o->field_offset);
    FREE_IF_EMPTY(o->field_len);
    FREE_IF_EMPTY(o->arena);
    FREE_IF_EMPTY(o->errors);
    FREE_IF_EMPTY(o->skip_conn);
    FREE_IF_EMPTY(o->skip_flags);
    FREE_IF_EMPTY(o->skip_bytes);
    *ret = (exports_wirelens_protocol_parser_batch_t){
        LIST(o->conn),         LIST(o->start_ns),    LIST(o->end_ns),       LIST(o->size),
        LIST(o->pair_id),      LIST(o->flags),       LIST(o->field_count),  LIST(o->field_key),
        LIST(o->field_offset), LIST(o->field_len),   LIST(o->arena),        LIST(o->errors),
        LIST(o->skip_conn),    LIST(o->skip_flags),  LIST(o->skip_bytes),
    };
}

static void string_dup(protocol_plugin_string_t *s, const char *text) {
    size_t n = text ? strlen(text) : 0;
    s->ptr = n ? malloc(n) : NULL;
    if (n && !s->ptr) abort();
    if (n) memcpy(s->ptr, text, n);
    s->len = n;
}

void exports_wirelens_protocol_parser_info(exports_wirelens_protocol_parser_plugin_info_t *ret) {
    const wl_protocol *p = &wl_plugin;
    memset(ret, 0, sizeof *ret);
    string_dup(&ret->name, p->name);
    string_dup(&ret->version, p->version);
    string_dup(&ret->description, p->description);
    if (p->default_ports_len) {
        ret->default_ports.ptr = malloc(p->default_ports_len * sizeof(uint16_t));
        if (!ret->default_ports.ptr) abort();
        memcpy(ret->default_ports.ptr, p->default_ports, p->default_ports_len * sizeof(uint16_t));
        ret->default_ports.len = p->default_ports_len;
    }
    if (p->field_names_len) {
        ret->field_names.ptr = calloc(p->field_names_len, sizeof(protocol_plugin_string_t));
        if (!ret->field_names.ptr) abort();
        for (size_t i = 0; i < p->field_names_len; i++) string_dup(&ret->field_names.ptr[i], p->field_names[i]);
        ret->field_names.len = p->field_names_len;
    }
    if (p->call_field) {
        ret->call_field.is_some = true;
        string_dup(&ret->call_field.val, p->call_field);
    }
    if (p->capture_request || p->capture_response) {
        ret->capture_bytes.is_some = true;
        ret->capture_bytes.val.request = p->capture_request;
        ret->capture_bytes.val.response = p->capture_response;
    }
}

bool exports_wirelens_protocol_parser_configure(protocol_plugin_list_tuple2_string_string_t *options,
                                                protocol_plugin_string_t *err) {
    bool ok = true;
    for (size_t i = 0; i < options->len && ok; i++) {
        protocol_plugin_string_t *k = &options->ptr[i].f0, *v = &options->ptr[i].f1;
        const char *why = wl_plugin.configure
                              ? wl_plugin.configure((const char *)k->ptr, k->len, (const char *)v->ptr, v->len)
                              : "unknown option (this protocol takes none)";
        if (why) {
            /* "option `KEY`: WHY", as the Rust SDK says it. */
            size_t w = strlen(why), n = 8 + k->len + 3 + w;
            err->ptr = malloc(n);
            if (!err->ptr) abort();
            memcpy(err->ptr, "option `", 8);
            memcpy(err->ptr + 8, k->ptr, k->len);
            memcpy(err->ptr + 8 + k->len, "`: ", 3);
            memcpy(err->ptr + 11 + k->len, why, w);
            err->len = n;
            ok = false;
        }
    }
    protocol_plugin_list_tuple2_string_string_free(options);
    return ok;
}

uint8_t exports_wirelens_protocol_parser_detect(exports_wirelens_protocol_parser_direction_t direction,
                                                exports_wirelens_protocol_parser_role_t role,
                                                protocol_plugin_list_u8_t *bytes) {
    uint8_t score = wl_plugin.detect((wl_direction)direction, (wl_role)role, bytes->ptr, bytes->len);
    protocol_plugin_list_u8_free(bytes);
    return score > 100 ? 100 : score;
}

void exports_wirelens_protocol_parser_feed(exports_wirelens_protocol_parser_chunks_t *chunks,
                                           protocol_plugin_list_u8_t *data,
                                           exports_wirelens_protocol_parser_batch_t *ret) {
    out_t out;
    memset(&out, 0, sizeof out);
    size_t n = chunks->conn.len;
    if (chunks->timestamp_ns.len != n || chunks->captured.len != n || chunks->real_len.len != n ||
        chunks->flags.len != n) {
        out_error(&out, UINT64_MAX, "chunk columns of different lengths", NULL);
        n = 0;
    }
    if (n) out_reserve(&out, n <= SIZE_MAX / messages_per_chunk ? n * messages_per_chunk : n);
    size_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = chunks->conn.ptr[i], ts = chunks->timestamp_ns.ptr[i];
        uint8_t flags = chunks->flags.ptr[i];
        if (flags & CHUNK_TICK) {
            tick(ts, &out);
            continue;
        }
        size_t captured = chunks->captured.ptr[i];
        if (captured > data->len - offset) {
            char text[128];
            size_t at = 0;
            at = append(text, sizeof text, at, "chunk claims ");
            at = append_u64(text, sizeof text, at, captured);
            at = append(text, sizeof text, at, " bytes at data offset ");
            at = append_u64(text, sizeof text, at, offset);
            at = append(text, sizeof text, at, " but data holds ");
            append_u64(text, sizeof text, at, data->len);
            out_error(&out, id, text, NULL);
            break;
        }
        const uint8_t *bytes = data->ptr + offset;
        offset += captured;
        uint64_t real = chunks->real_len.ptr[i];
        uint64_t missing = real > captured ? real - captured : 0;
        wl_role role = (wl_role)((flags >> 1) & 3);
        if (role > WL_UNKNOWN_ROLE) role = WL_UNKNOWN_ROLE;
        conn_t *c = conn_get(id);
        if (!c) c = conn_insert(id, role);
        if (role != WL_UNKNOWN_ROLE) c->role = role;
        wl_ctx ctx = {id, (flags & CHUNK_INGRESS) ? WL_INGRESS : WL_EGRESS, c->role, false};
        bool had_lost = c->s[0].lost.on || c->s[1].lost.on;
        const char *error = feed_stream(c, &ctx, ts, bytes, captured, missing, &out);
        if (error) {
            /* The reason first: it may live in the connection's state. */
            out_error(&out, id, "", error);
            conn_remove(id);
            continue;
        }
        bool has_lost = c->s[0].lost.on || c->s[1].lost.on;
        if (has_lost && !had_lost) VEC_PUSH(with_lost, id);
        if (c->s[0].skip > 0 || c->s[1].skip > 0) VEC_PUSH(skipping, id);
    }
    if (n) {
        size_t per = (out.conn.len + n - 1) / n;
        messages_per_chunk = per < 1 ? 1 : per > 64 ? 64 : per;
    }
    skip_hints(&out);
    wirelens_protocol_types_chunks_free(chunks);
    protocol_plugin_list_u8_free(data);
    out_to_batch(&out, ret);
}

void exports_wirelens_protocol_parser_close(protocol_plugin_list_u64_t *conns,
                                            exports_wirelens_protocol_parser_batch_t *ret) {
    out_t out;
    memset(&out, 0, sizeof out);
    for (size_t i = 0; i < conns->len; i++) {
        conn_t *c = conn_get(conns->ptr[i]);
        if (!c) continue;
        for (int d = 0; d < 2; d++) close_lost(c, d, &out);
        for (int d = 0; d < 2; d++) {
            dir_t *s = &c->s[d];
            if (!s->current.on) continue;
            in_progress_t cur = s->current;
            s->current.on = false;
            wl_ctx ctx = ctx_of(c, d);
            wl_meta meta;
            bool emit_it = false;
            if (s->has_complete_after_skip) {
                /* The stream ended inside a message of known length. */
                s->has_complete_after_skip = false;
            } else if (wl_plugin.finish) {
                emit_it = wl_plugin.finish(c->proto, &ctx, &meta);
            }
            if (emit_it) {
                uint64_t claimed = s->skip_in_message ? s->skip : 0;
                uint64_t size = cur.size - (claimed < cur.size ? claimed : cur.size);
                emit(c, &ctx, d, meta, cur.start_ns, s->last_ts, size, false, &out);
            }
        }
        release_orphans(c, &out);
        /* Responses whose request never completed: written as they are. */
        for (size_t j = 0; j < c->deferred.len; j++) {
            deferred_t *r = &c->deferred.p[j];
            int d = r->ctx.direction == WL_INGRESS;
            answer(c, &r->ctx, d, &r->meta, &out);
            write_message(&out, &r->ctx, r->meta, r->start_ns, r->end_ns, r->size, &r->fields, false);
        }
        conn_remove(conns->ptr[i]);
        size_t kept = 0;
        for (size_t j = 0; j < with_lost.len; j++)
            if (with_lost.p[j] != conns->ptr[i]) with_lost.p[kept++] = with_lost.p[j];
        with_lost.len = kept;
    }
    protocol_plugin_list_u64_free(conns);
    out_to_batch(&out, ret);
}
