//! CSV with a header row (RFC 4180 quoting), as SageMaker Batch Transform's
//! CSV output or a data team's export writes it.
//!
//! Chunked like JSON Lines: byte ranges, each owning the rows that start in
//! it ([`super::LineCursor`], through [`lines::read_lines`]); a quoted field holding a newline is detected
//! and refused, since a range cannot tell it from a row's end. Ingest reads
//! the header from the object's first line and turns every row into the
//! JSON record the record encoder takes, so a CSV batch writes byte for byte
//! the Redis values its JSON Lines twin does.
//!
//! The item list is one of:
//! - one column named by `FS_ITEMS_FIELD`, holding a JSON array (`"[1, 2]"`)
//!   or items joined by `FS_CSV_ITEM_SEPARATOR` (default `|`: `1|2`);
//! - one column per rank, `<items field>_1, <items field>_2, …` or
//!   `item_1, item_2, …` (empty cells end a short list).
//!
//! Other columns are kept as fields: a cell that is a JSON number, array,
//! object or boolean keeps that type, any other cell is a string, and an
//! empty cell is left out.

use shared::config::{Fields, PlannerConfig};
use shared::record::RecordError;

use super::{lines, Chunk, ChunkFormat, Format, Layout, Object};
use crate::error::{At, IngestError, PlanError};
use crate::s3::source::ObjectSource;
use crate::write::{Found, Sink, Writer};

/// CSV with a header row.
pub(crate) struct Csv;

impl Format for Csv {
    async fn plan<S: ObjectSource>(
        object: &Object<'_, S>,
        config: &PlannerConfig,
    ) -> Result<Layout, PlanError> {
        Ok(lines::by_lines(object, config, ChunkFormat::Csv))
    }

    /// Reads the header (the object's first line), then turns each row the
    /// chunk owns into its JSON record.
    async fn read<S: ObjectSource, K: Sink>(
        chunk: &Chunk<'_, S>,
        records: &mut Writer<'_, K>,
    ) -> Result<(), IngestError> {
        let layout = header(chunk).await?;
        let fields = &chunk.config.fields;
        lines::read_lines(chunk, records, |records, offset, found| match found {
            // The header row.
            Found::Record(_) if offset == 0 => Ok(()),
            Found::Record(row) => records.converted(At::Byte(offset), |json| {
                layout.to_json(row, fields, json).map_err(RecordError::Csv)
            }),
            too_long => records.found(At::Byte(offset), too_long),
        })
        .await
    }
}

/// The column layout of a CSV batch, from its header: the object's first line.
async fn header<S: ObjectSource>(chunk: &Chunk<'_, S>) -> Result<CsvLayout, IngestError> {
    use futures::StreamExt;
    let max = chunk.config.validation.max_record_bytes;
    let mut stream = chunk.text(0, Some(max + 1)).await?;
    let mut head = Vec::new();
    while let Some(bytes) = stream.next().await {
        head.extend_from_slice(&bytes?);
        if memchr::memchr(b'\n', &head).is_some() {
            break;
        }
    }
    let source_uri = chunk.source_uri();
    let Some(end) = memchr::memchr(b'\n', &head) else {
        return Err(IngestError::Header {
            source_uri,
            reason: format!("the CSV header is not one line of at most {max} bytes"),
        });
    };
    let line = &head[..end];
    CsvLayout::from_header(
        line.strip_suffix(b"\r").unwrap_or(line),
        &chunk.config.fields,
    )
    .map_err(|reason| IngestError::Header { source_uri, reason })
}

/// How a batch's columns map to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvLayout {
    columns: Vec<String>,
    user: usize,
    items: Items,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Items {
    /// One column: a JSON array or separated items.
    Column(usize),
    /// One column per rank, in rank order.
    Ranked(Vec<usize>),
}

/// The fields of one CSV row, unquoted.
fn fields(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    // A quote left open at the end of the line: the field goes on past it.
    if line.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
        return Err("a quoted field does not end on its line (newlines inside CSV fields are not supported)".into());
    }
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line);
    let mut record = ::csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => Ok(record.iter().map(<[u8]>::to_vec).collect()),
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(format!("not a CSV row: {e}")),
    }
}

/// Whether `line` is a CSV header naming the user field: how a CSV batch is
/// told apart from other text.
pub fn is_header(line: &[u8], user_field: &str) -> bool {
    fields(line).is_ok_and(|f| f.iter().any(|c| c == user_field.as_bytes()))
}

