//! SQL text normalization shared by the SQL protocol plugins: literals become
//! `?`, so `SELECT * FROM t WHERE id = 42` and `... id = 7` aggregate under
//! one key, and the number of distinct keys stays bounded.
//!
//! - string literals (`'...'` with `''` and backslash escapes, `E'...'`,
//!   `X'..'`, `B'..'`, dollar-quoted `$tag$...$tag$`) and numbers (integers,
//!   decimals, exponents, `0x..`) become `?`; MySQL's `"..."` strings too
//!   when [`Dialect::MySql`];
//! - placeholders (`?`, `$1`, `:name`) stay as they are written;
//! - comments are dropped, runs of white space become one space, a comma
//!   is followed by one space;
//! - a list of only placeholders, `(?, ?, ?)`, becomes `(?)`, and repeated
//!   groups `(?), (?)` (multi-row `VALUES`) become one;
//! - keywords keep their case (they are part of what the user wrote).
//!
//! The output is cut at [`MAX_NORMALIZED`] bytes.

/// Longest normalized text kept.
pub const MAX_NORMALIZED: usize = 1024;

/// How the text quotes strings and identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `"..."` is a string (by default), `` `...` `` an identifier, `#` a comment.
    MySql,
    /// `"..."` is an identifier, `$tag$...$tag$` a string.
    Postgres,
}

/// The first word of a statement, upper case (`SELECT`, `INSERT`, ...),
/// skipping comments, white space and opening parentheses.
pub fn verb(sql: &[u8]) -> String {
    let mut i = 0;
    loop {
        i = skip_space_and_comments(sql, i, true);
        if sql.get(i) == Some(&b'(') {
            i += 1;
        } else {
            break;
        }
    }
    let start = i;
    while i < sql.len() && sql[i].is_ascii_alphabetic() {
        i += 1;
    }
    String::from_utf8_lossy(&sql[start..i]).to_ascii_uppercase()
}

/// Normalize `sql` (see the module documentation). Invalid UTF-8 is replaced.
pub fn normalize(sql: &[u8], dialect: Dialect) -> String {
    let mut text = String::new();
    normalize_into(sql, dialect, &mut text);
    text
}

/// Normalize `sql` into the field `key`. The text is built in a buffer kept
/// from call to call, so a statement costs no allocation of its own.
pub fn normalize_field(fields: &mut crate::Fields, key: crate::FieldKey, sql: &[u8], dialect: Dialect) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    SCRATCH.with_borrow_mut(|text| {
        normalize_into(sql, dialect, text);
        fields.str(key, text);
    });
}

