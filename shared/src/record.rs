//! One user record: parse, validate, encode for Redis, decode for serving.
//!
//! A batch record is a JSON object with a user-id field, a ranked item-list
//! field (names configurable) and any other fields, which are kept. Parsing
//! borrows from the input: values are [`RawValue`] slices, so ingest copies
//! only what it writes. User ids are integers or strings; their canonical
//! string form is the hash field in Redis, so the integer `1` and the string
//! `"1"` are the same user (a URL cannot tell them apart either).
//!
//! Stored value (codec 1): compact JSON `{"u":<id>,"i":[items],"x":{other}}`,
//! with `x` omitted when there are no other fields.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::Fields;
use crate::keys::{validate_user_id, KeyError};

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
    BadUserId(KeyError),
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
    pub items: &'a RawValue,
    pub other: Vec<(Cow<'a, str>, &'a RawValue)>,
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
        let Fieldset(all) = serde_json::from_str::<Fieldset<'a>>(text).map_err(|e| RecordError::NotAnObject(short(&e)))?;
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
        let user_id = canonical_user_id(user_raw).ok_or_else(|| RecordError::BadUserIdType(fields.user.clone()))?;
        validate_user_id(&user_id).map_err(RecordError::BadUserId)?;
        let items = items.ok_or_else(|| RecordError::MissingItems(fields.items.clone()))?;
        let count = item_count(items).ok_or_else(|| RecordError::BadItems(fields.items.clone()))?;
        if count > max_items {
            return Err(RecordError::TooManyItems { count, max: max_items });
        }
        Ok(Record { user_id, user_raw, items, other })
    }

    /// Appends the stored form (codec 1) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"u\":");
        minify_into(self.user_raw.get(), out);
        out.extend_from_slice(b",\"i\":");
        minify_into(self.items.get(), out);
        if !self.other.is_empty() {
            out.extend_from_slice(b",\"x\":{");
            for (n, (k, v)) in self.other.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                // serde_json escapes the name exactly as JSON requires.
                out.extend_from_slice(serde_json::to_string(k.as_ref()).unwrap_or_default().as_bytes());
                out.push(b':');
                minify_into(v.get(), out);
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
}

fn short(e: &serde_json::Error) -> String {
    let s = e.to_string();
    if s.len() > 200 { format!("{}…", &s[..s.floor_char_boundary(200)]) } else { s }
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
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'))
}

/// The number of items, if every item is an integer or a string.
fn item_count(raw: &RawValue) -> Option<usize> {
    let items = serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?;
    items
        .iter()
        .all(|i| {
            let t = i.get();
            t.starts_with('"') || is_integer(t)
        })
        .then_some(items.len())
}