impl CsvLayout {
    /// The layout of a batch whose header row is `line`.
    pub fn from_header(line: &[u8], fields_of: &Fields) -> Result<Self, String> {
        let line = line.strip_prefix(super::BOM).unwrap_or(line);
        let columns: Vec<String> = fields(line)?
            .into_iter()
            .map(|c| {
                String::from_utf8(c).map_err(|_| "the CSV header is not valid UTF-8".to_string())
            })
            .collect::<Result<_, _>>()?;
        let find = |name: &str| columns.iter().position(|c| c == name);
        let user = find(&fields_of.user)
            .ok_or_else(|| format!("the CSV header has no `{}` column", fields_of.user))?;
        let items = match find(&fields_of.items) {
            Some(i) => Items::Column(i),
            None => {
                let rank_of = |c: &str| -> Option<u32> {
                    let n = c
                        .strip_prefix(&format!("{}_", fields_of.items))
                        .or_else(|| c.strip_prefix("item_"))?;
                    n.parse().ok().filter(|&n| n >= 1)
                };
                let mut ranked: Vec<(u32, usize)> = columns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| Some((rank_of(c)?, i)))
                    .collect();
                ranked.sort();
                if ranked.is_empty() {
                    return Err(format!("the CSV header has no `{0}` column and no `{0}_1`, `{0}_2`, … (or `item_1`, …) columns", fields_of.items));
                }
                Items::Ranked(ranked.into_iter().map(|(_, i)| i).collect())
            }
        };
        Ok(CsvLayout {
            columns,
            user,
            items,
        })
    }

    /// Writes the JSON record of the row `line` to `out`, with the user and
    /// item fields named as `fields_of` says.
    pub fn to_json(
        &self,
        line: &[u8],
        fields_of: &Fields,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let cells = fields(line)?;
        if cells.len() != self.columns.len() {
            return Err(format!(
                "the row has {} fields, the header has {}",
                cells.len(),
                self.columns.len()
            ));
        }
        let text = |i: usize| {
            std::str::from_utf8(&cells[i])
                .map_err(|_| format!("column `{}` is not valid UTF-8", self.columns[i]))
        };
        out.push(b'{');
        put_string(out, &fields_of.user);
        out.push(b':');
        put_id(out, text(self.user)?.trim());
        out.push(b',');
        put_string(out, &fields_of.items);
        out.push(b':');
        let mut rank_columns: &[usize] = &[];
        match &self.items {
            Items::Column(i) => {
                let cell = text(*i)?.trim();
                if cell.starts_with('[') {
                    out.extend_from_slice(cell.as_bytes());
                } else {
                    put_list(
                        out,
                        cell.split(fields_of.csv_item_separator as char)
                            .map(str::trim)
                            .filter(|s| !s.is_empty()),
                    );
                }
            }
            Items::Ranked(columns) => {
                rank_columns = columns;
                let items = columns
                    .iter()
                    .map(|&i| text(i).map(str::trim))
                    .collect::<Result<Vec<_>, _>>()?;
                put_list(out, items.into_iter().take_while(|s| !s.is_empty()));
            }
        }
        for (i, name) in self.columns.iter().enumerate() {
            let is_items =
                matches!(self.items, Items::Column(c) if c == i) || rank_columns.contains(&i);
            if i == self.user || is_items || cells[i].is_empty() {
                continue;
            }
            out.push(b',');
            put_string(out, name);
            out.push(b':');
            put_value(out, text(i)?);
        }
        out.push(b'}');
        Ok(())
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("a string serialises");
}

/// An id: an integer stays one, anything else is a string.
fn put_id(out: &mut Vec<u8>, s: &str) {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
    {
        out.extend_from_slice(s.as_bytes());
    } else {
        put_string(out, s);
    }
}

fn put_list<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    out.push(b'[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        put_id(out, item);
    }
    out.push(b']');
}

/// A cell that is JSON (a number, array, object or boolean) as that JSON;
/// anything else as a string.
fn put_value(out: &mut Vec<u8>, cell: &str) {
    let t = cell.trim();
    let json_like = t.starts_with(['[', '{', '-'])
        || t.starts_with(|c: char| c.is_ascii_digit())
        || t == "true"
        || t == "false";
    if json_like && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok() {
        out.extend_from_slice(t.as_bytes());
    } else {
        put_string(out, cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(header: &str, line: &str) -> Result<String, String> {
        let f = Fields::default();
        let layout = CsvLayout::from_header(header.as_bytes(), &f)?;
        let mut out = Vec::new();
        layout.to_json(line.as_bytes(), &f, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_three_item_layouts_make_the_same_record() {
        let want = r#"{"userId":7,"movieId":[3,"x",1],"scores":[0.9,0.5]}"#;
        assert_eq!(
            row("userId,movieId,scores", r#"7,"[3,""x"",1]","[0.9,0.5]""#).unwrap(),
            want
        );
        assert_eq!(
            row("userId,movieId,scores", r#"7,3|x|1,"[0.9,0.5]""#).unwrap(),
            want
        );
        assert_eq!(
            row(
                "userId,movieId_2,movieId_1,movieId_3,scores",
                r#"7,x,3,1,"[0.9,0.5]""#
            )
            .unwrap(),
            want
        );
        // A short list in rank columns ends at the first empty cell.
        assert_eq!(
            row("userId,item_1,item_2,item_3", "u1,5,,").unwrap(),
            r#"{"userId":"u1","movieId":[5]}"#
        );
    }

    #[test]
    fn cells_keep_json_types_and_strings_are_escaped() {
        let r = row(
            "userId,movieId,n,flag,name,empty",
            r##"007,1,-2.5,true,"say ""hi"", \ ok","""##,
        )
        .unwrap();
        assert_eq!(
            r,
            r#"{"userId":"007","movieId":[1],"n":-2.5,"flag":true,"name":"say \"hi\", \\ ok"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["name"], "say \"hi\", \\ ok");
    }

    #[test]
    fn bad_rows_and_headers_say_what_is_wrong() {
        assert!(row("userId,movieId", "1,2,3")
            .unwrap_err()
            .contains("3 fields, the header has 2"));
        assert!(row("userId,movieId", "1,\"2|3")
            .unwrap_err()
            .contains("does not end on its line"));
        assert!(row("user,movieId", "1,2")
            .unwrap_err()
            .contains("no `userId` column"));
        assert!(row("userId,other", "1,2")
            .unwrap_err()
            .contains("no `movieId` column"));
        assert!(is_header(b"\"userId\",movieId", "userId"));
        assert!(!is_header(b"user_id,movieId", "userId"));
    }
}
