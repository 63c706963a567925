// Over 500 lines: the Parquet format whole: planning from the footer, reading row groups by ranged reads, encoding Arrow columns.
//! Parquet, as pyarrow, pandas, Polars and Spark write it.
//!
//! A Parquet file is read from its footer, so it is never scanned: the
//! planner reads only the footer (one or two ranged reads) and makes one
//! chunk per row group, or per run of small row groups near the chunk
//! target ([`plan`]). A chunk's `[start, end)` are row-group indices, not
//! bytes. Ingest reads one row group's column chunks at a time with one
//! ranged read pinned to the ETag ([`row_group`]), decodes it with arrow-rs
//! from memory, and encodes every row straight from the Arrow arrays
//! ([`ParquetLayout::encode`], with the record encoder's own head), or, for
//! a schema that needs it, through the JSON record the record encoder takes
//! ([`ParquetLayout::to_json`]); either way a Parquet batch writes byte for
//! byte the Redis values its JSON Lines twin does. Memory is bounded by the
//! footer and one row group's column chunks, never by the file.
//!
//! Columns: the user id (an integer or a string), the items (a list of
//! integers or strings), and any other column kept as a field: booleans,
//! numbers, strings, lists and structs of them; dates, timestamps and
//! decimals become strings; dictionary-encoded (categorical) columns read as
//! their values. A null user id or item list is a bad record; a null in
//! another column leaves that field out, as an empty CSV cell does.

use std::sync::Arc;

use crate::s3::messages::ChunkMessage;
use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use futures::FutureExt;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::MetadataFetch;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::reader::{ChunkReader, Length};
use shared::config::PlannerConfig;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
pub use arrow_array::ArrayRef;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use parquet::file::metadata::ParquetMetaData;

use shared::config::Fields;
use shared::record::validate_user_id;
use shared::record::{encode_head, encode_head_ints, ItemId, RecordError, MAX_NESTING};

use super::{Chunk, ChunkFormat, Compression, Format, Layout, Object};
use crate::error::ChunkError;
use crate::error::{At, IngestError, PlanError};
use crate::s3::source::{read_range, ObjectSource, SourceError};
use crate::write::{Sink, Writer};

/// Parquet, read from its footer.
pub(crate) struct Parquet;

impl Format for Parquet {
    /// Reads the footer alone: one chunk per row group, or per run of small
    /// ones near the chunk target. The columns are checked by ingest, which
    /// knows the field names.
    async fn plan<S: ObjectSource>(
        object: &Object<'_, S>,
        config: &PlannerConfig,
    ) -> Result<Layout, PlanError> {
        if !object.compression.is_none() {
            return Err(object.error(ChunkError::Parquet(format!(
                "a {}-compressed Parquet file cannot be read by row group: upload the Parquet file itself (its pages are compressed already)",
                object.compression.as_str()
            ))));
        }
        let source_uri = object.source_uri();
        let meta = footer(
            object.source,
            object.bucket,
            object.key,
            object.etag,
            object.size,
            config.limits.max_parquet_footer_bytes,
        )
        .await
        .map_err(|e| e.into_plan(&source_uri))?;
        arrow_metadata(meta.clone()).map_err(|reason| object.error(ChunkError::Parquet(reason)))?;
        too_large_row_group(&meta, config.limits.max_row_group_bytes)
            .map_err(|reason| object.error(ChunkError::Parquet(reason)))?;
        let (rows, text_bytes) = rows_and_bytes(&meta);
        if rows == 0 {
            return Err(object.error(ChunkError::Empty));
        }
        let ranges = plan(&meta, config.chunk_bytes);
        Ok(Layout {
            format: ChunkFormat::Parquet,
            compression: Compression::None,
            ranges,
            estimated_users: rows,
            text_bytes,
        })
    }