/// [`normalize`] into `text`, replacing what it held and reusing its
/// allocation.
pub fn normalize_into(sql: &[u8], dialect: Dialect, text: &mut String) {
    let mut out = std::mem::take(text).into_bytes();
    out.clear();
    out.reserve(sql.len().min(MAX_NORMALIZED));
    let mut i = 0;
    let n = sql.len();
    let mut pending_space = false;
    // Whether `out` holds a `(` (tracked: scanning it afterwards cost more).
    let mut paren = false;
    while i < n && out.len() < MAX_NORMALIZED * 2 {
        let c = sql[i];
        // White space and comments collapse into one separating space. (Only
        // these bytes can open either: the test keeps the common path cheap.)
        // One space between words, the usual case, without the call.
        if c == b' ' && sql.get(i + 1).is_some_and(|&b| is_word(b)) {
            pending_space = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() || matches!(c, b'-' | b'#' | b'/') {
            let after = skip_space_and_comments(sql, i, dialect == Dialect::MySql);
            if after > i {
                pending_space = true;
                i = after;
                continue;
            }
        }
        let space = |out: &mut Vec<u8>, pending: &mut bool| {
            if *pending && !out.is_empty() {
                out.push(b' ');
            }
            *pending = false;
        };
        let word_before = out.last().is_some_and(|&b| is_word(b)) && !pending_space;
        match c {
            b'\'' => {
                space(&mut out, &mut pending_space);
                // Postgres strings take backslashes literally (only E'..' escapes).
                i = skip_quoted(sql, i, b'\'', dialect == Dialect::MySql);
                out.push(b'?');
            }
            b'"' if dialect == Dialect::MySql => {
                space(&mut out, &mut pending_space);
                i = skip_quoted(sql, i, b'"', true);
                out.push(b'?');
            }
            b'"' | b'`' => {
                // Quoted identifier: kept as written.
                space(&mut out, &mut pending_space);
                let end = skip_quoted(sql, i, c, false);
                paren |= sql[i..end].contains(&b'(');
                out.extend_from_slice(&sql[i..end]);
                i = end;
            }
            b'$' if dialect == Dialect::Postgres => {
                space(&mut out, &mut pending_space);
                if let Some(end) = dollar_quoted(sql, i) {
                    out.push(b'?');
                    i = end;
                } else {
                    // `$1` placeholder (or a lone `$`): kept.
                    out.push(b'$');
                    i += 1;
                    while i < n && sql[i].is_ascii_digit() {
                        out.push(sql[i]);
                        i += 1;
                    }
                }
            }
            b'0'..=b'9' if !word_before => {
                space(&mut out, &mut pending_space);
                drop_unary_sign(&mut out);
                i = skip_number(sql, i);
                out.push(b'?');
            }
            b'.' if !word_before && sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                space(&mut out, &mut pending_space);
                i = skip_number(sql, i);
                out.push(b'?');
            }
            // E'..', X'..', B'..', N'..': a string with a prefix letter.
            b'e' | b'E' | b'x' | b'X' | b'b' | b'B' | b'n' | b'N' if !word_before && sql.get(i + 1) == Some(&b'\'') => {
                space(&mut out, &mut pending_space);
                let escapes = dialect == Dialect::MySql || matches!(c, b'e' | b'E');
                i = skip_quoted(sql, i + 1, b'\'', escapes);
                out.push(b'?');
            }
            _ => {
                if is_word(c) {
                    space(&mut out, &mut pending_space);
                    // The word, and the words after it that are copied as
                    // they are (`SELECT id FROM users WHERE id`): one copy
                    // for the run, not a turn of this loop per word and space.
                    let end = plain_run(sql, i);
                    // (Runs are short: a copy in place, not `memory.copy`.)
                    crate::protocol::extend_small(&mut out, &sql[i..end]);
                    i = end;
                } else {
                    // Punctuation: no space before `,` `)` `.`, none after `(` `.`.
                    if matches!(c, b',' | b')' | b'.' | b';') || out.last().is_some_and(|&b| b == b'(' || b == b'.') {
                        pending_space = false;
                    }
                    space(&mut out, &mut pending_space);
                    out.push(c);
                    paren |= c == b'(';
                    i += 1;
                    // `a,b` and `a, b` read the same: one space after a comma.
                    pending_space = c == b',';
                }
            }
        }
    }
    // Without a `(` there is no list to collapse.
    let out = if paren { collapse_lists(&out) } else { out };
    *text = if crate::protocol::is_ascii(&out) {
        // SAFETY: ASCII is UTF-8 (the usual statement: checked a word at a
        // time, where full validation cost a tenth of normalizing).
        unsafe { String::from_utf8_unchecked(out) }
    } else {
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    };
    text.truncate(text.floor_char_boundary(MAX_NORMALIZED));
}

/// `x + -5` and `x + 5` are one statement shape: a sign written right
/// before a number, after an operator, `(`, `,` or a keyword, goes with it.
/// `a -1` (a subtraction) keeps its minus.
fn drop_unary_sign(out: &mut Vec<u8>) {
    if !matches!(out.last(), Some(b'-' | b'+')) {
        return;
    }
    let before = out[..out.len() - 1].trim_ascii_end();
    let operand_before = before.last().is_some_and(|&b| b == b')' || b == b'?' || b == b'"' || b == b'`')
        || (before.last().is_some_and(|&b| is_word(b)) && !ends_with_keyword(before));
    if !operand_before {
        out.pop();
    }
}

