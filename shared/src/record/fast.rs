// Over 500 lines: the single-pass encoder and the tests that hold it to the reference parser.
//! The single-pass record encoder: the ingest hot path.
//!
//! Batch records are nearly always flat objects: a user id, a list of integer
//! or plain string items, perhaps a few other fields. [`Encoder::encode`]
//! scans such a record once, byte by byte, and writes its stored form
//! straight into the caller's buffer: no intermediate JSON values and no
//! allocation per record. Anything it does not handle itself (strings with
//! escapes, and every record that is not valid) goes to [`Record::parse`],
//! which stays the reference: for every input the encoder gives the same bytes
//! and the same error, and a property test holds the two together.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{
    minify_into, nesting, put_varint, validate_user_id, zigzag, Fields, Record, RecordError,
    CODEC_BINARY, MAX_NESTING,
};

/// Parses records and appends their stored form; reusable across records.
pub struct Encoder {
    fields: Fields,
    max_items: usize,
    /// The items of an all-integer list, already in their stored form.
    ints: Vec<u8>,
    /// The items of an all-string list, by their byte ranges.
    strings: Vec<(usize, usize)>,
    /// Other fields: name range, value range.
    others: Vec<(usize, usize, usize, usize)>,
}

impl Encoder {
    pub fn new(fields: &Fields, max_items: usize) -> Self {
        Encoder {
            fields: fields.clone(),
            max_items,
            ints: Vec::with_capacity(256),
            strings: Vec::with_capacity(64),
            others: Vec::new(),
        }
    }

