//! What real batches carry, stored small: a score per item and SKU-like
//! item ids. Ingest writes a record's codec 2 value, then [`compact`]
//! rewrites two parts of it when that is exact:
//!
//! - **Numeric arrays among the other fields** (a score per item, a
//!   probability, a count) are kept as numbers instead of JSON text (about
//!   12 to 19 bytes a float as pandas and pyarrow write them): as `f32`
//!   when every number's text is the shortest that reads back as that `f32`
//!   (what a float32 column prints, `0.875`, `0.12345679`); as a plain
//!   decimal (one scale, a varint per number) when every text is a decimal
//!   without exponent or trailing zeros (pandas' ten digits, `0.1234567891`)
//!   and that is smaller than 8 bytes a number; as `f64` when every text is
//!   the shortest for an `f64` (Python's and pyarrow's float64); as integers
//!   for integers' plain text.
//! - **Item ids that are one prefix and a fixed-width number** (`B000123456`,
//!   `sku-0042`) are kept as the prefix once and a varint per item.
//!
//! Decoding prints them back the same way, so an answer is byte for byte
//! what the batch said; text that would not print back (`0.50`, `1e-07`,
//! mixed prefixes) stays as it was written.
//!
//! Stored form, codec 2 with flag bits:
//! - bit 3 ([`FLAG_NUMBERED_ITEMS`]): the items are the item count, the
//!   prefix (varint length, bytes), the width in digits (one byte), and a
//!   varint per item;
//! - bit 2 ([`FLAG_BINARY_FIELDS`]): after the items, the field count, then
//!   per field its name (varint length, the bytes between its quotes) and a
//!   tag: 0 JSON text (varint length, minified text), 1 `f32`s, 2 `f64`s
//!   (varint count, little-endian values), 3 integers (varint count,
//!   zig-zag varints), 4 decimals (varint count, varint fraction digits,
//!   zig-zag varints of the numbers times ten to those digits).
//!
//! Each is written only when it packs; otherwise the value stays as codec 2
//! always wrote it.

use serde_json::value::RawValue;

use super::{get_varint, put_varint, unzigzag, zigzag, DecodeError, Fieldset, CODEC_BINARY};

/// Flag bit: the other fields are in the binary form above.
pub(super) const FLAG_BINARY_FIELDS: u8 = 4;
/// Flag bit: the items are one prefix and fixed-width numbers.
pub(super) const FLAG_NUMBERED_ITEMS: u8 = 8;

/// Digits of a numbered item id: at most what a `u64` holds.
const MAX_ITEM_DIGITS: usize = 18;

const TAG_JSON: u8 = 0;
const TAG_F32: u8 = 1;
const TAG_F64: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_DECIMAL: u8 = 4;

/// Fraction digits a decimal array may have (10^18 fits an `i64`).
const MAX_FRACTION_DIGITS: u32 = 17;

/// Where a codec 2 value's other fields start (its length when it has
/// none); `None` for another codec or a value that does not decode.
pub(super) fn fields_start(value: &[u8]) -> Option<usize> {
    if value.first() != Some(&CODEC_BINARY) {
        return None;
    }
    let flags = *value.get(1)?;
    let mut at = 2;
    let n = get_varint(value, &mut at)?;
    if flags & FLAG_NUMBERED_ITEMS != 0 {
        let prefix = get_varint(value, &mut at)?;
        at = at.checked_add(usize::try_from(prefix).ok()?)? + 1;
        for _ in 0..n {
            get_varint(value, &mut at)?;
        }
        return (at <= value.len()).then_some(at);
    }
    for _ in 0..n {
        let string = flags & 2 == 0 && {
            at += 1;
            *value.get(at - 1)? == 1
        };
        let v = get_varint(value, &mut at)?;
        if string {
            at = at.checked_add(usize::try_from(v).ok()?)?;
        }
    }
    (at <= value.len()).then_some(at)
}

/// Rewrites the stored value at `buf[start..]` (codec 2, just written by
/// ingest) into its compact form where that is exact: numbered item ids,
/// numeric fields. Leaves it as it is otherwise.
pub fn compact(buf: &mut Vec<u8>, start: usize) {
    compact_items(buf, start);
    compact_fields(buf, start);
}

