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

/// The record `text` encoded as ingest stores it, before and after its
/// numeric fields were packed.
fn stored_both_ways(text: &str) -> (Vec<u8>, Vec<u8>) {
    stored_both_ways_as(text, &fields())
}

fn stored_both_ways_as(text: &str, fields: &Fields) -> (Vec<u8>, Vec<u8>) {
    let mut plain = Vec::new();
    Encoder::new(fields, 1000).encode(text, &mut plain).unwrap();
    let mut packed = vec![9, 9];
    packed.extend_from_slice(&plain);
    compact(&mut packed, 2);
    (plain, packed[2..].to_vec())
}

fn other_text(value: &[u8]) -> Option<String> {
    Stored::decode(value)
        .unwrap()
        .other
        .map(|o| o.get().to_string())
}

#[test]
fn numeric_fields_are_stored_as_numbers_and_print_back_as_written() {
    // float32 scores as a float32 column prints them, float64 ones as
    // pandas and pyarrow print them, integer counts, and fields left as text.
    let text = r#"{"userId": 1, "movieId": [10, 20, 30], "score": [0.875, 0.12345679, 1.0e-3],
        "p": [0.1234567891, 0.9876543210987654, -0.0], "n": [3, -1, 0], "why": ["a", "b", "c"],
        "model": "v7", "odd": [0.50, 1], "empty": []}"#;
    let (plain, packed) = stored_both_ways(text);
    let (a, b) = (other_text(&plain).unwrap(), other_text(&packed).unwrap());
    assert_eq!(a, b, "byte for byte");
    assert!(
        packed.len() < plain.len(),
        "{} < {}",
        packed.len(),
        plain.len()
    );
    // `1.0e-3` is no float's shortest text: that field stays JSON.
    let f = Stored::decode(&packed).unwrap();
    let fields: Vec<String> = f
        .other_fields()
        .unwrap()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(fields, ["score", "p", "n", "why", "model", "odd", "empty"]);
    // Twenty float32 scores take 4 bytes each, float64 ones 8, short
    // decimals less.
    let scores = |t: &str| {
        format!(
            r#"{{"userId": 1, "movieId": [1], "s": [{}]}}"#,
            vec![t; 20].join(",")
        )
    };
    let (_, packed) = stored_both_ways(&scores("0.12345679"));
    let head = compact::fields_start(&packed).unwrap();
    // Field count, name length, name, tag, value count, then the values.
    assert_eq!(packed.len() - head, 1 + 1 + 1 + 1 + 1 + 20 * 4);
    // Four digits: a decimal (its digit count, then 3 bytes each).
    let (_, packed) = stored_both_ways(&scores("0.8734"));
    assert_eq!(packed.len() - head, 1 + 1 + 1 + 1 + 1 + 1 + 20 * 3);
    // pandas' ten digits: a decimal, 5 bytes each (an f64 would take 8).
    let (_, packed) = stored_both_ways(&scores("0.1234567891"));
    assert_eq!(packed.len() - head, 1 + 1 + 1 + 1 + 1 + 1 + 20 * 5);
    // Python's own float64 text: an f64.
    let (_, packed) = stored_both_ways(&scores("0.12345678912345678"));
    assert_eq!(packed.len() - head, 1 + 1 + 1 + 1 + 1 + 20 * 8);
    // A record without numbers to pack is stored as before.
    let (plain, packed) = stored_both_ways(r#"{"userId": 1, "movieId": [1], "model": "v7"}"#);
    assert_eq!(plain, packed);
}

proptest::proptest! {
    #[test]
    fn packed_numbers_always_print_back_as_their_text(
        f32s in proptest::collection::vec(proptest::num::f32::NORMAL | proptest::num::f32::ZERO | proptest::num::f32::SUBNORMAL, 1..25),
        f64s in proptest::collection::vec(proptest::num::f64::NORMAL | proptest::num::f64::ZERO, 1..25),
        ints in proptest::collection::vec(proptest::num::i64::ANY, 1..25),
        digits in proptest::collection::vec(0u32..100_000, 1..10),
    ) {
        let f32_text: Vec<String> = f32s.iter().map(|x| ryu::Buffer::new().format_finite(*x).to_string()).collect();
        let f64_text: Vec<String> = f64s.iter().map(|x| ryu::Buffer::new().format_finite(*x).to_string()).collect();
        let int_text: Vec<String> = ints.iter().map(|n| n.to_string()).collect();
        // Decimals as a person writes them: trailing zeros, exponents.
        let loose: Vec<String> = digits.iter().map(|d| format!("{}.{d:05}e-{}", d % 3, d % 4)).collect();
        let text = format!(
            r#"{{"userId": "u", "movieId": [1, 2], "a": [{}], "b": [{}], "c": [{}], "d": [{}]}}"#,
            f32_text.join(", "), f64_text.join(", "), int_text.join(", "), loose.join(", ")
        );
        let (plain, packed) = stored_both_ways(&text);
        proptest::prop_assert_eq!(other_text(&plain), other_text(&packed));
        proptest::prop_assert!(packed.len() < plain.len());
    }
}