    /// Appends the stored form of the record in `text` to `out` and returns
    /// its canonical user id; on error `out` is left as it was.
    pub fn encode<'a>(
        &mut self,
        text: &'a str,
        out: &mut Vec<u8>,
    ) -> Result<Cow<'a, str>, RecordError> {
        let mark = out.len();
        if let Some(id) = self.fast(text, out) {
            return Ok(Cow::Borrowed(id));
        }
        out.truncate(mark);
        let record = Record::parse(text, &self.fields, self.max_items)?;
        record.encode_into(out);
        Ok(record.user_id)
    }

    /// The scan; `None` when the record needs the full parser.
    fn fast<'a>(&mut self, text: &'a str, out: &mut Vec<u8>) -> Option<&'a str> {
        let b = text.as_bytes();
        let mut s = Scan { b, i: 0 };
        self.ints.clear();
        self.strings.clear();
        let mut count = 0;
        self.others.clear();
        let mut user: Option<(usize, usize, bool)> = None;
        let mut items_seen = false;
        s.ws();
        s.eat(b'{')?;
        s.ws();
        loop {
            let (ks, ke) = s.plain_string()?;
            let key = &b[ks..ke];
            s.ws();
            s.eat(b':')?;
            s.ws();
            if key == self.fields.user.as_bytes() {
                if user.is_some() {
                    return None;
                }
                user = Some(if s.peek()? == b'"' {
                    let (vs, ve) = s.plain_string()?;
                    (vs, ve, false)
                } else {
                    let (vs, ve, _) = s.integer_text()?;
                    (vs, ve, true)
                });
            } else if key == self.fields.items.as_bytes() {
                if items_seen {
                    return None;
                }
                items_seen = true;
                s.eat(b'[')?;
                s.ws();
                if s.peek()? == b']' {
                    s.i += 1;
                } else {
                    loop {
                        if s.peek()? == b'"' {
                            self.strings.push(s.plain_string()?);
                        } else {
                            put_varint_short(&mut self.ints, zigzag(s.integer()?));
                        }
                        count += 1;
                        s.ws();
                        match s.next()? {
                            b',' => s.ws(),
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
            } else {
                if self.others.iter().any(|&(os, oe, _, _)| &b[os..oe] == key) {
                    return None;
                }
                // Any JSON value: serde_json checks it and gives its extent.
                let rest = &text[s.i..];
                let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
                let value = values.next()?.ok()?.get();
                if nesting(value) > MAX_NESTING {
                    return None;
                }
                let vs = s.i + (value.as_ptr() as usize - rest.as_ptr() as usize);
                self.others.push((ks, ke, vs, vs + value.len()));
                s.i += values.byte_offset();
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
        s.ws();
        // A list that mixes integers and strings is rare: the full parser
        // takes it.
        if s.i != b.len()
            || !items_seen
            || count > self.max_items
            || (!self.ints.is_empty() && !self.strings.is_empty())
        {
            return None;
        }
        let (us, ue, user_is_int) = user?;
        let id = &text[us..ue];
        validate_user_id(id).ok()?;

        let all_int = self.strings.is_empty();
        // The stored form is never longer than the text, give or take its header.
        out.reserve(text.len() + 16);
        out.push(CODEC_BINARY);
        out.push(u8::from(user_is_int) | (u8::from(all_int) << 1));
        put_varint(out, count as u64);
        out.extend_from_slice(&self.ints);
        for &(vs, ve) in &self.strings {
            out.push(1);
            put_varint(out, (ve - vs) as u64);
            out.extend_from_slice(&b[vs..ve]);
        }
        if !self.others.is_empty() {
            out.push(b'{');
            for (n, &(ks, ke, vs, ve)) in self.others.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                // Plain names need no escaping: quoting them is exact JSON.
                out.push(b'"');
                out.extend_from_slice(&b[ks..ke]);
                out.extend_from_slice(b"\":");
                minify_into(&text[vs..ve], out);
            }
            out.push(b'}');
        }
        Some(id)
    }
}

/// A cursor over the record's bytes.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// A string without escapes or control characters; its contents' range.
    fn plain_string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some((start, self.i - 1)),
                b'\\' | 0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// A JSON integer (no fraction, no exponent) followed by a delimiter:
    /// its text's range, and its value if that fits an `i64`.
    fn integer_text(&mut self) -> Option<(usize, usize, Option<i64>)> {
        let start = self.i;
        let neg = self.peek()? == b'-';
        if neg {
            self.i += 1;
        }
        let digits = self.i;
        let mut magnitude: u64 = 0;
        // Eight digits at a time while they last, then one at a time.
        while let Some((n, value)) = self.b.get(self.i..self.i + 8).map(eight_digits) {
            magnitude = magnitude
                .wrapping_mul(POWERS_OF_TEN[n as usize])
                .wrapping_add(value);
            self.i += n as usize;
            if n < 8 {
                break;
            }
        }
        while let Some(&c) = self.b.get(self.i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            // Exact for up to 19 digits; longer numbers are not kept.
            magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(d));
            self.i += 1;
        }
        let len = self.i - digits;
        if len == 0 || (len > 1 && self.b[digits] == b'0') {
            return None;
        }
        match self.peek()? {
            b' ' | b'\n' | b'\r' | b'\t' | b',' | b']' | b'}' => {}
            _ => return None,
        }
        let value = match (len <= 19, neg) {
            (false, _) => None,
            (true, true) => (magnitude <= 1 << 63).then(|| 0i64.wrapping_sub(magnitude as i64)),
            (true, false) => i64::try_from(magnitude).ok(),
        };
        Some((start, self.i, value))
    }

    /// A JSON integer that fits an `i64`.
    #[inline(always)]
    fn integer(&mut self) -> Option<i64> {
        // Item ids are nearly always short non-negative numbers: up to seven
        // digits and their delimiter in one eight-byte load. Near the end of
        // the text the load is padded with a byte that is neither a digit
        // nor a delimiter. Anything else takes the general scan.
        let mut padded = [b'x'; 8];
        let bytes = match self.b.get(self.i..self.i + 8) {
            Some(bytes) => bytes,
            None => {
                let rest = self.b.get(self.i..).unwrap_or_default();
                padded[..rest.len()].copy_from_slice(rest);
                &padded[..]
            }
        };
        let (n, value) = eight_digits(bytes);
        let n = n as usize;
        let no_leading_zero = n == 1 || (n > 1 && n < 8 && bytes[0] != b'0');
        if no_leading_zero && matches!(bytes[n], b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
        {
            self.i += n;
            return Some(value as i64);
        }
        self.integer_text()?.2
    }
}

const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// [`put_varint`] without a branch per byte for values below 2²⁸ (item ids
/// nearly always are): all four candidate bytes are stored, then the length
/// set to the ones that count.
fn put_varint_short(out: &mut Vec<u8>, n: u64) {
    if n >= 1 << 28 {
        return put_varint(out, n);
    }
    let len = 1 + usize::from(n >= 1 << 7) + usize::from(n >= 1 << 14) + usize::from(n >= 1 << 21);
    let spread =
        (n & 0x7f) | ((n << 1) & 0x7f00) | ((n << 2) & 0x7f_0000) | ((n << 3) & 0x7f00_0000);
    // Continuation bits on every byte but the last.
    let more = 0x8080_8080u64 & ((1u64 << (8 * (len - 1))) - 1);
    let at = out.len();
    out.extend_from_slice(&((spread | more) as u32).to_le_bytes());
    out.truncate(at + len);
}

/// How many of the eight bytes `b` starts with are ASCII digits, and their
/// value, without a branch per digit (the classic SWAR reduction).
#[inline(always)]
fn eight_digits(b: &[u8]) -> (u32, u64) {
    let word = u64::from_le_bytes(b.try_into().expect("eight bytes"));
    let values = word.wrapping_sub(0x3030_3030_3030_3030);
    // A byte's top bit is set where it is below '0' or above '9'; bytes above
    // the first such one may be wrong, and are not used.
    let non_digits = (values | word.wrapping_add(0x4646_4646_4646_4646)) & 0x8080_8080_8080_8080;
    let n = non_digits.trailing_zeros() / 8;
    if n == 0 {
        return (0, 0);
    }
    // The digits to the top bytes, zeros (leading zero digits) below them.
    let mut v = values << (8 * (8 - n));
    // Pairs of digits, then of pairs, then of fours (the first digit is the
    // lowest byte, and the most significant).
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    v = (v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff;
    (n, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the reference parser makes of `text`.
    fn reference(
        text: &str,
        fields: &Fields,
        max: usize,
    ) -> Result<(String, Vec<u8>), RecordError> {
        let r = Record::parse(text, fields, max)?;
        let mut out = Vec::new();
        r.encode_into(&mut out);
        Ok((r.user_id.into_owned(), out))
    }

    fn encoded(text: &str, fields: &Fields, max: usize) -> Result<(String, Vec<u8>), RecordError> {
        let mut out = b"prefix".to_vec();
        let r = Encoder::new(fields, max).encode(text, &mut out);
        match r {
            Ok(id) => Ok((id.into_owned(), out[6..].to_vec())),
            Err(e) => {
                assert_eq!(out, b"prefix", "output left as it was on error");
                Err(e)
            }
        }
    }

    fn takes_fast_path(text: &str) -> bool {
        Encoder::new(&Fields::default(), 100)
            .fast(text, &mut Vec::new())
            .is_some()
    }

    #[test]
    fn common_records_take_the_fast_path_and_match_the_reference() {
        let f = Fields::default();
        for text in [
            r#"{"userId":1,"movieId":[2012,553,780]}"#,
            " {\"movieId\" : [ -9223372036854775808 , 0, 9223372036854775807 ] ,\r\n \"userId\" : \"u-7\" } \n",
            r#"{"userId":-0,"movieId":[]}"#,
            r#"{"userId":12,"movieId":["a","b c"],"model":"als","scores":[0.5, 1e3],"meta":{"k": [true, null]}}"#,
            r#"{"userId":"café","movieId":["ü"]}"#,
        ] {
            assert!(takes_fast_path(text), "{text}");
            assert_eq!(encoded(text, &f, 100), reference(text, &f, 100), "{text}");
        }
    }

    #[test]
    fn unusual_or_bad_records_fall_back_and_match_the_reference() {
        let f = Fields::default();
        for text in [
            r#"{"userId":"a\"b","movieId":[1]}"#,
            r#"{"userId":12,"movieId":["a","b c",3]}"#,
            r#"{"userId":12,"movieId":[3,"a"]}"#,
            r#"{"userId":1,"movieId":["\u00e9"]}"#,
            r#"{"user\u0049d":1,"movieId":[1]}"#,
            r#"{"userId":1,"movieId":[9223372036854775808]}"#,
            r#"{"userId":1,"movieId":[-9223372036854775809]}"#,
            r#"{"userId":1,"movieId":[01]}"#,
            r#"{"userId":1.0,"movieId":[1]}"#,
            r#"{"userId":1,"movieId":[1.5]}"#,
            r#"{"userId":1,"movieId":[1,]}"#,
            r#"{"userId":1,"movieId":[1]} x"#,
            r#"{"userId":1,"movieId":[1],}"#,
            r#"{"userId":1,"userId":2,"movieId":[1]}"#,
            r#"{"userId":1,"movieId":[1],"a":1,"a":2}"#,
            r#"{"userId":1,"movieId":[1],"a":[1,}"#,
            r#"{"userId":"","movieId":[1]}"#,
            r#"{"userId":1,"movieId":[1,2,3,4]}"#,
            r#"{"userId":1}"#,
            r#"{"movieId":[1]}"#,
            r#"{}"#,
            "",
            "[1]",
            "{\"userId\":\"a\tb\",\"movieId\":[1]}",
        ] {
            assert!(!takes_fast_path(text) || text.contains("1,2,3,4"), "{text}");
            assert_eq!(encoded(text, &f, 3), reference(text, &f, 3), "{text}");
        }
    }

    /// Records built from pieces that exercise both paths, with whitespace,
    /// field order, escapes and other fields varied.
    fn record() -> impl Strategy<Value = String> {
        let ws = prop::sample::select(vec!["", " ", "\n", " \t", "\r\n "]);
        let id = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-z0-9 \\-]{0,6}".prop_map(|s| format!("\"{s}\"")),
            Just("\"a\\\"b\"".to_string()),
            Just("1.5".to_string()),
            Just("null".to_string()),
        ];
        let item = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-zé]{0,3}".prop_map(|s| format!("\"{s}\"")),
            Just("\"x\\u0041\"".to_string()),
            Just("18446744073709551616".to_string()),
            Just("2.5".to_string()),
        ];
        let other = prop_oneof![
            Just(r#""model":"als""#.to_string()),
            Just(r#""scores":[0.1, 2e-3]"#.to_string()),
            Just(r#""nested":{"a":[1,{"b":null}]}"#.to_string()),
            Just(r#""userId":7"#.to_string()),
            Just(r#""flag":true"#.to_string()),
        ];
        (
            id,
            prop::collection::vec(item, 0..6),
            prop::collection::vec(other, 0..3),
            any::<bool>(),
            ws.clone(),
            ws,
        )
            .prop_map(|(id, items, others, items_first, w1, w2)| {
                let user = format!("\"userId\"{w1}:{w2}{id}");
                let list = format!(
                    "\"movieId\":{w1}[{w2}{}{w1}]",
                    items.join(&format!("{w1},{w2}"))
                );
                let mut parts = if items_first {
                    vec![list, user]
                } else {
                    vec![user, list]
                };
                parts.extend(others);
                format!("{w2}{{{w1}{}{w2}}}{w1}", parts.join(&format!("{w1},{w2}")))
            })
    }

    #[test]
    fn eight_digits_reads_the_leading_digits() {
        let cases: [(&[u8], (u32, u64)); 6] = [
            (b"12345678", (8, 12345678)),
            (b"7300,799", (4, 7300)),
            (b"0]......", (1, 0)),
            (b",1234567", (0, 0)),
            (b"99999999", (8, 99999999)),
            (b"1/:9\xc0...", (1, 1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(eight_digits(&bytes[..8]), want, "{bytes:?}");
        }
        for n in [
            0u64, 1, 9, 10, 42, 100, 12_345, 9_999_999, 10_000_000, 87_654_321,
        ] {
            let mut text = n.to_string().into_bytes();
            text.resize(8, b'}');
            assert_eq!(eight_digits(&text), (n.to_string().len().min(8) as u32, n));
        }
    }

    proptest! {
        #[test]
        fn short_varints_match_the_plain_encoding(n in prop_oneof![0u64..1 << 30, any::<u64>()]) {
            let (mut a, mut b) = (vec![9], vec![9]);
            put_varint(&mut a, n);
            put_varint_short(&mut b, n);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn the_encoder_agrees_with_the_reference_parser(text in record()) {
            let f = Fields::default();
            prop_assert_eq!(encoded(&text, &f, 4), reference(&text, &f, 4));
        }

        #[test]
        fn damaged_records_give_the_reference_error(text in record(), at in any::<prop::sample::Index>(), byte in prop::sample::select(b"{}[]\",:0a\\ -".to_vec()), delete in any::<bool>()) {
            let mut bytes = text.into_bytes();
            let i = at.index(bytes.len() + 1);
            if delete && i < bytes.len() { bytes.remove(i); } else { bytes.insert(i, byte); }
            if let Ok(text) = String::from_utf8(bytes) {
                let f = Fields::default();
                prop_assert_eq!(encoded(&text, &f, 4), reference(&text, &f, 4));
            }
        }
    }
}