    /// Reads the footer again, then the chunk's row groups one at a time,
    /// encoding each row from the Arrow arrays (or through JSON, for a
    /// schema the direct encoder does not cover).
    async fn read<S: ObjectSource, K: Sink>(
        chunk: &Chunk<'_, S>,
        records: &mut Writer<'_, K>,
    ) -> Result<(), IngestError> {
        let (msg, source_uri) = (chunk.msg, chunk.source_uri());
        let max_footer = chunk.config.limits.max_parquet_footer_bytes;
        let meta = footer(
            chunk.source,
            &msg.bucket,
            &msg.key,
            &msg.etag,
            msg.size,
            max_footer,
        )
        .await
        .map_err(|e| e.into_ingest(&source_uri))?;
        let arrow = arrow_metadata(meta).map_err(|reason| IngestError::Parquet {
            source_uri: source_uri.clone(),
            reason,
        })?;
        let layout =
            ParquetLayout::from_schema(arrow.schema(), &chunk.config.fields).map_err(|reason| {
                IngestError::Header {
                    source_uri: source_uri.clone(),
                    reason,
                }
            })?;
        let groups = arrow.metadata().num_row_groups() as u64;
        if msg.end > groups {
            let reason = format!(
                "chunk {} names row groups {}..{}, and the file has {groups}",
                msg.chunk, msg.start, msg.end
            );
            return Err(IngestError::Parquet { source_uri, reason });
        }
        let max_items = chunk.config.validation.max_items as usize;
        for group in msg.start..msg.end {
            let rows = row_group(chunk.source, msg, &arrow, group as usize)
                .await
                .map_err(|e| e.into_ingest(&source_uri))?;
            let mut number = 0u64;
            for batch in rows {
                let corrupt = |e: String| IngestError::Parquet {
                    source_uri: source_uri.clone(),
                    reason: format!("row group {group}: {e}"),
                };
                let batch = batch.map_err(|e| corrupt(e.to_string()))?;
                let columns = layout.prepare(&batch).map_err(corrupt)?;
                for row in 0..batch.num_rows() {
                    let at = At::Row { group, row: number };
                    if layout.direct {
                        records.encoded(at, |bytes, id| {
                            layout.encode(&columns, row, max_items, bytes, id)
                        })?;
                    } else {
                        records.converted(at, |json| {
                            layout
                                .to_json(&columns, row, json)
                                .map_err(RecordError::Parquet)
                        })?;
                    }
                    number += 1;
                }
                records.send().await?;
            }
        }
        Ok(())
    }
}

/// The first and last four bytes of every Parquet file.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// Row groups `[start, end)` per chunk: each row group alone, or consecutive
/// small ones together while their compressed size stays within `target`.
pub fn plan(meta: &ParquetMetaData, target: u64) -> Vec<(u64, u64)> {
    let sizes: Vec<u64> = meta
        .row_groups()
        .iter()
        .map(|rg| rg.compressed_size().max(0) as u64)
        .collect();
    plan_sizes(&sizes, target)
}

fn plan_sizes(sizes: &[u64], target: u64) -> Vec<(u64, u64)> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0usize, 0u64);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && bytes + size > target {
            chunks.push((start as u64, i as u64));
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push((start as u64, sizes.len() as u64));
    }
    chunks
}

/// The bytes `[from, to)` of the file that hold row group `index`'s column
/// chunks (contiguous in every writer's files).
pub fn row_group_span(meta: &ParquetMetaData, index: usize) -> (u64, u64) {
    let ranges = meta.row_group(index).columns().iter().map(|c| {
        let (start, len) = c.byte_range();
        (start, start + len)
    });
    ranges.fold((u64::MAX, 0), |(from, to), (s, e)| (from.min(s), to.max(e)))
}

