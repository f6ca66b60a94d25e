/*
 * wirelens C SDK: write a layer-7 protocol parser in C.
 *
 * You fill in one `wl_protocol` (its name, field names and callbacks) and
 * define it as `wl_plugin`. The SDK's engine (wirelens_engine.c) does all
 * that is not about your protocol, exactly as the Rust SDK does: it keeps
 * per-connection state, reassembles bytes across system calls, skips bytes
 * a length claims (copied by the capture or not), keeps calls whole when
 * bytes were lost, pairs requests with responses, and writes the columns
 * of the WIT contract (wit/protocol.wit).
 *
 * Your `parse` callback is shown the bytes at the front of one direction
 * of one connection and says what comes next (a `wl_step`): "these n bytes
 * complete a request", "I need more", "this is not my protocol"...
 *
 * Plugins run without libc: `stdlib.h` and `string.h` here are the SDK's
 * own (malloc, free, realloc, calloc, memcpy, memmove, memset, memcmp,
 * memchr, strlen, strcmp, strncmp, abort). Nothing else is linked, so a plugin imports
 * nothing but the contract's `host.log` (`wl_log`).
 *
 * Guide: sdk/README-c.md. Reference implementation: plugins/nats-c.
 */
#ifndef WIRELENS_H
#define WIRELENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which way the bytes moved, seen from the observed process. */
typedef enum { WL_EGRESS = 0, WL_INGRESS = 1 } wl_direction;

/* What the observed process is on the connection. */
typedef enum { WL_CLIENT = 0, WL_SERVER = 1, WL_UNKNOWN_ROLE = 2 } wl_role;

/* What `parse` is told about the stream it parses. */
typedef struct {
    uint64_t conn;          /* connection id, chosen by the host */
    wl_direction direction; /* direction of the stream being parsed */
    wl_role role;           /* role of the observed process */
    /* The bytes right after `buf` were lost (the capture copied only the
     * first bytes of a call): what is at hand is all there will be of this
     * stretch. Parse what you can and, if the protocol gives the message's
     * length, return it (wl_complete or wl_continue past the bytes at
     * hand): the SDK skips the rest exactly, uncopied bytes included.
     * wl_need_more() means the length is unknown too: the SDK then calls
     * `lost`. */
    bool truncated;
} wl_ctx;

/* 1 when, by role, ctx's direction carries requests (client egress, server
 * ingress), 0 when it carries responses, -1 when the role is unknown. */
int wl_carries_requests(const wl_ctx *ctx);
/* wl_carries_requests, guessing that what the observed process sends is
 * requests when its role is unknown (most observed processes are clients). */
bool wl_carries_requests_or_egress(const wl_ctx *ctx);

/* How a completed message takes part in a call. */
typedef enum { WL_REQUEST = 0, WL_RESPONSE = 1, WL_ONEWAY = 2 } wl_kind;

typedef struct {
    wl_kind kind;
    bool success;         /* responses: did the call succeed */
    bool has_pair_id;     /* pair by `pair_id` instead of first-in first-out */
    bool outcome_unknown; /* responses: the outcome could not be read */
    uint64_t pair_id;
} wl_meta;

wl_meta wl_request(void);
wl_meta wl_response(bool success);
wl_meta wl_oneway(void);
wl_meta wl_with_pair_id(wl_meta meta, uint64_t id);

/* The next step of a stream, decided from the bytes at its front. Lengths
 * are wire lengths: they may exceed the bytes at hand, in which case the
 * SDK skips the rest as it arrives (copied or not) and stays in step. */
typedef enum {
    WL_STEP_NEED_MORE,      /* not enough bytes to decide: call again with more */
    WL_STEP_CONTINUE,       /* n bytes belong to the message in progress, which goes on */
    WL_STEP_COMPLETE,       /* the message in progress (or a new one) ends after n bytes */
    WL_STEP_DISCARD,        /* n bytes belong to no message: drop them */
    WL_STEP_REST_OF_STREAM, /* the rest of the stream is the message in progress
                               (emitted at close, with `finish`'s meta) */
    WL_STEP_INVALID,        /* not (or no longer) this protocol: give the connection up */
} wl_step_kind;

typedef struct {
    wl_step_kind kind;
    uint64_t n;
    wl_meta meta;       /* WL_STEP_COMPLETE */
    const char *reason; /* WL_STEP_INVALID: a string that outlives the call */
} wl_step;

wl_step wl_need_more(void);
wl_step wl_continue(uint64_t n);
wl_step wl_complete(uint64_t n, wl_meta meta);
wl_step wl_discard(uint64_t n);
wl_step wl_rest_of_stream(void);
wl_step wl_invalid(const char *reason);

