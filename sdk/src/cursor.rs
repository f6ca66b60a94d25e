//! Byte-parsing helpers every protocol needs.
//!
//! Every read returns `None` when the buffer holds too few bytes: in a
//! [`crate::Protocol::parse`] that is the cue to return [`crate::Step::NeedMore`]
//! (the `?` operator does it when the function returns `Option<Step>`).

/// A read position over a byte slice.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Start at the beginning of `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Number of bytes not read yet.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when every byte has been read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Look at the next byte without reading it.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Read `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Read `n` bytes given as a wire length (`u64`, possibly larger than
    /// memory on a 32-bit target): never truncates the length.
    #[inline]
    pub fn take_len(&mut self, n: u64) -> Option<&'a [u8]> {
        self.take(usize::try_from(n).ok()?)
    }

    /// Skip `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    /// Read a fixed-size array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("take returned N bytes"))
    }

    /// Read one byte.
    #[inline]
    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }

    /// Big-endian (network order) `u16`.
    #[inline]
    pub fn u16_be(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    /// Little-endian `u16`.
    #[inline]
    pub fn u16_le(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// Little-endian 3-byte integer (MySQL packet lengths).
    #[inline]
    pub fn u24_le(&mut self) -> Option<u32> {
        self.array::<3>().map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    /// MySQL's length-encoded integer: one byte below 0xfb, else 0xfc, 0xfd
    /// or 0xfe followed by 2, 3 or 8 little-endian bytes. `None` for the
    /// NULL (0xfb) and invalid (0xff) markers or when bytes are missing.
    #[inline]
    pub fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.u16_le().map(u64::from),
            0xfd => self.u24_le().map(u64::from),
            0xfe => self.u64_le(),
            _ => None,
        }
    }

    /// Big-endian `u32`.
    #[inline]
    pub fn u32_be(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// Little-endian `u32`.
    #[inline]
    pub fn u32_le(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// Big-endian `u64`.
    #[inline]
    pub fn u64_be(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// Little-endian `u64`.
    #[inline]
    pub fn u64_le(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A body preceded by its length as a big-endian `u16`.
    #[inline]
    pub fn prefixed_u16_be(&mut self) -> Option<&'a [u8]> {
        let mut probe = *self;
        let len = probe.u16_be()?;
        let body = probe.take(usize::from(len))?;
        *self = probe;
        Some(body)
    }

    /// A body preceded by its length as a big-endian `u32`.
    #[inline]
    pub fn prefixed_u32_be(&mut self) -> Option<&'a [u8]> {
        let mut probe = *self;
        let len = probe.u32_be()?;
        let body = probe.take_len(u64::from(len))?;
        *self = probe;
        Some(body)
    }

    /// A line ended by `\n` (a preceding `\r` is removed); the terminator is
    /// consumed but not returned. `None` until the terminator is present.
    #[inline(always)]
    pub fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        let nl = memchr::memchr(b'\n', rest)?;
        self.pos += nl + 1;
        let line = &rest[..nl];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// Bytes up to a NUL byte (C string); the NUL is consumed.
    #[inline]
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        let nul = memchr::memchr(0, rest)?;
        self.pos += nul + 1;
        Some(&rest[..nul])
    }

    /// Bytes up to (not including) `delim`; the delimiter is consumed.
    #[inline]
    pub fn until(&mut self, delim: u8) -> Option<&'a [u8]> {
        let rest = self.rest();
        let at = memchr::memchr(delim, rest)?;
        self.pos += at + 1;
        Some(&rest[..at])
    }
}

/// Find `needle` in `haystack` (for header terminators and the like).
#[inline]
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Parse ASCII decimal digits into a `u64` (no sign, no spaces); `None` on
/// anything else or overflow.
#[inline]
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        // Overflow is checked by comparison, not `checked_mul`: on wasm32 a
        // u64 multiply with overflow check is a call to a 128-bit multiply.
        const LIMIT: u64 = u64::MAX / 10;
        let digit = u64::from(d - b'0');
        if acc > LIMIT || (acc == LIMIT && digit > u64::MAX % 10) {
            return None;
        }
        Some(acc * 10 + digit)
    })
}

/// Parse ASCII hex digits into a `u64`; `None` on anything else or overflow.
#[inline]
pub fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        // A shift, not `checked_mul` (see parse_decimal).
        if acc >> 60 != 0 {
            return None;
        }
        Some(acc << 4 | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_short_reads() {
        let mut c = Cursor::new(&[1, 0, 2, 0, 0, 0, 3]);
        assert_eq!(c.u16_be(), Some(0x0100));
        assert_eq!(c.u8(), Some(2));
        assert_eq!(c.u32_be(), Some(3));
        assert_eq!(c.u8(), None);
        assert!(c.is_empty());
        let mut c = Cursor::new(&[0x10, 0x20, 0x30]);
        assert_eq!(c.u24_le(), Some(0x30_20_10));
    }

    #[test]
    fn numbers_up_to_the_overflow_edge() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"18446744073709551620"), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
        assert_eq!(parse_hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex(b"10000000000000000"), None);
        assert_eq!(parse_hex(b"g"), None);
    }

    #[test]
    fn prefixed_reads_do_not_move_on_short_input() {
        let mut c = Cursor::new(&[0, 3, b'a', b'b']);
        assert_eq!(c.prefixed_u16_be(), None);
        assert_eq!(c.position(), 0);
        let mut c = Cursor::new(&[0, 2, b'a', b'b', b'c']);
        assert_eq!(c.prefixed_u16_be(), Some(&b"ab"[..]));
        assert_eq!(c.rest(), b"c");
    }

    #[test]
    fn huge_wire_lengths_are_not_truncated() {
        let mut c = Cursor::new(b"abc");
        assert_eq!(c.take_len(u64::MAX), None);
        assert_eq!(c.take_len((1u64 << 32) + 1), None);
        assert_eq!(c.take_len(2), Some(&b"ab"[..]));
    }

    #[test]
    fn lines_and_strings() {
        let mut c = Cursor::new(b"GET / HTTP/1.1\r\nHost: x\nrest");
        assert_eq!(c.line(), Some(&b"GET / HTTP/1.1"[..]));
        assert_eq!(c.line(), Some(&b"Host: x"[..]));
        assert_eq!(c.line(), None);
        assert_eq!(c.rest(), b"rest");
        let mut c = Cursor::new(b"user\0db\0");
        assert_eq!(c.cstr(), Some(&b"user"[..]));
        assert_eq!(c.until(0), Some(&b"db"[..]));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_decimal(b"1234"), Some(1234));
        assert_eq!(parse_decimal(b"12a"), None);
        assert_eq!(parse_decimal(b"99999999999999999999999"), None);
        assert_eq!(parse_hex(b"1aF"), Some(0x1af));
        assert_eq!(parse_hex(b""), None);
        assert_eq!(find(b"ab\r\n\r\ncd", b"\r\n\r\n"), Some(2));
    }
}
