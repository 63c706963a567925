//! One user record: parse, validate, encode for Redis, decode for serving.
//!
//! A batch record is a JSON object with a user-id field, a ranked item-list
//! field (names configurable) and any other fields, which are kept. Parsing
//! borrows from the input: values are [`RawValue`] slices, so ingest copies
//! only what it writes. User ids are integers or strings; their canonical
//! string form is the hash field in Redis, so the integer `1` and the string
//! `"1"` are the same user (a URL cannot tell them apart either).
//!
//! Stored value, codec 2 (written): one byte `0x02`; a flags byte (bit 0: the
//! user id is an integer, bit 1: every item is an integer); the item count as
//! a LEB128 varint; the items (all-integer: zig-zag varints; otherwise each
//! item a tag byte, 0 = integer then its zig-zag varint, 1 = string then its
//! length varint and UTF-8 bytes); then, if the record has other fields, the
//! minified JSON object of them. The user id is not stored: it is the hash
//! field. Twenty integer items take about 50 bytes instead of about 120 as
//! JSON, which keeps buckets in Redis's compact listpack encoding.
//!
//! Ingest encodes through [`Encoder`], a single-pass scan that handles the
//! common shapes itself and hands the rest to [`Record::parse`].
//!
//! Codec 1 (still read): compact JSON `{"u":<id>,"i":[items],"x":{other}}`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use json::InString;

mod fast;
pub mod json;

/// Longest user id accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;

/// A user id that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id must not be empty")]
    Empty,
    #[error("user id is longer than {MAX_USER_ID_LEN} bytes")]
    TooLong,
    #[error("user id contains a control character")]
    Control,
}

/// Checks a user id (its canonical string form).
pub fn validate_user_id(id: &str) -> Result<(), UserIdError> {
    if id.is_empty() {
        Err(UserIdError::Empty)
    } else if id.len() > MAX_USER_ID_LEN {
        Err(UserIdError::TooLong)
    } else if id.chars().any(char::is_control) {
        Err(UserIdError::Control)
    } else {
        Ok(())
    }
}

/// Field names of batch records.
#[derive(Clone, Debug)]
pub struct Fields {
    pub user: String,
    pub items: String,
    /// Joins items in one CSV column.
    pub csv_item_separator: u8,
    /// A record's nested prediction (`FS_OUTPUT_FIELD`); empty: none.
    pub output: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            user: "userId".into(),
            items: "movieId".into(),
            csv_item_separator: b'|',
            output: "SageMakerOutput".into(),
        }
    }
}

pub use fast::Encoder;

/// Why a record cannot be ingested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a JSON object: {0}")]
    NotAnObject(String),
    #[error("missing user id field `{0}`")]
    MissingUserId(String),
    #[error("user id field `{0}` must be an integer or a string")]
    BadUserIdType(String),
    #[error("user id: {0}")]
    BadUserId(UserIdError),
    #[error("missing item list field `{0}`")]
    MissingItems(String),
    #[error("item list field `{0}` must be an array of integers or strings")]
    BadItems(String),
    #[error("field `{0}` appears twice")]
    DuplicateField(String),
    #[error("{count} items, more than the {max} allowed")]
    TooManyItems { count: usize, max: usize },
    #[error("record is longer than {0} bytes")]
    TooLarge(u64),
    #[error("record is not valid UTF-8")]
    NotUtf8,
    #[error("user id {0:?} appears more than once")]
    DuplicateUser(String),
    #[error("field `{0}` is nested deeper than {MAX_NESTING} levels")]
    TooDeep(String),
    #[error("CSV row: {0}")]
    Csv(String),
    #[error("Parquet row: {0}")]
    Parquet(String),
    #[error("field `{0}` must be true or false")]
    BadTombstone(String),
}

/// Deepest nesting accepted in a record's other fields.
pub const MAX_NESTING: usize = 32;

/// A parsed record, borrowing from the batch bytes.
#[derive(Debug)]
pub struct Record<'a> {
    /// Canonical user id (the Redis hash field).
    pub user_id: Cow<'a, str>,
    /// The user id as written (a JSON number or string).
    pub user_raw: &'a RawValue,
    pub items: Vec<ItemId<'a>>,
    pub other: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// An item id: an integer or a string (and in JSON answers, as such).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum ItemId<'a> {
    Int(i64),
    Str(Cow<'a, str>),
}

impl ItemId<'_> {
    /// The item as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ItemId::Int(n) => serde_json::Value::from(*n),
            ItemId::Str(s) => serde_json::Value::from(s.as_ref()),
        }
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