/// Ingest holds one row group at a time, as read and decoded: a row group
/// past `max` bytes either way is refused at planning, naming the group.
fn too_large_row_group(meta: &ParquetMetaData, max: u64) -> Result<(), String> {
    for (i, rg) in meta.row_groups().iter().enumerate() {
        let (from, to) = row_group_span(meta, i);
        let read = to.saturating_sub(from);
        let decoded = rg.total_byte_size().max(0) as u64;
        if read.max(decoded) > max {
            return Err(format!(
                "row group {i} is {} bytes ({read} as stored, {decoded} uncompressed), more than FS_MAX_ROW_GROUP_BYTES ({max}) that ingest holds at once; write smaller row groups (pyarrow: row_group_size)",
                read.max(decoded)
            ));
        }
    }
    Ok(())
}

/// Rows in the file, and their decoded size: what the memory guard weighs.
pub fn rows_and_bytes(meta: &ParquetMetaData) -> (u64, u64) {
    let bytes = meta
        .row_groups()
        .iter()
        .map(|rg| rg.total_byte_size().max(0) as u64)
        .sum();
    (meta.file_metadata().num_rows().max(0) as u64, bytes)
}

/// How a file's columns map to a record.
#[derive(Debug, Clone)]
pub struct ParquetLayout {
    user: usize,
    items: usize,
    /// Other columns, with their names as JSON strings (`"scores"`).
    others: Vec<(usize, String)>,
    user_key: String,
    items_key: String,
    /// Whether [`Self::encode`] writes rows directly; otherwise (duplicate
    /// column names, fields nested deeper than a record may be) they go
    /// through [`Self::to_json`] and the record encoder, which reports them.
    pub direct: bool,
}