/* Where `parse` writes the fields of the message in progress. Fields
 * written during a call that returns wl_need_more() are thrown away, so a
 * parser can always write as it goes. Values are cut to 4 KiB; bytes that
 * are not UTF-8 are replaced (U+FFFD). */
typedef struct wl_fields wl_fields;

void wl_field_text(wl_fields *fields, uint16_t key, const uint8_t *value, size_t len);
void wl_field_str(wl_fields *fields, uint16_t key, const char *value);
void wl_field_int(wl_fields *fields, uint16_t key, int64_t value);

typedef enum { WL_LOG_ERROR = 0, WL_LOG_WARN = 1, WL_LOG_INFO = 2, WL_LOG_DEBUG = 3 } wl_log_level;

/* Log through the host (rate-limited there). */
void wl_log(wl_log_level level, const char *message);

/* A protocol: what `wirelens plugins list` shows, and the callbacks. */
typedef struct {
    const char *name;        /* as records show it (`nats`) */
    const char *version;     /* semver */
    const char *description; /* one line */
    const uint16_t *default_ports; /* a hint for detection order */
    size_t default_ports_len;
    const char *const *field_names; /* a field's key indexes this list */
    size_t field_names_len;
    const char *call_field; /* the field that says what a call does, or NULL */
    /* Payload bytes worth copying per call (requests, responses); 0 and 0:
     * the daemon's capture size. */
    uint32_t capture_request, capture_response;
    /* Most bytes of one direction kept while waiting for a message to be
     * complete; past it the message's head is all that is kept. */
    size_t max_buffer;
    /* Bytes of per-connection state; the SDK allocates them zeroed when a
     * connection is first seen and frees them when it ends. */
    size_t conn_size;

    /* Required. How sure (0-100) that a connection whose first bytes in
     * `direction` are `bytes` speaks this protocol. */
    uint8_t (*detect)(wl_direction direction, wl_role role, const uint8_t *bytes, size_t len);

    /* Required. The next step for the bytes at the front of a stream
     * (`len` is never 0). `conn` is this connection's state. */
    wl_step (*parse)(void *conn, const wl_ctx *ctx, const uint8_t *buf, size_t len, wl_fields *fields);

    /* Optional. Apply one option of `Wirelens.PluginOptions.<name>`:
     * return NULL, or a message saying why the value is refused. NULL
     * callback: every option is refused. */
    const char *(*configure)(const char *key, size_t key_len, const char *value, size_t value_len);

    /* Optional. The stream ended while a message was in progress: true and
     * its meta to emit it (a body that ends with the connection). */
    bool (*finish)(void *conn, const wl_ctx *ctx, wl_meta *meta);

    /* Optional. Bytes of ctx's direction were lost where no length
     * accounted for them. `head` holds what was seen of the message in
     * progress (possibly nothing). Forget per-direction state; return true
     * with the message's meta (and write its fields) if its head tells its
     * kind and, for a response, its outcome. The SDK reports it with the
     * lost bytes' real size, so the call keeps its count and latency. */
    bool (*lost)(void *conn, const wl_ctx *ctx, const uint8_t *head, size_t len, wl_fields *fields, wl_meta *meta);

    /* Optional. After lost bytes, where in `data` (the rest of a chunk) a
     * message may start: an offset from 1 on, or 0 for none. */
    size_t (*next_start)(const wl_ctx *ctx, const uint8_t *data, size_t len);

    /* Optional. Forget per-direction parsing state (after lost bytes, or
     * where a message should have started and did not). */
    void (*resync)(void *conn, const wl_ctx *ctx);

    /* Optional. Free what the connection state points to (not the state
     * itself). */
    void (*drop_conn)(void *conn);
} wl_protocol;

/* Define this, once, in your plugin. */
extern const wl_protocol wl_plugin;

/* Small helpers plugins keep writing. */

/* Index of the first `byte` in data[0..len], or -1. */
long wl_find_byte(const uint8_t *data, size_t len, uint8_t byte);
/* Index of the first `needle` in data[0..len], or -1. */
long wl_find(const uint8_t *data, size_t len, const uint8_t *needle, size_t needle_len);
/* ASCII decimal digits filling all of data[0..len] (no sign, no spaces):
 * true and *out, or false (also on overflow). */
bool wl_parse_decimal(const uint8_t *data, size_t len, uint64_t *out);
/* Case-insensitive ASCII comparison of a[0..len] and the C string b (which
 * must be exactly len long). */
bool wl_eq_ignore_case(const uint8_t *a, size_t len, const char *b);

#ifdef __cplusplus
}
#endif

#endif
