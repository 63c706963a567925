use super::*;
use crate::write::Found;
use proptest::prelude::*;

fn lines_max(data: &[u8], start: u64, end: u64, piece: usize, max: usize) -> Vec<(u64, Vec<u8>)> {
    let mut c = LineCursor::new(start, end, max);
    let mut out = Vec::new();
    let from = c.fetch_from() as usize;
    let mut take = |o: u64, l: Found<'_>| -> Result<(), ()> {
        out.push((
            o,
            match l {
                Found::Record(r) => r.to_vec(),
                Found::TooLong => b"<too long>".to_vec(),
            },
        ));
        Ok(())
    };
    for p in data[from..].chunks(piece.max(1)) {
        c.push(p, &mut take).unwrap();
        if c.is_done() {
            break;
        }
    }
    c.finish(&mut take).unwrap();
    out
}

fn lines_of(data: &[u8], start: u64, end: u64, piece: usize) -> Vec<(u64, Vec<u8>)> {
    lines_max(data, start, end, piece, usize::MAX)
}

fn scan(doc: &[u8], target: u64, piece: usize) -> Result<DocPlan, ChunkError> {
    let mut s = DocScanner::new(target);
    for p in doc.chunks(piece.max(1)) {
        s.feed(p);
    }
    s.finish()
}

/// The elements of `doc[start..end]` fed in pieces of `piece` bytes:
/// offset and text (`<too long>` for those over `max`), or where it stopped.
fn elements_in(
    doc: &[u8],
    start: usize,
    end: usize,
    piece: usize,
    max: usize,
) -> Result<Vec<(u64, String)>, ElementStop<()>> {
    let mut cursor = ElementCursor::new(start as u64, max);
    let mut out = Vec::new();
    let mut take = |o: u64, el: Found<'_>| -> Result<(), ()> {
        out.push((
            o,
            match el {
                Found::Record(r) => String::from_utf8_lossy(r).into_owned(),
                Found::TooLong => "<too long>".to_string(),
            },
        ));
        Ok(())
    };
    for p in doc[start..end].chunks(piece.max(1)) {
        cursor.push(p, &mut take)?;
    }
    cursor.finish(&mut take)?;
    Ok(out)
}

fn elements_of(doc: &[u8], plan: &DocPlan, piece: usize) -> Vec<String> {
    let mut out = Vec::new();
    for &(s, e) in &plan.chunks {
        out.extend(
            elements_in(doc, s as usize, e as usize, piece, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(_, el)| el),
        );
    }
    out
}