fn items_of(value: &[u8]) -> Vec<serde_json::Value> {
    Stored::decode(value)
        .unwrap()
        .items
        .iter()
        .map(ItemId::to_json)
        .collect()
}

#[test]
fn numbered_item_ids_are_stored_as_numbers_and_print_back_as_written() {
    let skus: Vec<String> = (0..20)
        .map(|i| format!("\"B0{:08}\"", i * 7_654_321 % 100_000_000))
        .collect();
    let text = format!(
        r#"{{"userId": 1, "movieId": [{}], "score": [0.5]}}"#,
        skus.join(",")
    );
    let (plain, packed) = stored_both_ways(&text);
    assert_eq!(items_of(&plain), items_of(&packed));
    assert_eq!(other_text(&plain), other_text(&packed));
    // 12 bytes an id as text, at most 4 as a number.
    assert!(
        packed.len() + 20 * 8 <= plain.len(),
        "{} vs {}",
        packed.len(),
        plain.len()
    );
    for (kept, why) in [
        (r#"["B01", "B02", "C03"]"#, "two prefixes"),
        (r#"["B01", "B002"]"#, "two widths"),
        (r#"["B01", "B"]"#, "no number"),
        (
            r#"["sku-1234567890123456789"]"#,
            "more digits than a u64 holds",
        ),
        (r#"["B01", 7]"#, "an integer among them"),
    ] {
        let text = format!(r#"{{"userId": 1, "movieId": {kept}}}"#);
        let (plain, packed) = stored_both_ways(&text);
        assert_eq!(plain, packed, "{why}: as written");
    }
    // Leading zeros, an empty prefix, multi-byte prefixes print back.
    for list in [r#"["000", "001", "999"]"#, r#"["ü-07", "ü-10"]"#] {
        let text = format!(r#"{{"userId": 1, "movieId": {list}}}"#);
        let (plain, packed) = stored_both_ways(&text);
        assert_ne!(plain, packed, "{list}: packed");
        assert_eq!(items_of(&plain), items_of(&packed), "{list}");
    }
}

proptest::proptest! {
    #[test]
    fn packed_items_and_decimals_always_print_back_as_their_text(
        prefix in "[A-Za-z_-]{0,4}",
        width in 1usize..12,
        numbers in proptest::collection::vec(0u64..1_000_000_000_000, 1..25),
        decimals in proptest::collection::vec((-1_000_000i64..1_000_000, 0u32..8), 1..25),
    ) {
        let ids: Vec<String> = numbers.iter().map(|n| format!("\"{prefix}{:0width$}\"", n % 10u64.pow(width as u32))).collect();
        // Decimals as pandas writes them: no trailing zeros, but one.
        let texts: Vec<String> = decimals.iter().map(|&(n, d)| {
            let mut s = String::new();
            super::compact::print_decimal(&mut s, n, d);
            s
        }).collect();
        let text = format!(r#"{{"userId": 1, "movieId": [{}], "s": [{}]}}"#, ids.join(","), texts.join(","));
        let (plain, packed) = stored_both_ways(&text);
        proptest::prop_assert_eq!(items_of(&plain), items_of(&packed));
        proptest::prop_assert_eq!(other_text(&plain), other_text(&packed));
        proptest::prop_assert!(packed.len() < plain.len());
    }
}

proptest::proptest! {
    #[test]
    fn any_bytes_under_any_flags_decode_or_fail_without_panicking(
        flags in 0u8..16,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        let mut value = vec![CODEC_BINARY, flags];
        value.extend_from_slice(&body);
        if let Ok(stored) = Stored::decode(&value) {
            let _ = stored.other_fields();
        }
        let _ = compact::fields_start(&value);
    }
}