struct Fieldset<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fieldset<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fieldset<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(4);
                while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Fieldset(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Record<'a> {
    /// Parses one record from its JSON text, allowing at most `max_items` items.
    pub fn parse(text: &'a str, fields: &Fields, max_items: usize) -> Result<Self, RecordError> {
        let Fieldset(all) = serde_json::from_str::<Fieldset<'a>>(text)
            .map_err(|e| RecordError::NotAnObject(short(&e)))?;
        let mut user: Option<&'a RawValue> = None;
        let mut items: Option<&'a RawValue> = None;
        let mut other = Vec::new();
        for (k, v) in all {
            let slot = if k == fields.user.as_str() {
                &mut user
            } else if k == fields.items.as_str() {
                &mut items
            } else {
                if other.iter().any(|(o, _): &(Cow<str>, _)| o == &k) {
                    return Err(RecordError::DuplicateField(k.into_owned()));
                }
                if nesting(v.get()) > MAX_NESTING {
                    return Err(RecordError::TooDeep(k.into_owned()));
                }
                other.push((k, v));
                continue;
            };
            if slot.replace(v).is_some() {
                return Err(RecordError::DuplicateField(k.into_owned()));
            }
        }
        let user_raw = user.ok_or_else(|| RecordError::MissingUserId(fields.user.clone()))?;
        let user_id = canonical_user_id(user_raw)
            .ok_or_else(|| RecordError::BadUserIdType(fields.user.clone()))?;
        validate_user_id(&user_id).map_err(RecordError::BadUserId)?;
        let items = items.ok_or_else(|| RecordError::MissingItems(fields.items.clone()))?;
        let items =
            parse_items(items).ok_or_else(|| RecordError::BadItems(fields.items.clone()))?;
        if items.len() > max_items {
            return Err(RecordError::TooManyItems {
                count: items.len(),
                max: max_items,
            });
        }
        Ok(Record {
            user_id,
            user_raw,
            items,
            other,
        })
    }

    /// Appends the stored form (codec 2) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let user_is_int = !self.user_raw.get().starts_with('"');
        encode_head(out, user_is_int, &self.items);
        if !self.other.is_empty() {
            out.push(b'{');
            for (n, (k, v)) in self.other.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                // serde_json escapes the name exactly as JSON requires.
                out.extend_from_slice(
                    serde_json::to_string(k.as_ref())
                        .unwrap_or_default()
                        .as_bytes(),
                );
                out.push(b':');
                minify_into(v.get(), out);
            }
            out.push(b'}');
        }
    }
}

/// Appends a stored value's head (codec 2: the codec, the flags, the items)
/// to `out`; the record's other fields, as a minified JSON object, follow
/// when it has any. [`Record::encode_into`] and the columnar readers share it.
pub fn encode_head(out: &mut Vec<u8>, user_is_int: bool, items: &[ItemId<'_>]) {
    let all_int = items.iter().all(|i| matches!(i, ItemId::Int(_)));
    out.push(CODEC_BINARY);
    out.push(u8::from(user_is_int) | (u8::from(all_int) << 1));
    put_varint(out, items.len() as u64);
    for item in items {
        match item {
            ItemId::Int(n) if all_int => put_varint(out, zigzag(*n)),
            ItemId::Int(n) => {
                out.push(0);
                put_varint(out, zigzag(*n));
            }
            ItemId::Str(s) => {
                out.push(1);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// [`encode_head`] for a list of integer items only.
pub fn encode_head_ints(
    out: &mut Vec<u8>,
    user_is_int: bool,
    items: impl ExactSizeIterator<Item = i64>,
) {
    out.push(CODEC_BINARY);
    out.push(u8::from(user_is_int) | (1 << 1));
    put_varint(out, items.len() as u64);
    for n in items {
        put_varint(out, zigzag(n));
    }
}

const CODEC_BINARY: u8 = 0x02;

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Items as ids, if every one is an integer (fitting 64 bits) or a string.
fn parse_items(raw: &RawValue) -> Option<Vec<ItemId<'_>>> {
    let items = serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?;
    items
        .into_iter()
        .map(|i| {
            let t = i.get();
            if t.starts_with('"') {
                serde_json::from_str::<Cow<str>>(t).ok().map(|c| match c {
                    Cow::Borrowed(_) => ItemId::Str(Cow::Borrowed(&t[1..t.len() - 1])),
                    Cow::Owned(s) => ItemId::Str(Cow::Owned(s)),
                })
            } else if is_integer(t) {
                t.parse::<i64>().ok().map(ItemId::Int)
            } else {
                None
            }
        })
        .collect()
}

fn short(e: &serde_json::Error) -> String {
    let s = e.to_string();
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary(200)])
    } else {
        s
    }
}

/// The canonical string of a user id: integers in decimal, strings as they are.
fn canonical_user_id(raw: &RawValue) -> Option<Cow<'_, str>> {
    let t = raw.get();
    match t.as_bytes().first()? {
        b'"' => serde_json::from_str::<Cow<str>>(t).ok().map(|c| match c {
            // from_str on a &str borrows only for unescaped strings: keep the slice.
            Cow::Borrowed(_) => Cow::Borrowed(&t[1..t.len() - 1]),
            Cow::Owned(s) => Cow::Owned(s),
        }),
        b'-' | b'0'..=b'9' if is_integer(t) => Some(Cow::Borrowed(t)),
        _ => None,
    }
}

