//! gob's integer encodings and a bounds-checked reader over one message.
//!
//! Every read names what it was reading, so a truncated or corrupt stream produces an error
//! that says where it went wrong instead of a bare "unexpected EOF".

use crate::Error;

/// A cursor over one message payload. It never reads past the payload, and lengths read from
/// the wire are checked against what is left before anything is sliced or allocated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Msg<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Msg<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_exhausted(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(crate) fn read_uint(&mut self, what: &'static str) -> Result<u64, Error> {
        let (value, used) =
            decode_uint(&self.buf[self.pos..], what)?.ok_or(Error::Truncated { what })?;
        self.pos += used;
        Ok(value)
    }

    pub(crate) fn read_int(&mut self, what: &'static str) -> Result<i64, Error> {
        self.read_uint(what).map(uint_to_int)
    }

    /// Reads a `uint(len)` followed by that many bytes.
    pub(crate) fn read_counted(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let len = self.read_uint(what)?;
        let len = self.check_count(len, 1, what)?;
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    /// Checks that `count` items, each at least `min_item_len` bytes long on the wire, can
    /// still be in this message. This is what keeps a hostile length such as 2^60 from ever
    /// reaching an allocation: the answer is bounded by the bytes actually received.
    pub(crate) fn check_count(
        &self,
        count: u64,
        min_item_len: usize,
        what: &'static str,
    ) -> Result<usize, Error> {
        let max = (self.remaining() / min_item_len) as u64;
        if count > max {
            return Err(Error::LengthBeyondMessage {
                what,
                len: count,
                remaining: self.remaining(),
            });
        }
        Ok(count as usize)
    }
}

/// Decodes one gob unsigned integer from the front of `buf`.
/// `Ok(None)` means `buf` ends before the integer does.
pub(crate) fn decode_uint(buf: &[u8], what: &'static str) -> Result<Option<(u64, usize)>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first < 0x80 {
        return Ok(Some((u64::from(first), 1)));
    }
    // A byte >= 0x80 holds the negated count of big-endian bytes that follow.
    let count = usize::from(first.wrapping_neg());
    if count > 8 {
        return Err(Error::BadUint { what, byte: first });
    }
    let Some(bytes) = buf.get(1..=count) else {
        return Ok(None);
    };
    let value = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Ok(Some((value, count + 1)))
}

/// gob's signed mapping: the low bit says "complemented", the rest is the magnitude.
pub(crate) fn uint_to_int(u: u64) -> i64 {
    let i = (u >> 1) as i64;
    if u & 1 == 0 { i } else { !i }
}

pub(crate) fn int_to_uint(i: i64) -> u64 {
    if i < 0 {
        ((!i as u64) << 1) | 1
    } else {
        (i as u64) << 1
    }
}

pub(crate) fn put_uint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
        return;
    }
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    let significant = &bytes[skip..];
    out.push((significant.len() as u8).wrapping_neg());
    out.extend_from_slice(significant);
}

pub(crate) fn put_int(out: &mut Vec<u8>, value: i64) {
    put_uint(out, int_to_uint(value));
}

/// Floats travel as their IEEE-754 bits with the bytes reversed, so that common values
/// (small exponents, short mantissas) become small unsigned integers.
pub(crate) fn float_to_uint(f: f64) -> u64 {
    f.to_bits().swap_bytes()
}

pub(crate) fn uint_to_float(u: u64) -> f64 {
    f64::from_bits(u.swap_bytes())
}

pub(crate) fn put_counted(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_uint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, v);
        out
    }

    fn enc_int(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_int(&mut out, v);
        out
    }

    #[test]
    fn unsigned_integer_examples() {
        assert_eq!(enc_uint(0), [0x00]);
        assert_eq!(enc_uint(127), [0x7f]);
        assert_eq!(enc_uint(128), [0xff, 0x80]);
        assert_eq!(enc_uint(256), [0xfe, 0x01, 0x00]);
        assert_eq!(
            enc_uint(u64::MAX),
            [0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn signed_integer_examples() {
        assert_eq!(enc_int(0), [0x00]);
        assert_eq!(enc_int(1), [0x02]);
        assert_eq!(enc_int(-1), [0x01]);
        assert_eq!(enc_int(6), [0x0c]);
        assert_eq!(enc_int(64), [0xff, 0x80]);
        assert_eq!(enc_int(65), [0xff, 0x82]);
        assert_eq!(enc_int(-64), [0x7f]);
        assert_eq!(enc_int(-65), [0xff, 0x81]);
        assert_eq!(uint_to_int(int_to_uint(i64::MIN)), i64::MIN);
        assert_eq!(uint_to_int(int_to_uint(i64::MAX)), i64::MAX);
    }

    #[test]
    fn float_one_is_fe_f0_3f() {
        let mut out = Vec::new();
        put_uint(&mut out, float_to_uint(1.0));
        assert_eq!(out, [0xfe, 0xf0, 0x3f]);
        assert_eq!(uint_to_float(float_to_uint(-2.5e300)), -2.5e300);
    }

    #[test]
    fn decoding_rejects_more_than_eight_bytes_and_reports_short_input() {
        assert!(matches!(
            decode_uint(&[0xf7, 0, 0, 0, 0, 0, 0, 0, 0, 0], "x"),
            Err(Error::BadUint { byte: 0xf7, .. })
        ));
        assert_eq!(decode_uint(&[], "x").unwrap(), None);
        assert_eq!(decode_uint(&[0xfe, 0x01], "x").unwrap(), None);
        assert_eq!(
            decode_uint(&[0xfe, 0x01, 0x00], "x").unwrap(),
            Some((256, 3))
        );
        // Non-minimal encodings are accepted, as Go does.
        assert_eq!(decode_uint(&[0xfe, 0x00, 0x05], "x").unwrap(), Some((5, 3)));
    }

    #[test]
    fn counted_reads_never_exceed_the_message() {
        let mut m = Msg::new(&[0x05, b'a', b'b']);
        assert!(matches!(
            m.read_counted("string"),
            Err(Error::LengthBeyondMessage {
                len: 5,
                remaining: 2,
                ..
            })
        ));
        let mut m = Msg::new(&[0x02, b'a', b'b']);
        assert_eq!(m.read_counted("string").unwrap(), b"ab");
        assert!(m.is_exhausted());
    }
}