/// Item ids that are all one prefix and a number of one width.
fn compact_items(buf: &mut Vec<u8>, start: usize) {
    let value = &buf[start..];
    if value.first() != Some(&CODEC_BINARY) || value.len() < 3 {
        return;
    }
    let flags = value[1];
    if flags & (2 | FLAG_NUMBERED_ITEMS | FLAG_BINARY_FIELDS) != 0 {
        return;
    }
    let mut at = 2;
    let Some(n) = get_varint(value, &mut at) else {
        return;
    };
    if n == 0 {
        return;
    }
    let mut numbers = Vec::with_capacity(n as usize);
    let mut shape: Option<(&[u8], usize)> = None;
    for _ in 0..n {
        if value.get(at) != Some(&1) {
            return;
        }
        at += 1;
        let Some(len) = get_varint(value, &mut at) else {
            return;
        };
        let Some(item) = usize::try_from(len)
            .ok()
            .and_then(|l| value.get(at..at.checked_add(l)?))
        else {
            return;
        };
        at += item.len();
        let digits = item.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > MAX_ITEM_DIGITS {
            return;
        }
        let (prefix, number) = item.split_at(item.len() - digits);
        match shape {
            None => shape = Some((prefix, digits)),
            Some(s) if s == (prefix, digits) => {}
            Some(_) => return,
        }
        // ASCII digits, at most 18 of them: always a u64.
        let text = std::str::from_utf8(number).expect("ASCII digits");
        numbers.push(text.parse::<u64>().expect("at most 18 digits"));
    }
    let Some((prefix, width)) = shape else {
        return;
    };
    let mut items = Vec::with_capacity(value.len());
    put_varint(&mut items, n);
    put_varint(&mut items, prefix.len() as u64);
    items.extend_from_slice(prefix);
    items.push(width as u8);
    for &v in &numbers {
        put_varint(&mut items, v);
    }
    let tail = value[at..].to_vec();
    buf[start + 1] |= FLAG_NUMBERED_ITEMS;
    buf.truncate(start + 2);
    buf.extend_from_slice(&items);
    buf.extend_from_slice(&tail);
}

/// The items of a value whose items are numbered ([`FLAG_NUMBERED_ITEMS`]),
/// read from `at` (just past the item count `n`); moves `at` past them.
pub(super) fn numbered_items(
    bytes: &[u8],
    at: &mut usize,
    n: u64,
) -> Result<Vec<String>, DecodeError> {
    let bad = DecodeError("numbered items");
    let len = get_varint(bytes, at).ok_or(bad)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e < bytes.len())
        .ok_or(bad)?;
    let prefix = std::str::from_utf8(&bytes[*at..end]).map_err(|_| bad)?;
    let width = usize::from(bytes[end]);
    *at = end + 1;
    if n > bytes.len() as u64 {
        return Err(bad);
    }
    (0..n)
        .map(|_| {
            let v = get_varint(bytes, at).ok_or(bad)?;
            Ok(format!("{prefix}{v:0width$}"))
        })
        .collect()
}

/// The other fields, when any numeric array among them packs.
fn compact_fields(buf: &mut Vec<u8>, start: usize) {
    let value = &buf[start..];
    let Some(at) = fields_start(value) else {
        return;
    };
    if at == value.len() || value[1] & FLAG_BINARY_FIELDS != 0 {
        return;
    }
    let Ok(text) = std::str::from_utf8(&value[at..]) else {
        return;
    };
    let Ok(Fieldset(fields)) = serde_json::from_str::<Fieldset<'_>>(text) else {
        return;
    };
    // A name written with escapes would not print back as it was.
    if fields
        .iter()
        .any(|(k, _)| matches!(k, std::borrow::Cow::Owned(_)))
    {
        return;
    }
    let packed: Vec<Option<Packed>> = fields.iter().map(|(_, v)| Packed::of(v)).collect();
    if packed.iter().all(Option::is_none) {
        return;
    }
    let mut tail = Vec::with_capacity(text.len());
    put_varint(&mut tail, fields.len() as u64);
    for ((name, raw), packed) in fields.iter().zip(&packed) {
        put_varint(&mut tail, name.len() as u64);
        tail.extend_from_slice(name.as_bytes());
        match packed {
            Some(p) => p.write(&mut tail),
            None => {
                tail.push(TAG_JSON);
                put_varint(&mut tail, raw.get().len() as u64);
                tail.extend_from_slice(raw.get().as_bytes());
            }
        }
    }
    buf[start + 1] |= FLAG_BINARY_FIELDS;
    buf.truncate(start + at);
    buf.extend_from_slice(&tail);
}