impl ParquetLayout {
    /// The layout of a file whose Arrow schema is `schema`; an error names a
    /// missing column or one whose type cannot be read.
    pub fn from_schema(schema: &Schema, fields: &Fields) -> Result<Self, String> {
        let find = |name: &str| schema.fields().iter().position(|f| f.name() == name);
        let user = find(&fields.user)
            .ok_or_else(|| format!("the Parquet file has no `{}` column", fields.user))?;
        let items = find(&fields.items)
            .ok_or_else(|| format!("the Parquet file has no `{}` column", fields.items))?;
        let user_type = values_of(schema.field(user).data_type());
        if !user_type.is_integer() && !is_string(user_type) {
            return Err(format!(
                "column `{}` is {user_type}; a user id must be an integer or a string",
                fields.user
            ));
        }
        let item_type = match values_of(schema.field(items).data_type()) {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                values_of(f.data_type())
            }
            other => {
                return Err(format!(
                    "column `{}` is {other}; the items must be a list of integers or strings",
                    fields.items
                ))
            }
        };
        if !item_type.is_integer() && !is_string(item_type) {
            return Err(format!(
                "column `{}` is a list of {item_type}; the items must be integers or strings",
                fields.items
            ));
        }
        let mut others = Vec::new();
        let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        names.sort_unstable();
        let unique = names.windows(2).all(|w| w[0] != w[1]);
        let mut shallow = true;
        for (i, f) in schema.fields().iter().enumerate() {
            if i == user || i == items {
                continue;
            }
            if !can_write(f.data_type()) {
                return Err(format!(
                    "column `{}` is {}, which cannot be kept as a field",
                    f.name(),
                    f.data_type()
                ));
            }
            shallow &= depth(f.data_type()) <= MAX_NESTING;
            others.push((i, json_string(f.name())));
        }
        let (user_key, items_key) = (json_string(&fields.user), json_string(&fields.items));
        Ok(ParquetLayout {
            user,
            items,
            others,
            user_key,
            items_key,
            direct: unique && shallow,
        })
    }

    /// Appends row `row` of the prepared `columns` to `out` as its stored
    /// value (codec 2), and its canonical user id to `id`: the bytes
    /// [`Self::to_json`] and the record encoder write for the row, without
    /// the JSON between (a test holds the two to each other).
    pub fn encode(
        &self,
        columns: &[ArrayRef],
        row: usize,
        max_items: usize,
        out: &mut Vec<u8>,
        id: &mut String,
    ) -> Result<(), RecordError> {
        let user = columns[self.user].as_ref();
        if user.is_null(row) {
            return Err(RecordError::Parquet("the user id is null".into()));
        }
        let user_is_int = user.data_type().is_integer();
        if user_is_int {
            let mut buf = itoa::Buffer::new();
            id.push_str(
                integer_at(user, row, &mut buf)
                    .ok_or_else(|| RecordError::BadUserIdType(self.user_name()))?,
            );
        } else {
            let s =
                string_at(user, row).ok_or_else(|| RecordError::BadUserIdType(self.user_name()))?;
            validate_user_id(s).map_err(RecordError::BadUserId)?;
            id.push_str(s);
        }
        let items = columns[self.items].as_ref();
        if items.is_null(row) {
            return Err(RecordError::Parquet("the item list is null".into()));
        }
        let list = list_at(items, row);
        if list.null_count() > 0 {
            return Err(RecordError::Parquet("the item list holds a null".into()));
        }
        if list.len() > max_items {
            return Err(RecordError::TooManyItems {
                count: list.len(),
                max: max_items,
            });
        }
        let bad_items = || RecordError::BadItems(self.items_name());
        macro_rules! ints {
            ($t:ty) => {
                encode_head_ints(
                    out,
                    user_is_int,
                    list.as_primitive::<$t>().values().iter().map(|&n| n as i64),
                )
            };
        }
        match list.data_type() {
            DataType::Int64 => ints!(Int64Type),
            DataType::Int32 => ints!(Int32Type),
            DataType::Int16 => ints!(Int16Type),
            DataType::Int8 => ints!(Int8Type),
            DataType::UInt32 => ints!(UInt32Type),
            DataType::UInt16 => ints!(UInt16Type),
            DataType::UInt8 => ints!(UInt8Type),
            DataType::UInt64 => {
                let values = list.as_primitive::<UInt64Type>().values();
                if values.iter().any(|&n| n > i64::MAX as u64) {
                    return Err(bad_items());
                }
                encode_head_ints(out, user_is_int, values.iter().map(|&n| n as i64));
            }
            _ => {
                let strings: Option<Vec<ItemId>> = (0..list.len())
                    .map(|i| string_at(list.as_ref(), i).map(|s| ItemId::Str(s.into())))
                    .collect();
                encode_head(out, user_is_int, &strings.ok_or_else(bad_items)?);
            }
        }
        let mut first = true;
        for (i, key) in &self.others {
            let column = columns[*i].as_ref();
            if column.is_null(row) {
                continue;
            }
            out.push(if first { b'{' } else { b',' });
            first = false;
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            write_value(column, row, out);
        }
        if !first {
            out.push(b'}');
        }
        Ok(())
    }

    fn user_name(&self) -> String {
        serde_json::from_str(&self.user_key).unwrap_or_default()
    }

    fn items_name(&self) -> String {
        serde_json::from_str(&self.items_key).unwrap_or_default()
    }
}

