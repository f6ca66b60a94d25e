//! HPACK header decoding (RFC 7541), one decoder per direction of a
//! connection, written here rather than taken from a crate because it must
//! keep going on a connection whose start the capture missed: the dynamic
//! table's older entries are then unknown, and a field that names one is
//! reported as unknown instead of failing the whole block. Entries added
//! after the capture joined are known exactly (the oldest entries are the
//! first evicted, so ours are evicted only when ours alone fill the table).

use std::collections::VecDeque;

/// What goes wrong inside a header block.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The block ends inside a representation.
    Truncated,
    /// An index past both tables (on a connection seen from its start).
    BadIndex(u64),
    /// An integer too large to be meant.
    Overflow,
    /// Huffman code that decodes to EOS or pads with zero bits.
    BadHuffman,
    /// A table size update above the limit SETTINGS allowed.
    BadSizeUpdate(u64),
}

/// Bytes an entry costs beyond its name and value (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// One dynamic table entry.
enum Entry {
    Known(Vec<u8>, Vec<u8>),
    /// Added under a name the decoder could not know (it named an unknown
    /// entry): it holds its place, and the size counted for it.
    Unknown(usize),
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Entry::Known(n, v) => n.len() + v.len() + ENTRY_OVERHEAD,
            Entry::Unknown(size) => *size,
        }
    }
}

