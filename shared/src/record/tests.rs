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