/// Words after which a sign is unary (`WHERE a = -1` has `=`, but
/// `SELECT -1`, `THEN -1` and `AND -1` have keywords).
fn ends_with_keyword(text: &[u8]) -> bool {
    let start = text.iter().rposition(|&b| !is_word(b)).map_or(0, |p| p + 1);
    let word = &text[start..];
    const KEYWORDS: &[&[u8]] = &[
        b"select", b"where", b"and", b"or", b"not", b"then", b"else", b"when", b"by", b"limit", b"offset", b"values",
        b"set", b"return", b"in", b"is", b"like", b"between", b"case",
    ];
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// The end of the run of words starting at `i` that stays as written: words
/// joined by one space, each starting with a byte that only continues a
/// word (a letter, `_`, a byte of a multi-byte character) and not opening
/// a prefixed string (`E'..'`, `X'..'`, ...). Digits start numbers, which
/// become `?`; anything else ends the run and goes through the general
/// rules.
fn plain_run(sql: &[u8], mut i: usize) -> usize {
    let n = sql.len();
    loop {
        while i < n && is_word(sql[i]) {
            i += 1;
        }
        if i + 1 >= n || sql[i] != b' ' {
            return i;
        }
        let next = sql[i + 1];
        let prefixed_string =
            matches!(next, b'e' | b'E' | b'x' | b'X' | b'b' | b'B' | b'n' | b'N') && sql.get(i + 2) == Some(&b'\'');
        if !is_word(next) || next.is_ascii_digit() || prefixed_string {
            return i;
        }
        i += 1;
    }
}

fn is_word(b: u8) -> bool {
    WORD[b as usize]
}

/// Bytes that continue a word: ASCII letters, digits, `_`, and any byte of
/// a multi-byte UTF-8 character. A table, because word runs are most of
/// the text and a load beats four comparisons per byte.
static WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
        b += 1;
    }
    table
};

/// Index after any white space and comments starting at `i`.
fn skip_space_and_comments(sql: &[u8], mut i: usize, hash_comments: bool) -> usize {
    let n = sql.len();
    loop {
        match sql.get(i) {
            Some(b) if b.is_ascii_whitespace() => i += 1,
            Some(b'-') if sql.get(i + 1) == Some(&b'-') => {
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
            }
            Some(b'#') if hash_comments => {
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
            }
            Some(b'/') if sql.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < n && !(sql[i] == b'*' && sql.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(n);
            }
            _ => return i,
        }
    }
}

