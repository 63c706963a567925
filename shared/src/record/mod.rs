// Over 500 lines: one codec whose parse, validate, encode and decode must stay in step (the single-pass encoder is fast.rs).
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
//! JSON, which keeps buckets in Redis's compact listpack encoding. Flag bits
//! 2 and 3 mark the compact forms [`compact`] writes after encoding: numeric
//! arrays among the other fields, and item ids of one prefix and a number.
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

mod compact;
mod fast;
pub mod json;

pub use compact::compact;

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
    /// The record's other fields, as a JSON object: the stored text, or
    /// printed from numbers stored in binary ([`compact`]).
    pub other: Option<Cow<'a, RawValue>>,
}

/// A stored value that cannot be decoded (corrupt or of an unknown codec).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stored record does not decode: {0}")]
pub struct DecodeError(pub(crate) &'static str);

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
                    other: j.other.map(Cow::Borrowed),
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
                if flags & compact::FLAG_NUMBERED_ITEMS != 0 {
                    let numbered = compact::numbered_items(bytes, &mut at, n as u64)?;
                    items.extend(numbered.into_iter().map(|s| ItemId::Str(Cow::Owned(s))));
                }
                let n = if flags & compact::FLAG_NUMBERED_ITEMS != 0 {
                    0
                } else {
                    n
                };
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
                let other = if at >= bytes.len() {
                    None
                } else if flags & compact::FLAG_BINARY_FIELDS != 0 {
                    let text = compact::render_fields(&bytes[at..])?;
                    Some(Cow::Owned(
                        RawValue::from_string(text).map_err(|_| DecodeError("other fields"))?,
                    ))
                } else {
                    Some(Cow::Borrowed(
                        serde_json::from_slice::<&RawValue>(&bytes[at..])
                            .map_err(|_| DecodeError("other fields"))?,
                    ))
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
    pub fn other_fields(&self) -> Result<Vec<(Cow<'_, str>, &RawValue)>, DecodeError> {
        match &self.other {
            Some(raw) => serde_json::from_str::<Fieldset<'_>>(raw.get())
                .map(|f| f.0)
                .map_err(|_| DecodeError("other fields")),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests;