/// The dynamic table of one direction.
pub struct Decoder {
    /// Newest first.
    entries: VecDeque<Entry>,
    size: usize,
    /// The size the encoder last set (initially the protocol's 4096).
    max_size: usize,
    /// The most the encoder may set: SETTINGS_HEADER_TABLE_SIZE, capped.
    limit: usize,
    /// The capture missed the start: entries older than ours are unknown.
    joined_midway: bool,
    /// Fields reported unknown so far.
    pub unknown_fields: u64,
    /// A literal's name and value are decoded here, reused from field to
    /// field (a fresh `Vec` for each was most of the plugin's allocations).
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Decoder {
    /// A decoder for a direction seen from its first byte, whose table may
    /// grow to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: 4096.min(limit),
            limit,
            joined_midway: false,
            unknown_fields: 0,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// A decoder for a direction whose start was not seen.
    pub fn joined_midway(limit: usize) -> Self {
        Self { joined_midway: true, ..Self::new(limit) }
    }

    /// Whether the table's older entries are unknown.
    pub fn is_midway(&self) -> bool {
        self.joined_midway
    }

    /// Lower the most the encoder may set (a SETTINGS frame's
    /// HEADER_TABLE_SIZE, already capped by the caller).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        if self.max_size > limit {
            self.max_size = limit;
            self.evict_to(limit);
        }
    }

    /// Bytes the table's entries take, as HPACK counts them.
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Decode one whole header block, calling `field(name, value)` per
    /// field in order; `None` is a name or value held by an unknown entry.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(Option<&[u8]>, Option<&[u8]>),
    ) -> Result<(), Error> {
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let index = integer(&mut block, 7)?;
                match self.lookup(index)? {
                    Some((n, v)) => field(Some(n), Some(v)),
                    None => {
                        self.unknown_fields += 1;
                        field(None, None)
                    }
                }
            } else if first & 0xe0 == 0x20 {
                let size = integer(&mut block, 5)?;
                if size > self.limit as u64 {
                    return Err(Error::BadSizeUpdate(size));
                }
                self.max_size = size as usize;
                self.evict_to(self.max_size);
            } else {
                // Literal: with incremental indexing (01), without (0000) or
                // never indexed (0001).
                let (prefix, index_it) = if first & 0xc0 == 0x40 { (6, true) } else { (4, false) };
                let name_index = integer(&mut block, prefix)?;
                let (mut name, mut value) = (std::mem::take(&mut self.name), std::mem::take(&mut self.value));
                let known = if name_index == 0 {
                    string(&mut block, &mut name)?;
                    true
                } else {
                    match self.lookup(name_index)? {
                        Some((n, _)) => {
                            name.clear();
                            wirelens_sdk::extend_small(&mut name, n);
                            true
                        }
                        None => false,
                    }
                };
                string(&mut block, &mut value)?;
                if !known {
                    self.unknown_fields += 1;
                }
                field(known.then_some(&name[..]), Some(&value));
                if index_it {
                    let entry = if known {
                        // The buffers become the entry's; the next literal
                        // starts new ones.
                        Entry::Known(std::mem::take(&mut name), std::mem::take(&mut value))
                    } else {
                        // The name's length is unknown: count the value
                        // only, the least it can take.
                        Entry::Unknown(value.len() + ENTRY_OVERHEAD)
                    };
                    self.insert(entry);
                }
                (self.name, self.value) = (name, value);
            }
        }
        Ok(())
    }

    /// The entry at `index` (1-based over static then dynamic), or `None`
    /// when it is unknown.
    fn lookup(&self, index: u64) -> Result<Option<(&[u8], &[u8])>, Error> {
        let at = usize::try_from(index).map_err(|_| Error::BadIndex(index))?;
        if at == 0 {
            return Err(Error::BadIndex(0));
        }
        if let Some((n, v)) = STATIC.get(at - 1) {
            return Ok(Some((n.as_bytes(), v.as_bytes())));
        }
        match self.entries.get(at - 1 - STATIC.len()) {
            Some(Entry::Known(n, v)) => Ok(Some((n, v))),
            Some(Entry::Unknown(_)) => Ok(None),
            None if self.joined_midway => Ok(None),
            None => Err(Error::BadIndex(index)),
        }
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        // An entry larger than the table empties it and is not added.
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            self.entries.push_front(entry);
            self.size += size;
        }
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some(e) = self.entries.pop_back() else { break };
            self.size -= e.size();
        }
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1), taken off the
/// front of `block`.
fn integer(block: &mut &[u8], n: u32) -> Result<u64, Error> {
    let (&first, mut rest) = block.split_first().ok_or(Error::Truncated)?;
    let max = (1u64 << n) - 1;
    let mut value = u64::from(first) & max;
    if value == max {
        let mut shift = 0;
        loop {
            let (&b, more) = rest.split_first().ok_or(Error::Truncated)?;
            rest = more;
            if shift > 56 {
                return Err(Error::Overflow);
            }
            value += u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// A string literal (RFC 7541 5.2): a Huffman bit, a 7-bit-prefix length,
/// the bytes; decoded into `out` (emptied first).
fn string(block: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let huffman = block.first().ok_or(Error::Truncated)? & 0x80 != 0;
    let len = integer(block, 7)?;
    let len = usize::try_from(len).map_err(|_| Error::Overflow)?;
    if block.len() < len {
        return Err(Error::Truncated);
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    out.clear();
    if huffman {
        huffman_decode_into(raw, out)
    } else {
        wirelens_sdk::extend_small(out, raw);
        Ok(())
    }
}

/// Code lengths of the 257 symbols of HPACK's Huffman code (RFC 7541
/// Appendix B; 256 is EOS). The code is canonical: codes follow from the
/// lengths, in order of length then symbol.
static CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// The canonical code's decoding tables: per length, the first code and
/// where its symbols start in `symbols` (sorted by length, then symbol).
struct Canonical {
    first_code: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u32; MAX_LEN + 1],
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut count = [0u32; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[CODE_LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut first_code = [0u32; MAX_LEN + 1];
    let mut offset = [0u32; MAX_LEN + 1];
    let mut len = 1;
    while len <= MAX_LEN {
        first_code[len] = (first_code[len - 1] + count[len - 1]) << 1;
        offset[len] = offset[len - 1] + count[len - 1];
        len += 1;
    }
    let mut symbols = [0u16; 257];
    let mut next = offset;
    let mut sym = 0;
    while sym < 257 {
        let l = CODE_LENGTHS[sym] as usize;
        symbols[next[l] as usize] = sym as u16;
        next[l] += 1;
        sym += 1;
    }
    Canonical { first_code, count, offset, symbols }
}

static CODE: Canonical = canonical();

/// Decode a Huffman-coded string (RFC 7541 5.2): up to 7 bits of padding,
/// all ones (a prefix of EOS), may end it.
pub fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    huffman_decode_into(raw, &mut out).map(|()| out)
}

/// [`huffman_decode`], appending to `out`.
fn huffman_decode_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    out.reserve(raw.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in raw {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            let rank = code.wrapping_sub(CODE.first_code[len]);
            if rank < CODE.count[len] {
                let sym = CODE.symbols[(CODE.offset[len] + rank) as usize];
                if sym == EOS {
                    return Err(Error::BadHuffman);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                return Err(Error::BadHuffman);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones.
    if len > 7 || code != (1 << len) - 1 {
        return Err(Error::BadHuffman);
    }
    Ok(())
}

/// The static table (RFC 7541 Appendix A).
static STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn decode_all(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        d.decode(&hex(block), |n, v| {
            let text = |b: Option<&[u8]>| b.map_or("?".to_string(), |b| String::from_utf8_lossy(b).into_owned());
            out.push((text(n), text(v)));
        })
        .unwrap();
        out
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn huffman_strings_of_the_rfc() {
        for (coded, plain) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            ("d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3", "https://www.example.com"),
        ] {
            assert_eq!(huffman_decode(&hex(coded)).unwrap(), plain.as_bytes(), "{plain}");
        }
        // Padding of zeros, or EOS itself (30 ones), is an error.
        assert_eq!(huffman_decode(&hex("6402 00")), Err(Error::BadHuffman));
        assert_eq!(huffman_decode(&hex("ffff ffff")), Err(Error::BadHuffman));
    }

    /// RFC 7541 C.4: three requests with Huffman coding, one connection.
    #[test]
    fn requests_of_the_rfc_share_the_dynamic_table() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            pairs(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
        );
        assert_eq!(d.table_size(), 57);
        assert_eq!(
            decode_all(&mut d, "8286 84be 5886 a8eb 1064 9cbf"),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(d.table_size(), 110);
        assert_eq!(
            decode_all(&mut d, "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.table_size(), 164);
    }

    /// RFC 7541 C.6: responses with a 256-byte table, so entries are evicted.
    #[test]
    fn responses_of_the_rfc_evict_the_oldest() {
        let mut d = Decoder::new(4096);
        d.decode(&hex("3fe1 01"), |_, _| {}).unwrap(); // size update to 256
        let first = "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3";
        assert_eq!(decode_all(&mut d, first)[0], (":status".to_string(), "302".to_string()));
        assert_eq!(d.table_size(), 222);
        assert_eq!(decode_all(&mut d, "4883 640e ff c1 c0 bf")[0], (":status".to_string(), "307".to_string()));
        assert_eq!(d.table_size(), 222);
        let third = decode_all(
            &mut d,
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        );
        assert_eq!(third[0], (":status".to_string(), "200".to_string()));
        assert_eq!(
            third[5],
            ("set-cookie".to_string(), "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".to_string())
        );
        assert_eq!(d.table_size(), 215);
    }

    /// Joined midway: static entries and literals decode, entries older
    /// than the capture are unknown, and entries added since are known.
    #[test]
    fn a_connection_joined_midway_decodes_what_it_can() {
        let mut d = Decoder::joined_midway(4096);
        // :method GET (static), then dynamic index 62 (unknown), then a
        // literal :path with indexing, then index 62 again (now ours).
        let got = decode_all(&mut d, "82 be 44 03 2f 6162 be");
        assert_eq!(got, pairs(&[(":method", "GET"), ("?", "?"), (":path", "/ab"), (":path", "/ab")]));
        assert_eq!(d.unknown_fields, 1);
        // From the start, an index past the tables is an error.
        assert_eq!(Decoder::new(4096).decode(&hex("be"), |_, _| {}), Err(Error::BadIndex(62)));
    }

    #[test]
    fn size_updates_above_the_limit_and_cut_blocks_are_errors() {
        let mut d = Decoder::new(4096);
        d.set_limit(1024);
        assert_eq!(d.decode(&hex("3fe1 0f"), |_, _| {}), Err(Error::BadSizeUpdate(2048)));
        assert_eq!(Decoder::new(4096).decode(&hex("41 8c f1e3"), |_, _| {}), Err(Error::Truncated));
    }
}