fn is_integer(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// How deeply arrays and objects nest in JSON text.
fn nesting(json: &str) -> usize {
    let bytes = json.as_bytes();
    let (mut depth, mut max, mut string, mut i) = (0usize, 0usize, None::<InString>, 0);
    while i < bytes.len() {
        if let Some(s) = string.as_mut() {
            i += s.plain_run(&bytes[i..]);
            let Some(&b) = bytes.get(i) else { break };
            i += 1;
            if s.ends_at(b) {
                string = None;
            }
            continue;
        }
        match bytes[i] {
            b'"' => string = Some(InString::default()),
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// Copies JSON text to `out` without the whitespace between tokens.
pub fn minify_into(json: &str, out: &mut Vec<u8>) {
    let bytes = json.as_bytes();
    let (mut string, mut run_start, mut i) = (None::<InString>, 0, 0);
    while i < bytes.len() {
        if let Some(s) = string.as_mut() {
            i += s.plain_run(&bytes[i..]);
            let Some(&b) = bytes.get(i) else { break };
            i += 1;
            if s.ends_at(b) {
                string = None;
            }
            continue;
        }
        match bytes[i] {
            b'"' => string = Some(InString::default()),
            b' ' | b'\n' | b'\r' | b'\t' => {
                out.extend_from_slice(&bytes[run_start..i]);
                run_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// A stored record, decoded for serving.
#[derive(Debug, Clone)]
pub struct Stored<'a> {
    /// Whether the user id was an integer in the batch (so JSON answers echo it as one).
    pub user_is_int: bool,
    pub items: Vec<ItemId<'a>>,
    /// The record's other fields, as a JSON object.
    pub other: Option<&'a RawValue>,
}

/// A stored value that cannot be decoded (corrupt or of an unknown codec).
#[derive(Debug, thiserror::Error)]
#[error("stored record does not decode: {0}")]
pub struct DecodeError(&'static str);

#[derive(Deserialize)]
struct CodecJson<'a> {
    #[serde(borrow, rename = "u")]
    user: &'a RawValue,
    #[serde(borrow, rename = "i")]
    items: &'a RawValue,
    #[serde(borrow, rename = "x", default)]
    other: Option<&'a RawValue>,
}

impl<'a> Stored<'a> {
    /// Decodes a value written by [`Record::encode_into`] (or by codec 1).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(b'{') => {
                let j: CodecJson<'a> =
                    serde_json::from_slice(bytes).map_err(|_| DecodeError("codec 1 JSON"))?;
                Ok(Stored {
                    user_is_int: !j.user.get().starts_with('"'),
                    items: parse_items(j.items).ok_or(DecodeError("codec 1 items"))?,
                    other: j.other,
                })
            }
            Some(&CODEC_BINARY) => {
                let flags = *bytes.get(1).ok_or(DecodeError("no flags"))?;
                let mut at = 2;
                let n = get_varint(bytes, &mut at).ok_or(DecodeError("no item count"))? as usize;
                if n > bytes.len() {
                    return Err(DecodeError("item count past the value"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let string = if flags & 2 != 0 {
                        false
                    } else {
                        let tag = *bytes.get(at).ok_or(DecodeError("no item tag"))?;
                        at += 1;
                        tag == 1
                    };
                    let v = get_varint(bytes, &mut at).ok_or(DecodeError("truncated item"))?;
                    if string {
                        let end = at
                            .checked_add(v as usize)
                            .filter(|e| *e <= bytes.len())
                            .ok_or(DecodeError("truncated string"))?;
                        let s = std::str::from_utf8(&bytes[at..end])
                            .map_err(|_| DecodeError("item not UTF-8"))?;
                        items.push(ItemId::Str(Cow::Borrowed(s)));
                        at = end;
                    } else {
                        items.push(ItemId::Int(unzigzag(v)));
                    }
                }
                let other = if at < bytes.len() {
                    Some(
                        serde_json::from_slice::<&RawValue>(&bytes[at..])
                            .map_err(|_| DecodeError("other fields"))?,
                    )
                } else {
                    None
                };
                Ok(Stored {
                    user_is_int: flags & 1 != 0,
                    items,
                    other,
                })
            }
            _ => Err(DecodeError("unknown codec")),
        }
    }

    /// The record's other fields, in their stored order, each value its
    /// JSON text as stored.
    pub fn other_fields(&self) -> Result<Vec<(Cow<'a, str>, &'a RawValue)>, DecodeError> {
        match self.other {
            Some(raw) => serde_json::from_str::<Fieldset<'a>>(raw.get())
                .map(|f| f.0)
                .map_err(|_| DecodeError("other fields")),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_bounded_and_printable() {
        assert_eq!(validate_user_id(""), Err(UserIdError::Empty));
        assert_eq!(
            validate_user_id(&"1".repeat(257)),
            Err(UserIdError::TooLong)
        );
        assert_eq!(validate_user_id("a\nb"), Err(UserIdError::Control));
        for ok in ["1", "user {x}:y", "ユーザー", "*"] {
            assert!(validate_user_id(ok).is_ok());
        }
    }

    fn fields() -> Fields {
        Fields::default()
    }

    #[test]
    fn integer_and_string_ids_parse() {
        let r = Record::parse(
            r#"{"userId": 1, "movieId": [2012, 553, 780]}"#,
            &fields(),
            100,
        )
        .unwrap();
        assert_eq!(r.user_id, "1");
        let r = Record::parse(
            r#"{"movieId": ["a", "b"], "userId": "u-7"}"#,
            &fields(),
            100,
        )
        .unwrap();
        assert_eq!(r.user_id, "u-7");
        let r = Record::parse(r#"{"userId": "caf\u00e9", "movieId": []}"#, &fields(), 100).unwrap();
        assert_eq!(r.user_id, "café");
    }

    #[test]
    fn stored_form_is_compact_and_keeps_other_fields() {
        let bytes = encode_bytes(
            "{\n  \"userId\" : 1,\n  \"movieId\": [ 2012,\n 553 ],\n  \"scores\": [0.9, 0.5] }",
        );
        // codec, flags (int user, int items), count, 2012 and 553 as zig-zag varints, other fields.
        assert_eq!(&bytes[..8], &[0x02, 0b11, 2, 0xb8, 0x1f, 0xd2, 0x08, b'{']);
        assert_eq!(&bytes[7..], br#"{"scores":[0.9,0.5]}"#);
        let twenty: Vec<String> = (0..20).map(|i| (i * 2417 % 50_000).to_string()).collect();
        let json = format!(
            r#"{{"userId": 123456, "movieId": [{}]}}"#,
            twenty.join(", ")
        );
        assert!(
            encode_bytes(&json).len() <= 3 + 20 * 3,
            "twenty items in {} bytes",
            encode_bytes(&json).len()
        );
    }

    fn encode_bytes(text: &str) -> Vec<u8> {
        let r = Record::parse(text, &fields(), 100).unwrap();
        let mut out = Vec::new();
        r.encode_into(&mut out);
        out
    }

    #[test]
    fn stored_form_round_trips() {
        for text in [
            r#"{"userId":3,"movieId":[1,"two",-7,9223372036854775807],"model":"als"}"#,
            r#"{"userId":"u 1","movieId":[]}"#,
            r#"{"userId":"x","movieId":["caf\u00e9","a\"b"]}"#,
            r#"{"userId":-4,"movieId":[-9223372036854775808, 0, 1]}"#,
        ] {
            let bytes = encode_bytes(text);
            let d = Stored::decode(&bytes).unwrap();
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let items: Vec<serde_json::Value> = d.items.iter().map(ItemId::to_json).collect();
            assert_eq!(serde_json::Value::from(items), v["movieId"], "{text}");
            assert_eq!(d.user_is_int, v["userId"].is_number());
        }
        let bytes = encode_bytes(r#"{"userId":3,"movieId":[1],"model":"als"}"#);
        let d = Stored::decode(&bytes).unwrap();
        assert_eq!(d.other.unwrap().get(), r#"{"model":"als"}"#);
    }

    #[test]
    fn codec_1_values_still_decode_and_garbage_is_an_error() {
        let d = Stored::decode(br#"{"u":"a","i":[10,"b"],"x":{"m":1}}"#).unwrap();
        assert!(!d.user_is_int);
        assert_eq!(d.items, vec![ItemId::Int(10), ItemId::Str("b".into())]);
        for bad in [
            &b""[..],
            b"\x02",
            b"\x02\x03\xff",
            b"\x02\x02\x05\x01",
            b"\x02\x00\x01\x01\x09ab",
            b"\x07zz",
            b"{not json",
        ] {
            assert!(Stored::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn custom_field_names_are_honoured() {
        let f = Fields {
            user: "uid".into(),
            items: "recs".into(),
            ..Fields::default()
        };
        let r = Record::parse(r#"{"uid": 5, "recs": [1], "userId": "kept"}"#, &f, 100).unwrap();
        assert_eq!(r.user_id, "5");
        assert_eq!(r.other.len(), 1);
    }

    #[test]
    fn malformed_records_are_rejected_with_a_reason() {
        let f = fields();
        type IsExpected = fn(&RecordError) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("[1,2]", |e| matches!(e, RecordError::NotAnObject(_))),
            ("{\"userId\": 1", |e| {
                matches!(e, RecordError::NotAnObject(_))
            }),
            (r#"{"movieId": [1]}"#, |e| {
                matches!(e, RecordError::MissingUserId(_))
            }),
            (r#"{"userId": null, "movieId": [1]}"#, |e| {
                matches!(e, RecordError::BadUserIdType(_))
            }),
            (r#"{"userId": 1.5, "movieId": [1]}"#, |e| {
                matches!(e, RecordError::BadUserIdType(_))
            }),
            (r#"{"userId": 1e3, "movieId": [1]}"#, |e| {
                matches!(e, RecordError::BadUserIdType(_))
            }),
            (r#"{"userId": {"a":1}, "movieId": [1]}"#, |e| {
                matches!(e, RecordError::BadUserIdType(_))
            }),
            (r#"{"userId": "", "movieId": [1]}"#, |e| {
                matches!(e, RecordError::BadUserId(UserIdError::Empty))
            }),
            (r#"{"userId": "a\nb", "movieId": [1]}"#, |e| {
                matches!(e, RecordError::BadUserId(_))
            }),
            (r#"{"userId": 1}"#, |e| {
                matches!(e, RecordError::MissingItems(_))
            }),
            (r#"{"userId": 1, "movieId": 5}"#, |e| {
                matches!(e, RecordError::BadItems(_))
            }),
            (r#"{"userId": 1, "movieId": [1.5]}"#, |e| {
                matches!(e, RecordError::BadItems(_))
            }),
            (r#"{"userId": 1, "movieId": [null]}"#, |e| {
                matches!(e, RecordError::BadItems(_))
            }),
            (r#"{"userId": 1, "movieId": [99999999999999999999]}"#, |e| {
                matches!(e, RecordError::BadItems(_))
            }),
            (r#"{"userId": 1, "userId": 2, "movieId": [1]}"#, |e| {
                matches!(e, RecordError::DuplicateField(_))
            }),
            (r#"{"userId": 1, "movieId": [1, 2, 3, 4]}"#, |e| {
                matches!(e, RecordError::TooManyItems { count: 4, max: 3 })
            }),
        ];
        for (text, check) in cases {
            let err = Record::parse(text, &f, 3).unwrap_err();
            assert!(check(&err), "{text}: {err:?}");
        }
    }

    #[test]
    fn deep_nesting_in_other_fields_is_rejected() {
        let nested = |n: usize| {
            format!(
                r#"{{"userId": 1, "movieId": [], "x": {}"a"{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(Record::parse(&nested(MAX_NESTING), &fields(), 10).is_ok());
        assert!(matches!(
            Record::parse(&nested(MAX_NESTING + 1), &fields(), 10),
            Err(RecordError::TooDeep(_))
        ));
        // Brackets inside strings do not count.
        assert!(Record::parse(
            &format!(
                r#"{{"userId": 1, "movieId": [], "x": "{}"}}"#,
                "[".repeat(100)
            ),
            &fields(),
            10
        )
        .is_ok());
    }

    #[test]
    fn minify_keeps_whitespace_inside_strings() {
        let mut out = Vec::new();
        minify_into(" { \"a b\" : [ 1 , \"c \\\" d\" ] } ", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a b":[1,"c \" d"]}"#);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            // Quotes, backslashes, whitespace, brackets and control characters inside strings.
            "[a-z \\t\\n\"\\\\\\[\\]{}:,\u{1}é]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z \"\\\\]{0,4}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest::proptest! {
        #[test]
        fn minify_and_nesting_read_strings_as_json_does(v in json_value()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let mut out = Vec::new();
            minify_into(&pretty, &mut out);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
            proptest::prop_assert_eq!(nesting(&pretty), depth(&v));
        }
    }
}