/// How deeply lists and structs nest in a value of type `t`.
fn depth(t: &DataType) -> usize {
    match values_of(t) {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            1 + depth(f.data_type())
        }
        DataType::Struct(fields) => {
            1 + fields
                .iter()
                .map(|f| depth(f.data_type()))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// An integer cell's decimal text.
fn integer_at<'b>(array: &dyn Array, row: usize, buf: &'b mut itoa::Buffer) -> Option<&'b str> {
    Some(match array.data_type() {
        DataType::Int8 => buf.format(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => buf.format(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => buf.format(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => buf.format(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => buf.format(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => buf.format(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => buf.format(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => buf.format(array.as_primitive::<UInt64Type>().value(row)),
        _ => return None,
    })
}

/// A string cell.
fn string_at(array: &dyn Array, row: usize) -> Option<&str> {
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

impl ParquetLayout {
    /// `batch` with every column in a type [`Self::to_json`] writes directly:
    /// dictionaries unpacked, dates, times and decimals as strings.
    pub fn prepare(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, String> {
        batch
            .columns()
            .iter()
            .map(|c| plain(c).map_err(|e| format!("reading column values: {e}")))
            .collect()
    }

    /// Appends row `row` of the prepared `columns` to `out` as a JSON record;
    /// an error says what is wrong with the row.
    pub fn to_json(
        &self,
        columns: &[ArrayRef],
        row: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let user = &columns[self.user];
        if user.is_null(row) {
            return Err("the user id is null".into());
        }
        let items = &columns[self.items];
        if items.is_null(row) {
            return Err("the item list is null".into());
        }
        out.push(b'{');
        out.extend_from_slice(self.user_key.as_bytes());
        out.push(b':');
        write_value(user.as_ref(), row, out);
        out.push(b',');
        out.extend_from_slice(self.items_key.as_bytes());
        out.push(b':');
        let list = list_at(items.as_ref(), row);
        if list.null_count() > 0 {
            return Err("the item list holds a null".into());
        }
        write_value(items.as_ref(), row, out);
        for (i, key) in &self.others {
            let column = &columns[*i];
            if column.is_null(row) {
                continue;
            }
            out.push(b',');
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            write_value(column.as_ref(), row, out);
        }
        out.push(b'}');
        Ok(())
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The value type of a dictionary, or the type itself.
fn values_of(t: &DataType) -> &DataType {
    match t {
        DataType::Dictionary(_, v) => v,
        t => t,
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Whether [`write_value`] writes `t`, after [`plain`].
fn can_write(t: &DataType) -> bool {
    match values_of(t) {
        DataType::Null | DataType::Boolean | DataType::Float32 | DataType::Float64 => true,
        t if t.is_integer() || is_string(t) || becomes_string(t) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            can_write(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().all(|f| can_write(f.data_type())),
        _ => false,
    }
}

/// Types written as their string form (ISO dates and times, decimals).
fn becomes_string(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Float16
    )
}

/// `array` cast to the types [`write_value`] handles (top level only: nested
/// lists and structs keep their own types, which [`can_write`] checked).
fn plain(array: &ArrayRef) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let t = array.data_type();
    if let DataType::Dictionary(_, v) = t {
        let unpacked = arrow_cast::cast(array, v)?;
        return plain(&unpacked);
    }
    if becomes_string(t) {
        return arrow_cast::cast(array, &DataType::Utf8);
    }
    Ok(array.clone())
}

/// The values of list `array`'s row `row`.
fn list_at(array: &dyn Array, row: usize) -> ArrayRef {
    match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(row),
        DataType::LargeList(_) => array.as_list::<i64>().value(row),
        DataType::FixedSizeList(..) => array.as_fixed_size_list().value(row),
        _ => unreachable!("checked by from_schema"),
    }
}

/// Appends the JSON of `array[row]` (not null at the top) to `out`.
fn write_value(array: &dyn Array, row: usize, out: &mut Vec<u8>) {
    if array.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    match array.data_type() {
        DataType::Null => out.extend_from_slice(b"null"),
        DataType::Boolean => out.extend_from_slice(if array.as_boolean().value(row) {
            b"true"
        } else {
            b"false"
        }),
        t if t.is_integer() => out.extend_from_slice(
            integer_at(array, row, &mut itoa::Buffer::new())
                .unwrap_or("null")
                .as_bytes(),
        ),
        // serde_json writes the shortest text that reads back as the same
        // float (NaN and infinities, which JSON lacks, as null).
        DataType::Float32 => {
            serde_json::to_writer(&mut *out, &array.as_primitive::<Float32Type>().value(row))
                .unwrap_or_default()
        }
        DataType::Float64 => {
            serde_json::to_writer(&mut *out, &array.as_primitive::<Float64Type>().value(row))
                .unwrap_or_default()
        }
        DataType::Utf8 => serde_json::to_writer(&mut *out, array.as_string::<i32>().value(row))
            .unwrap_or_default(),
        DataType::LargeUtf8 => {
            serde_json::to_writer(&mut *out, array.as_string::<i64>().value(row))
                .unwrap_or_default()
        }
        DataType::Utf8View => {
            serde_json::to_writer(&mut *out, array.as_string_view().value(row)).unwrap_or_default()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let values = list_at(array, row);
            out.push(b'[');
            for i in 0..values.len() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(values.as_ref(), i, out);
            }
            out.push(b']');
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push(b'{');
            for (n, (f, column)) in fields.iter().zip(s.columns()).enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(json_string(f.name()).as_bytes());
                out.push(b':');
                write_value(column.as_ref(), row, out);
            }
            out.push(b'}');
        }
        // Nested dictionaries, dates and decimals: their display form.
        _ => match arrow_cast::display::ArrayFormatter::try_new(array, &Default::default()) {
            Ok(f) => {
                serde_json::to_writer(&mut *out, &f.value(row).to_string()).unwrap_or_default()
            }
            Err(_) => out.extend_from_slice(b"null"),
        },
    }
}

/// Shared by the planner and ingest: the Arrow view of a file's footer.
pub fn arrow_metadata(
    meta: Arc<ParquetMetaData>,
) -> Result<parquet::arrow::arrow_reader::ArrowReaderMetadata, String> {
    parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(meta, Default::default())
        .map_err(|e| format!("the Parquet schema cannot be read: {e}"))
}

/// Bytes read from the end of a file at first: most footers fit, so one read.
const FOOTER_GUESS: usize = 64 * 1024;

/// Rows decoded at once.
const BATCH_ROWS: usize = 8192;

/// Why a Parquet file could not be read.
#[derive(Debug)]
pub enum ParquetFault {
    /// The bytes could not be fetched (retry, or the file changed).
    Source(SourceError),
    /// The bytes are not a Parquet file arrow-rs can read.
    Corrupt(String),
}

impl ParquetFault {
    pub fn into_ingest(self, source_uri: &str) -> IngestError {
        match self {
            ParquetFault::Source(e) => IngestError::Source(e),
            ParquetFault::Corrupt(reason) => IngestError::Parquet {
                source_uri: source_uri.to_string(),
                reason,
            },
        }
    }

    pub fn into_plan(self, source_uri: &str) -> PlanError {
        match self {
            ParquetFault::Source(e) => PlanError::Source(e),
            ParquetFault::Corrupt(reason) => PlanError::Layout {
                source_uri: source_uri.to_string(),
                reason: ChunkError::Parquet(reason),
            },
        }
    }
}

/// Reads bytes for the footer reader, keeping a read failure aside so it is
/// not mistaken for a corrupt file.
struct Fetch<'a, S> {
    source: &'a S,
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    failed: &'a mut Option<SourceError>,
    /// The longest read allowed (the footer's limit), and the first longer
    /// one asked for.
    max_read: u64,
    oversize: &'a mut Option<u64>,
}

impl<S: ObjectSource> MetadataFetch for Fetch<'_, S> {
    fn fetch(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let len = range.end.saturating_sub(range.start);
            if len > self.max_read {
                *self.oversize = Some(len);
                return Err(ParquetError::General(format!("a {len}-byte footer read")));
            }
            match read_range(
                self.source,
                self.bucket,
                self.key,
                self.etag,
                range.start,
                range.end,
            )
            .await
            {
                Ok(bytes) => Ok(bytes),
                Err(e) => {
                    let message = e.to_string();
                    *self.failed = Some(e);
                    Err(ParquetError::General(message))
                }
            }
        }
        .boxed()
    }
}

/// The footer of the `size`-byte Parquet file at `bucket/key`.
pub async fn footer<S: ObjectSource>(
    source: &S,
    bucket: &str,
    key: &str,
    etag: &str,
    size: u64,
    max_footer: u64,
) -> Result<Arc<ParquetMetaData>, ParquetFault> {
    if size < 12 {
        return Err(ParquetFault::Corrupt(format!(
            "a {size}-byte file is too short to be Parquet"
        )));
    }
    let mut failed = None;
    let mut oversize = None;
    // The first read guesses the footer's size, within the limit; a second
    // one reads the whole footer, and must fit the limit too.
    let prefetch = (FOOTER_GUESS as u64).min(max_footer.saturating_add(8));
    let fetch = Fetch {
        source,
        bucket,
        key,
        etag,
        failed: &mut failed,
        max_read: prefetch.max(max_footer),
        oversize: &mut oversize,
    };
    let result = ParquetMetaDataReader::new()
        .with_prefetch_hint(Some(prefetch as usize))
        .load_and_finish(fetch, size)
        .await;
    if let (Err(_), Some(len)) = (&result, oversize) {
        return Err(ParquetFault::Corrupt(format!(
            "the Parquet footer is {len} bytes, more than FS_MAX_PARQUET_FOOTER_BYTES ({max_footer})"
        )));
    }
    match (result, failed) {
        (Ok(meta), _) => Ok(Arc::new(meta)),
        (Err(_), Some(e)) => Err(ParquetFault::Source(e)),
        (Err(e), None) => Err(ParquetFault::Corrupt(format!(
            "the Parquet footer cannot be read (truncated or corrupt): {e}"
        ))),
    }
}

/// Row group `index` of the chunk's file, as batches of rows: its column
/// chunks are read with one ranged read, then decoded from memory.
pub async fn row_group<S: ObjectSource>(
    source: &S,
    msg: &ChunkMessage,
    meta: &ArrowReaderMetadata,
    index: usize,
) -> Result<ParquetRecordBatchReader, ParquetFault> {
    let (from, to) = row_group_span(meta.metadata(), index);
    if from > to || to > msg.size {
        return Err(ParquetFault::Corrupt(format!(
            "row group {index} lies outside the file (bytes {from}..{to} of {})",
            msg.size
        )));
    }
    let bytes = read_range(source, &msg.bucket, &msg.key, &msg.etag, from, to)
        .await
        .map_err(ParquetFault::Source)?;
    let span = Span {
        offset: from,
        bytes,
        file_len: msg.size,
    };
    ParquetRecordBatchReaderBuilder::new_with_metadata(span, meta.clone())
        .with_row_groups(vec![index])
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| ParquetFault::Corrupt(format!("row group {index}: {e}")))
}

/// The bytes of one row group, standing in for the whole file.
struct Span {
    offset: u64,
    bytes: Bytes,
    file_len: u64,
}

impl Span {
    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let at = start
            .checked_sub(self.offset)
            .map(|a| a as usize)
            .filter(|&a| a <= self.bytes.len());
        let end = at.map(|a| length.map_or(self.bytes.len(), |l| a + l));
        match (at, end) {
            (Some(a), Some(e)) if e <= self.bytes.len() => Ok(self.bytes.slice(a..e)),
            _ => Err(ParquetError::EOF(format!(
                "bytes {start}.. are outside the row group's column chunks"
            ))),
        }
    }
}

impl Length for Span {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for Span {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_row_groups_are_planned_together_and_large_ones_alone() {
        assert_eq!(plan_sizes(&[10, 10, 10, 10], 25), vec![(0, 2), (2, 4)]);
        assert_eq!(plan_sizes(&[100, 1, 100], 25), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(plan_sizes(&[5], 25), vec![(0, 1)]);
        assert_eq!(plan_sizes(&[], 25), Vec::<(u64, u64)>::new());
    }
}
