/*
 * MiniKV, a made-up key-value protocol: the C guide's worked example
 * (sdk/README-c.md). Replace it with your protocol.
 *
 * Requests (client to server), one line each:
 *   GET <key>\n
 *   SET <key> <n>\n  followed by n bytes of value
 * Responses: OK\n, NIL\n, ERR <message>\n, or VAL <n>\n followed by n bytes.
 */
#include <string.h>

#include "wirelens.h"

/* Field keys: indexes into field_names below. */
enum { COMMAND = 0, KEY = 1 };

static const char *const field_names[] = {"command", "key"};
static const uint16_t ports[] = {7070};

static bool starts_with(const uint8_t *bytes, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && memcmp(bytes, prefix, n) == 0;
}

static uint8_t detect(wl_direction direction, wl_role role, const uint8_t *bytes, size_t len) {
    static const char *const openings[] = {"GET ", "SET ", "OK\n", "NIL\n", "ERR ", "VAL "};
    for (size_t i = 0; i < sizeof openings / sizeof openings[0]; i++)
        if (starts_with(bytes, len, openings[i])) return 80;
    return 0;
}

/* The next space-separated word of line[*at..len], moving *at past it. */
static size_t next_word(const uint8_t *line, size_t len, size_t *at, const uint8_t **word) {
    size_t start = *at, end = start;
    while (end < len && line[end] != ' ') end++;
    *word = line + start;
    *at = end < len ? end + 1 : end;
    return end - start;
}

static wl_step parse(void *conn, const wl_ctx *ctx, const uint8_t *buf, size_t len, wl_fields *fields) {
    /* Wait for the whole line. */
    long nl = wl_find_byte(buf, len, '\n');
    if (nl < 0) return wl_need_more();
    uint64_t head = (uint64_t)nl + 1;
    size_t line_len = (size_t)nl;
    if (line_len && buf[line_len - 1] == '\r') line_len--;

    size_t at = 0;
    const uint8_t *word, *key, *number;
    size_t word_len = next_word(buf, line_len, &at, &word);
    bool get = word_len == 3 && memcmp(word, "GET", 3) == 0;
    bool set = word_len == 3 && memcmp(word, "SET", 3) == 0;
    if ((get || set) && wl_carries_requests(ctx) != 0) {
        size_t key_len = next_word(buf, line_len, &at, &key);
        wl_field_text(fields, COMMAND, word, word_len);
        wl_field_text(fields, KEY, key, key_len);
        uint64_t value_len = 0;
        if (set) {
            size_t number_len = next_word(buf, line_len, &at, &number);
            if (!wl_parse_decimal(number, number_len, &value_len)) return wl_invalid("SET without a length");
        }
        /* The value may be longer than what was captured: the SDK skips
         * the rest as it arrives. */
        return wl_complete(head + value_len, wl_request());
    }
    if ((word_len == 2 && memcmp(word, "OK", 2) == 0) || (word_len == 3 && memcmp(word, "NIL", 3) == 0))
        return wl_complete(head, wl_response(true));
    if (word_len == 3 && memcmp(word, "ERR", 3) == 0) return wl_complete(head, wl_response(false));
    if (word_len == 3 && memcmp(word, "VAL", 3) == 0) {
        uint64_t value_len;
        size_t number_len = next_word(buf, line_len, &at, &number);
        if (!wl_parse_decimal(number, number_len, &value_len)) return wl_invalid("VAL without a length");
        return wl_complete(head + value_len, wl_response(true));
    }
    return wl_invalid("not MiniKV");
}

const wl_protocol wl_plugin = {
    .name = "minikv",
    .version = "0.1.0",
    .description = "MiniKV, the C guide's example protocol",
    .default_ports = ports,
    .default_ports_len = 1,
    .field_names = field_names,
    .field_names_len = 2,
    .call_field = "command",
    .max_buffer = 16 * 1024,
    .detect = detect,
    .parse = parse,
};