/// How deeply arrays and objects nest in JSON text.
fn nesting(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Copies JSON text to `out` without the whitespace between tokens.
pub fn minify_into(json: &str, out: &mut Vec<u8>) {
    let bytes = json.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.extend_from_slice(&bytes[run_start..i]);
            run_start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// A stored record, decoded for serving.
#[derive(Debug, Deserialize)]
pub struct Stored<'a> {
    #[serde(borrow, rename = "u")]
    pub user: &'a RawValue,
    #[serde(borrow, rename = "i")]
    pub items: Vec<&'a RawValue>,
    #[serde(borrow, rename = "x", default)]
    pub other: Option<&'a RawValue>,
}

impl<'a> Stored<'a> {
    /// Decodes a value written by [`Record::encode_into`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields::default()
    }

    fn encode(text: &str) -> String {
        let r = Record::parse(text, &fields(), 100).unwrap();
        let mut out = Vec::new();
        r.encode_into(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integer_and_string_ids_parse() {
        let r = Record::parse(r#"{"userId": 1, "movieId": [2012, 553, 780]}"#, &fields(), 100).unwrap();
        assert_eq!(r.user_id, "1");
        let r = Record::parse(r#"{"movieId": ["a", "b"], "userId": "u-7"}"#, &fields(), 100).unwrap();
        assert_eq!(r.user_id, "u-7");
        let r = Record::parse(r#"{"userId": "caf\u00e9", "movieId": []}"#, &fields(), 100).unwrap();
        assert_eq!(r.user_id, "café");
    }

    #[test]
    fn stored_form_is_compact_and_keeps_other_fields() {
        assert_eq!(
            encode("{\n  \"userId\" : 1,\n  \"movieId\": [ 2012,\n 553 ],\n  \"scores\": [0.9, 0.5] }"),
            r#"{"u":1,"i":[2012,553],"x":{"scores":[0.9,0.5]}}"#
        );
        assert_eq!(encode(r#"{"userId":"a b","movieId":["x y"]}"#), r#"{"u":"a b","i":["x y"]}"#);
    }

    #[test]
    fn stored_form_round_trips() {
        let s = encode(r#"{"userId":3,"movieId":[1,"two"],"model":"als"}"#);
        let d = Stored::decode(s.as_bytes()).unwrap();
        assert_eq!(d.user.get(), "3");
        assert_eq!(d.items.iter().map(|i| i.get()).collect::<Vec<_>>(), vec!["1", "\"two\""]);
        assert_eq!(d.other.unwrap().get(), r#"{"model":"als"}"#);
    }

    #[test]
    fn custom_field_names_are_honoured() {
        let f = Fields { user: "uid".into(), items: "recs".into() };
        let r = Record::parse(r#"{"uid": 5, "recs": [1], "userId": "kept"}"#, &f, 100).unwrap();
        assert_eq!(r.user_id, "5");
        assert_eq!(r.other.len(), 1);
    }

    #[test]
    fn malformed_records_are_rejected_with_a_reason() {
        let f = fields();
        let cases: &[(&str, fn(&RecordError) -> bool)] = &[
            ("[1,2]", |e| matches!(e, RecordError::NotAnObject(_))),
            ("{\"userId\": 1", |e| matches!(e, RecordError::NotAnObject(_))),
            (r#"{"movieId": [1]}"#, |e| matches!(e, RecordError::MissingUserId(_))),
            (r#"{"userId": null, "movieId": [1]}"#, |e| matches!(e, RecordError::BadUserIdType(_))),
            (r#"{"userId": 1.5, "movieId": [1]}"#, |e| matches!(e, RecordError::BadUserIdType(_))),
            (r#"{"userId": 1e3, "movieId": [1]}"#, |e| matches!(e, RecordError::BadUserIdType(_))),
            (r#"{"userId": {"a":1}, "movieId": [1]}"#, |e| matches!(e, RecordError::BadUserIdType(_))),
            (r#"{"userId": "", "movieId": [1]}"#, |e| matches!(e, RecordError::BadUserId(KeyError::EmptyUserId))),
            (r#"{"userId": "a\nb", "movieId": [1]}"#, |e| matches!(e, RecordError::BadUserId(_))),
            (r#"{"userId": 1}"#, |e| matches!(e, RecordError::MissingItems(_))),
            (r#"{"userId": 1, "movieId": 5}"#, |e| matches!(e, RecordError::BadItems(_))),
            (r#"{"userId": 1, "movieId": [1.5]}"#, |e| matches!(e, RecordError::BadItems(_))),
            (r#"{"userId": 1, "movieId": [null]}"#, |e| matches!(e, RecordError::BadItems(_))),
            (r#"{"userId": 1, "userId": 2, "movieId": [1]}"#, |e| matches!(e, RecordError::DuplicateField(_))),
            (r#"{"userId": 1, "movieId": [1, 2, 3, 4]}"#, |e| matches!(e, RecordError::TooManyItems { count: 4, max: 3 })),
        ];
        for (text, check) in cases {
            let err = Record::parse(text, &f, 3).unwrap_err();
            assert!(check(&err), "{text}: {err:?}");
        }
    }

    #[test]
    fn deep_nesting_in_other_fields_is_rejected() {
        let nested = |n: usize| format!(r#"{{"userId": 1, "movieId": [], "x": {}"a"{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(Record::parse(&nested(MAX_NESTING), &fields(), 10).is_ok());
        assert!(matches!(Record::parse(&nested(MAX_NESTING + 1), &fields(), 10), Err(RecordError::TooDeep(_))));
        // Brackets inside strings do not count.
        assert!(Record::parse(&format!(r#"{{"userId": 1, "movieId": [], "x": "{}"}}"#, "[".repeat(100)), &fields(), 10).is_ok());
    }

    #[test]
    fn minify_keeps_whitespace_inside_strings() {
        let mut out = Vec::new();
        minify_into(" { \"a b\" : [ 1 , \"c \\\" d\" ] } ", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a b":[1,"c \" d"]}"#);
    }
}