/// A numeric array in its smallest exact form.
enum Packed {
    Ints(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// The numbers times ten to `digits`.
    Decimal {
        digits: u32,
        scaled: Vec<i64>,
    },
}

impl Packed {
    fn of(raw: &RawValue) -> Option<Packed> {
        let text = raw.get();
        if !text.starts_with('[') {
            return None;
        }
        let elements: Vec<&RawValue> = serde_json::from_str(text).ok()?;
        let texts: Vec<&str> = elements.iter().map(|e| e.get()).collect();
        if texts.is_empty() {
            return None;
        }
        // The smallest exact form, trying the cheap checks first: integers
        // are the smallest when they fit; a float form only when a decimal
        // would take more than it.
        if let Some(ints) = texts.iter().map(|t| exact_int(t)).collect() {
            return Some(Packed::Ints(ints));
        }
        let decimal = exact_decimals(&texts);
        let n = texts.len();
        let longer_than = |bytes: usize| decimal.as_ref().is_none_or(|d| d.len() > bytes);
        if longer_than(4 * n) {
            if let Some(f) = texts.iter().map(|t| exact_f32(t)).collect() {
                return Some(Packed::F32(f));
            }
        }
        if longer_than(8 * n) {
            if let Some(f) = texts.iter().map(|t| exact_f64(t)).collect() {
                return Some(Packed::F64(f));
            }
        }
        decimal
    }