/// Index after the quoted text opening at `i` (doubled quotes, and with
/// `backslash` backslash escapes, stay inside); the end of the text when it
/// is not closed.
fn skip_quoted(sql: &[u8], i: usize, quote: u8, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < sql.len() {
        match sql[j] {
            b'\\' if backslash => j += 2,
            b if b == quote => {
                if sql.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    sql.len()
}

/// `$tag$ ... $tag$` opening at `i`: the index after it.
fn dollar_quoted(sql: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < sql.len() && (sql[j].is_ascii_alphabetic() || sql[j] == b'_') {
        j += 1;
    }
    if sql.get(j) != Some(&b'$') {
        return None;
    }
    let tag = &sql[i..=j];
    let body = j + 1;
    let end = crate::cursor::find(&sql[body..], tag).map_or(sql.len(), |at| body + at + tag.len());
    Some(end)
}

fn skip_number(sql: &[u8], mut i: usize) -> usize {
    let n = sql.len();
    if sql[i] == b'0' && matches!(sql.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < n && sql[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < n && (sql[i].is_ascii_digit() || sql[i] == b'.') {
        i += 1;
    }
    if i < n && matches!(sql[i], b'e' | b'E') {
        let mut j = i + 1;
        if j < n && matches!(sql[j], b'+' | b'-') {
            j += 1;
        }
        if j < n && sql[j].is_ascii_digit() {
            i = j;
            while i < n && sql[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// `(?, ?, ?)` -> `(?)`, then `(?), (?)` -> `(?)`; lists holding anything
/// else (`(?, CURRENT_TIMESTAMP)`) stay as they are.
fn collapse_lists(text: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    let mut opens: Vec<usize> = Vec::new();
    for &b in text {
        match b {
            b'(' => opens.push(out.len()),
            b')' => {
                if let Some(open) = opens.pop() {
                    let inside = &out[open + 1..];
                    let only_placeholders =
                        !inside.is_empty() && inside.split(|&c| c == b',').all(|item| item.trim_ascii() == b"?");
                    if only_placeholders {
                        out.truncate(open + 2);
                    }
                }
            }
            _ => {}
        }
        out.push(b);
        if b == b')' && out.ends_with(b"(?), (?)") {
            out.truncate(out.len() - 5);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my(s: &str) -> String {
        normalize(s.as_bytes(), Dialect::MySql)
    }
    fn pg(s: &str) -> String {
        normalize(s.as_bytes(), Dialect::Postgres)
    }

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(my("SELECT * FROM t WHERE id = 42"), "SELECT * FROM t WHERE id = ?");
        assert_eq!(
            my("select a,b from t where x='it''s' and y=\"q\\\"x\" and z=-1.5e3"),
            "select a, b from t where x=? and y=? and z=?"
        );
        assert_eq!(my("INSERT INTO t VALUES (1, 'a', 0x1F), (2, 'b', 0xff)"), "INSERT INTO t VALUES (?)");
        assert_eq!(
            my("INSERT INTO h VALUES (1, 2, now()), (3, 4, now())"),
            "INSERT INTO h VALUES (?, ?, now()), (?, ?, now())"
        );
        assert_eq!(my("SELECT f((1), 2)"), "SELECT f((?), ?)");
        assert_eq!(
            my("SELECT * FROM t WHERE id IN (1,2,3,4) AND v = X'0a'"),
            "SELECT * FROM t WHERE id IN (?) AND v = ?"
        );
        assert_eq!(
            pg("SELECT \"Col\" FROM t WHERE a = $1 AND b = E'x\\'y' AND c = $$lit$$"),
            "SELECT \"Col\" FROM t WHERE a = $1 AND b = ? AND c = ?"
        );
        assert_eq!(
            pg("UPDATE pgbench_accounts SET abalance = abalance + -3271 WHERE aid = 5;"),
            "UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?;"
        );
        assert_eq!(
            pg("SELECT -1, a -1, (b)-2, f(-3) WHERE x = -4 AND y >= +5"),
            "SELECT ?, a -?, (b)-?, f(?) WHERE x = ? AND y >= ?"
        );
    }

    #[test]
    fn identifiers_with_digits_comments_and_space() {
        assert_eq!(
            my("SELECT t1.c2 FROM `tab 1` t1 -- note\n /* x */  WHERE  t1.c3>.5 # end"),
            "SELECT t1.c2 FROM `tab 1` t1 WHERE t1.c3>?"
        );
        assert_eq!(pg("select count(*) from pgbench_branches"), "select count(*) from pgbench_branches");
        assert_eq!(verb(b"  /* hint */ (select 1)"), "SELECT");
        assert_eq!(verb(b"begin"), "BEGIN");
    }

    #[test]
    fn text_not_ascii_and_parentheses_only_in_quotes() {
        assert_eq!(pg("SELECT nom FROM café WHERE é = 'ü'"), "SELECT nom FROM café WHERE é = ?");
        assert_eq!(
            normalize(b"SELECT a\xff FROM t WHERE b = 1", Dialect::Postgres),
            "SELECT a\u{fffd} FROM t WHERE b = ?"
        );
        // A `(` inside a quoted identifier still counts for collapsing lists.
        assert_eq!(pg("SELECT \"f(\" FROM t"), "SELECT \"f(\" FROM t");
        assert_eq!(my("SELECT `g(` FROM t WHERE x IN (1, 2)"), "SELECT `g(` FROM t WHERE x IN (?)");
    }

    #[test]
    fn runs_of_plain_words_stop_where_a_rule_applies() {
        assert_eq!(
            pg("SELECT abalance FROM pgbench_accounts WHERE aid = 1234;"),
            "SELECT abalance FROM pgbench_accounts WHERE aid = ?;"
        );
        // A number, a prefixed string, a second space, a comment after a word.
        assert_eq!(pg("SELECT a FROM t LIMIT 10 OFFSET 5"), "SELECT a FROM t LIMIT ? OFFSET ?");
        assert_eq!(pg("SELECT a WHERE b = E'x' AND c = N'y' OR d x'0a'"), "SELECT a WHERE b = ? AND c = ? OR d ?");
        assert_eq!(my("select x'0a', b'1', n from t"), "select ?, ?, n from t");
        assert_eq!(my("SELECT  a  FROM t-- c\n WHERE b"), "SELECT a FROM t WHERE b");
        assert_eq!(my("SELECT a /* c */ FROM t"), "SELECT a FROM t");
        // Words that merely start like prefixed strings, digits inside words.
        assert_eq!(pg("SELECT name, bx, e2 FROM events WHERE v1 = 3"), "SELECT name, bx, e2 FROM events WHERE v1 = ?");
        // A trailing space, non-ASCII words, a leading space.
        assert_eq!(pg(" SELECT é FROM ü "), "SELECT é FROM ü");
        assert_eq!(pg("SELECT a -1"), "SELECT a -?");
    }

    #[test]
    fn bounded_and_total() {
        let long = format!("SELECT '{}' , {}", "x".repeat(5000), "c, ".repeat(2000));
        assert!(my(&long).len() <= MAX_NORMALIZED);
        // Unclosed quotes and odd bytes never panic.
        for s in ["'", "\"", "$a$", "/*", "0x", "1e", "E'", "$", "\u{e9}'\\"] {
            let _ = my(s);
            let _ = pg(s);
        }
    }
}