#[test]
fn elements_come_whole_whatever_the_pieces() {
    let range = br#" {"userId": 1, "movieId": [2, 3]},
            {"userId": "a,}b", "movieId": []} ,12,"x\"y",   345 "#;
    let want = vec![
        (1, r#"{"userId": 1, "movieId": [2, 3]}"#.to_string()),
        (47, r#"{"userId": "a,}b", "movieId": []}"#.to_string()),
        (82, "12".to_string()),
        (85, r#""x\"y""#.to_string()),
        (95, "345".to_string()),
    ];
    for piece in [1, 2, 3, 7, 64, 1000] {
        assert_eq!(
            elements_in(range, 0, range.len(), piece, 1000),
            Ok(want.clone()),
            "pieces of {piece}"
        );
    }
}

#[test]
fn over_long_elements_are_reported_once_in_place_and_skipped() {
    let range = br#"{"userId": 1, "movieId": [1, 2, 3, 4, 5, 6, 7]}, {"userId": 2, "movieId": []}, {"userId": "}\"{", "movieId": [[[[[[[[1]]]]]]]]}, 7"#;
    for piece in [1, 5, 16, 1000] {
        let got = elements_in(range, 0, range.len(), piece, 35).unwrap();
        assert_eq!(
            got,
            vec![
                (0, "<too long>".to_string()),
                (49, r#"{"userId": 2, "movieId": []}"#.to_string()),
                (79, "<too long>".to_string()),
                (129, "7".to_string())
            ],
            "pieces of {piece}"
        );
    }
}

#[test]
fn malformed_elements_are_handed_out_and_unterminated_ones_stop_the_scan() {
    for piece in [1, 4, 1000] {
        // Whether an element is valid JSON is the record parser's to say.
        let got = elements_in(
            br#"{"userId": 1}, {"userId": 2,, } }, x"#,
            0,
            36,
            piece,
            1000,
        );
        let want = vec![
            (0, r#"{"userId": 1}"#.to_string()),
            (15, r#"{"userId": 2,, }"#.to_string()),
            (32, "}".to_string()),
            (35, "x".to_string()),
        ];
        assert_eq!(got, Ok(want), "pieces of {piece}");
        assert_eq!(
            elements_in(br#"{"userId": 1}, {"userId": 2"#, 0, 27, piece, 1000),
            Err(ElementStop::Unterminated(15)),
            "pieces of {piece}"
        );
        assert_eq!(
            elements_in(br#"{"userId": 1}, "abc"#, 0, 19, piece, 1000),
            Err(ElementStop::Unterminated(15)),
            "pieces of {piece}"
        );
        assert_eq!(
            elements_in(br#"{"userId": 1}, {"userId": "2"#, 0, 28, piece, 8),
            Err(ElementStop::Unterminated(15)),
            "pieces of {piece}"
        );
    }
}

#[test]
fn sniff_tells_the_formats_apart() {
    let u = "userId";
    assert_eq!(
        sniff(b"{\"userId\": 1, \"movieId\": [1]}\n", u),
        Ok(ChunkFormat::JsonLines)
    );
    assert_eq!(
        sniff(b"{\"movieId\": [{\"data\":1}], \"userId\": 1}\n", u),
        Ok(ChunkFormat::JsonLines)
    );
    assert_eq!(
        sniff(b"\xEF\xBB\xBF{\"userId\": 1}", u),
        Ok(ChunkFormat::JsonLines)
    );
    assert_eq!(
        sniff(b"{\"schema\": {\"fields\": []}, \"data\": [", u),
        Ok(ChunkFormat::JsonElements)
    );
    assert_eq!(
        sniff(b"{\n  \"data\": [\n {\"userId\": 1", u),
        Ok(ChunkFormat::JsonElements)
    );
    assert_eq!(
        sniff(b"  [ {\"userId\": 1}]", u),
        Ok(ChunkFormat::JsonElements)
    );
    assert_eq!(sniff(b"  \n ", u), Err(ChunkError::Empty));
    assert_eq!(
        sniff(b"\x1f\x8b\x08", u),
        Err(ChunkError::UnknownFormat('\x1f'))
    );
    assert_eq!(sniff(b"userId,movieId\n1,2|3\n", u), Ok(ChunkFormat::Csv));
    assert_eq!(
        sniff(b"\xEF\xBB\xBF\"name\",\"userId\"\r\nx,1\r\n", u),
        Ok(ChunkFormat::Csv)
    );
    assert_eq!(
        sniff(b"user_id,movieId\n1,2\n", u),
        Err(ChunkError::UnknownFormat('u'))
    );
}

#[test]
fn table_document_with_keys_in_any_order() {
    let doc = br#"{"data": [{"movieId": [2012, 553], "userId": 1}, {"movieId": [1704], "userId": 2}], "schema": {"fields": [{"name": "data"}], "primaryKey": ["userId"], "pandas_version": "0.20.0"}}"#;
    let plan = scan(doc, 1, 7).unwrap();
    assert_eq!(plan.elements, 2);
    assert_eq!(plan.chunks.len(), 2);
    assert_eq!(
        elements_of(doc, &plan, 5),
        vec![
            r#"{"movieId": [2012, 553], "userId": 1}"#,
            r#"{"movieId": [1704], "userId": 2}"#
        ]
    );
    let schema_first =
        br#"{"schema": {"fields": [], "data": [1]}, "data": [{"userId": 1, "movieId": []}]}"#;
    let plan = scan(schema_first, 1000, 3).unwrap();
    assert_eq!(plan.elements, 1);
}

#[test]
fn broken_documents_are_errors() {
    assert_eq!(scan(b"", 10, 1), Err(ChunkError::Empty));
    assert_eq!(
        scan(br#"{"schema": {}}"#, 10, 1),
        Err(ChunkError::NoRecords)
    );
    assert!(matches!(
        scan(br#"{"data": [{"userId": 1}"#, 10, 4),
        Err(ChunkError::Truncated(_))
    ));
    assert!(matches!(
        scan(br#"[{"userId": "a"#, 10, 4),
        Err(ChunkError::Truncated(_))
    ));
    assert!(matches!(
        scan(br#"[{"userId": 1}] x"#, 10, 4),
        Err(ChunkError::TrailingContent(_))
    ));
    assert!(matches!(
        scan(br#"[]]"#, 10, 4),
        Err(ChunkError::TrailingContent(_))
    ));
    assert_eq!(scan(b"[]", 10, 1).unwrap().elements, 0);
}

#[test]
fn line_ranges_cover_the_object() {
    assert_eq!(plan_lines(0, 10), vec![]);
    assert_eq!(plan_lines(25, 10), vec![(0, 10), (10, 20), (20, 25)]);
}

#[test]
fn crlf_blank_lines_and_bom_are_handled() {
    let data = b"\xEF\xBB\xBF{\"a\":1}\r\n\r\n{\"b\":2}";
    let got = lines_of(data, 0, data.len() as u64, 4);
    let lines: Vec<_> = got
        .iter()
        .map(|(_, l)| String::from_utf8(l.clone()).unwrap())
        .collect();
    assert_eq!(lines, vec!["{\"a\":1}", "{\"b\":2}"]);
}

#[test]
fn a_chunk_inside_one_long_line_reads_only_its_own_range() {
    let data = format!("{{\"a\":1}}\n{}\n{{\"b\":2}}\n", "x".repeat(10_000));
    let mut c = LineCursor::new(100, 200, 50);
    let from = c.fetch_from() as usize;
    let mut read = 0;
    for p in data.as_bytes()[from..].chunks(16) {
        read += p.len();
        c.push::<()>(p, |_, l| panic!("owns nothing, got {l:?}"))
            .unwrap();
        if c.is_done() {
            break;
        }
    }
    assert!(c.is_done());
    assert!(read <= 101 + 16, "read {read} bytes for a 100-byte chunk");
}

#[test]
fn over_long_lines_are_reported_once_and_skipped() {
    let long = "x".repeat(50);
    let data = format!("{{\"a\":1}}\n{long}\n{{\"b\":2}}\n");
    for piece in [1, 3, 7, 100] {
        let got: Vec<String> = lines_max(data.as_bytes(), 0, data.len() as u64, piece, 20)
            .into_iter()
            .map(|(_, l)| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(
            got,
            vec!["{\"a\":1}", "<too long>", "{\"b\":2}"],
            "piece {piece}"
        );
    }
}

fn record_strategy() -> impl Strategy<Value = String> {
    // Records with strings that contain commas, brackets, quotes and
    // newlines-as-escapes, so naive splitting would fail.
    (
        any::<u32>(),
        proptest::collection::vec("[a-z,\\[\\]{}\" ]{0,6}", 0..5),
    )
        .prop_map(|(id, items)| {
            let items: Vec<String> = items
                .into_iter()
                .map(|s| serde_json::to_string(&s).unwrap())
                .collect();
            format!("{{\"userId\": {id}, \"movieId\": [{}]}}", items.join(", "))
        })
}

proptest! {
    #[test]
    fn every_line_lands_in_exactly_one_chunk(
        records in proptest::collection::vec(record_strategy(), 0..40),
        target in 1u64..300,
        piece in 1usize..64,
        trailing_newline in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let mut data = records.join(sep);
        if trailing_newline && !data.is_empty() { data.push_str(sep); }
        let bytes = data.as_bytes();
        let mut seen = Vec::new();
        for (s, e) in plan_lines(bytes.len() as u64, target) {
            seen.extend(lines_of(bytes, s, e, piece).into_iter().map(|(_, l)| String::from_utf8(l).unwrap()));
        }
        prop_assert_eq!(seen, records.clone());

        // With a line limit, over-long lines are reported in place, once.
        let max = 40;
        let mut limited = Vec::new();
        for (s, e) in plan_lines(bytes.len() as u64, target) {
            limited.extend(lines_max(bytes, s, e, piece, max).into_iter().map(|(_, l)| String::from_utf8(l).unwrap()));
        }
        let want: Vec<String> = records.iter().map(|r| if r.len() > max { "<too long>".to_string() } else { r.clone() }).collect();
        prop_assert_eq!(limited, want);
    }

    #[test]
    fn every_element_lands_in_exactly_one_chunk(
        records in proptest::collection::vec(record_strategy(), 0..40),
        target in 1u64..300,
        piece in 1usize..64,
        table in any::<bool>(),
        pretty in any::<bool>(),
    ) {
        let sep = if pretty { ",\n    " } else { "," };
        let array = format!("[{}]", records.join(sep));
        let doc = if table {
            format!("{{\"schema\": {{\"fields\": [{{\"name\": \"userId\"}}], \"primaryKey\": [\"userId\"]}}, \"data\": {array}}}")
        } else {
            array
        };
        let plan = scan(doc.as_bytes(), target, piece).unwrap();
        prop_assert_eq!(plan.elements as usize, records.len());
        prop_assert_eq!(elements_of(doc.as_bytes(), &plan, piece), records.clone());

        // With a length limit, over-long elements are reported in place, once.
        let max = 40;
        let mut limited = Vec::new();
        for &(s, e) in &plan.chunks {
            limited.extend(elements_in(doc.as_bytes(), s as usize, e as usize, piece, max).unwrap().into_iter().map(|(_, el)| el));
        }
        let want: Vec<String> = records.iter().map(|r| if r.len() > max { "<too long>".to_string() } else { r.clone() }).collect();
        prop_assert_eq!(limited, want);
    }
}