    /// Bytes its values take (past the tag and the count).
    fn len(&self) -> usize {
        match self {
            Packed::Decimal { scaled, .. } => {
                1 + scaled.iter().map(|&n| varint_len(zigzag(n))).sum::<usize>()
            }
            Packed::Ints(v) => v.iter().map(|&n| varint_len(zigzag(n))).sum(),
            Packed::F32(v) => 4 * v.len(),
            Packed::F64(v) => 8 * v.len(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Packed::Ints(v) => {
                out.push(TAG_INT);
                put_varint(out, v.len() as u64);
                for &n in v {
                    put_varint(out, zigzag(n));
                }
            }
            Packed::F32(v) => {
                out.push(TAG_F32);
                put_varint(out, v.len() as u64);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            Packed::F64(v) => {
                out.push(TAG_F64);
                put_varint(out, v.len() as u64);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            Packed::Decimal { digits, scaled } => {
                out.push(TAG_DECIMAL);
                put_varint(out, scaled.len() as u64);
                put_varint(out, u64::from(*digits));
                for &n in scaled {
                    put_varint(out, zigzag(n));
                }
            }
        }
    }
}

fn varint_len(n: u64) -> usize {
    (64 - n.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Plain decimals (`-0.125`, `3.5`, `1.0`: digits, a point, fraction digits
/// without trailing zeros but one), all at one scale, when each prints back
/// as it is written ([`print_decimal`]).
fn exact_decimals(texts: &[&str]) -> Option<Packed> {
    // Each as (negative, magnitude at its own scale, fraction digits).
    let mut parsed = Vec::with_capacity(texts.len());
    for t in texts {
        let (negative, rest) = match t.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, *t),
        };
        let (whole, fraction) = rest.split_once('.')?;
        // As print_decimal writes: no leading zero but a lone one, a
        // fraction without trailing zeros but a lone one, no `-0.0`.
        let canonical = !whole.is_empty()
            && (whole == "0" || !whole.starts_with('0'))
            && !fraction.is_empty()
            && (fraction == "0" || !fraction.ends_with('0'))
            && whole.len() + fraction.len() <= 18;
        if !canonical {
            return None;
        }
        let mut magnitude: i64 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            if !b.is_ascii_digit() {
                return None;
            }
            magnitude = magnitude * 10 + i64::from(b - b'0');
        }
        if negative && magnitude == 0 {
            return None;
        }
        parsed.push((negative, magnitude, fraction.len() as u32));
    }
    let digits = parsed.iter().map(|p| p.2).max()?;
    if digits > MAX_FRACTION_DIGITS {
        return None;
    }
    let scaled = parsed
        .into_iter()
        .map(|(negative, m, d)| {
            let n = m.checked_mul(10i64.checked_pow(digits - d)?)?;
            Some(if negative { -n } else { n })
        })
        .collect::<Option<Vec<i64>>>()?;
    Some(Packed::Decimal { digits, scaled })
}

/// `n` divided by ten to `digits`, as a plain decimal with at least one
/// fraction digit and no trailing zeros beyond it.
pub(super) fn print_decimal(out: &mut String, n: i64, digits: u32) {
    let scale = 10u64.pow(digits);
    let magnitude = n.unsigned_abs();
    if n < 0 {
        out.push('-');
    }
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(magnitude / scale));
    out.push('.');
    let fraction = buf.format(magnitude % scale);
    let kept = fraction.trim_end_matches('0');
    if kept.is_empty() {
        out.push('0');
        return;
    }
    for _ in fraction.len()..digits as usize {
        out.push('0');
    }
    out.push_str(kept);
}

fn utf8(b: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(b).map_err(|_| DecodeError("field not UTF-8"))
}

fn exact_int(t: &str) -> Option<i64> {
    let n: i64 = t.parse().ok()?;
    (itoa::Buffer::new().format(n) == t).then_some(n)
}

fn exact_f32(t: &str) -> Option<f32> {
    let x: f32 = t.parse().ok()?;
    (x.is_finite() && ryu::Buffer::new().format_finite(x) == t).then_some(x)
}

fn exact_f64(t: &str) -> Option<f64> {
    let x: f64 = t.parse().ok()?;
    (x.is_finite() && ryu::Buffer::new().format_finite(x) == t).then_some(x)
}

/// The binary fields at `bytes` as the JSON object text they were packed
/// from.
pub(super) fn render_fields(bytes: &[u8]) -> Result<String, DecodeError> {
    let bad = |what| DecodeError(what);
    let mut at = 0;
    let n = get_varint(bytes, &mut at).ok_or(bad("no field count"))?;
    let mut out = String::with_capacity(bytes.len() * 3);
    out.push('{');
    let take = |at: &mut usize, len: u64| -> Result<&[u8], DecodeError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= bytes.len())
            .ok_or(bad("truncated field"))?;
        let s = &bytes[*at..end];
        *at = end;
        Ok(s)
    };
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let len = get_varint(bytes, &mut at).ok_or(bad("no name length"))?;
        let name = utf8(take(&mut at, len)?)?;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        let tag = *bytes.get(at).ok_or(bad("no field tag"))?;
        at += 1;
        let count = get_varint(bytes, &mut at).ok_or(bad("no field length"))?;
        if tag == TAG_JSON {
            out.push_str(utf8(take(&mut at, count)?)?);
            continue;
        }
        if count > bytes.len() as u64 {
            return Err(bad("field count past the value"));
        }
        let digits = if tag == TAG_DECIMAL {
            let d = get_varint(bytes, &mut at).ok_or(bad("no decimal digits"))?;
            u32::try_from(d)
                .ok()
                .filter(|&d| d <= MAX_FRACTION_DIGITS)
                .ok_or(bad("decimal digits"))?
        } else {
            0
        };
        out.push('[');
        for j in 0..count {
            if j > 0 {
                out.push(',');
            }
            match tag {
                TAG_INT => {
                    let v = get_varint(bytes, &mut at).ok_or(bad("truncated integer"))?;
                    out.push_str(itoa::Buffer::new().format(unzigzag(v)));
                }
                TAG_F32 => {
                    let b = take(&mut at, 4)?;
                    let x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                    out.push_str(ryu::Buffer::new().format_finite(x));
                }
                TAG_F64 => {
                    let b = take(&mut at, 8)?;
                    let x = f64::from_le_bytes(b.try_into().expect("8 bytes"));
                    out.push_str(ryu::Buffer::new().format_finite(x));
                }
                TAG_DECIMAL => {
                    let v = get_varint(bytes, &mut at).ok_or(bad("truncated decimal"))?;
                    print_decimal(&mut out, unzigzag(v), digits);
                }
                _ => return Err(bad("unknown field tag")),
            }
        }
        out.push(']');
    }
    if at != bytes.len() {
        return Err(bad("bytes after the fields"));
    }
    out.push('}');
    Ok(out)
}
