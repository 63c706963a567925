// Over 500 lines: JSON documents: the scanner that plans them and the cursor that reads their elements, which share one grammar.
//! JSON documents: a pandas `DataFrame.to_json(orient="table")` document,
//! or a top-level array of records. The planner scans the document once,
//! streaming ([`DocScanner`]), to cut the records array at commas between
//! elements; each chunk holds whole elements, which ingest reads back as they
//! stream in ([`ElementCursor`]).

use futures::StreamExt;
use shared::config::PlannerConfig;
use shared::record::json::{InString, STRUCTURAL};
use tokio::io::AsyncReadExt;

use super::{Chunk, ChunkFormat, Format, Layout, Object, BOM};
use crate::error::ChunkError;
use crate::error::{At, IngestError, PlanError};
use crate::s3::source::ObjectSource;
use crate::write::{Found, Sink, Writer};

/// A JSON array of records, or a pandas table document.
pub(crate) struct JsonDocument;

impl Format for JsonDocument {
    /// Scans the whole document once, streaming. A compressed document is
    /// scanned decompressed, and is one chunk.
    async fn plan<S: ObjectSource>(
        object: &Object<'_, S>,
        config: &PlannerConfig,
    ) -> Result<Layout, PlanError> {
        let target = if object.compression.is_none() {
            config.chunk_bytes
        } else {
            u64::MAX
        };
        let mut scanner = DocScanner::new(target);
        let mut text = object.text().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = text
                .read(&mut buf)
                .await
                .map_err(|e| object.text_error(e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            scanner.feed(&buf[..n]);
        }
        let plan = scanner.finish().map_err(|e| object.error(e))?;
        if plan.elements == 0 {
            return Err(object.error(ChunkError::Empty));
        }
        let format = ChunkFormat::JsonElements;
        Ok(Layout {
            format,
            compression: object.compression,
            ranges: plan.chunks,
            estimated_users: plan.elements,
            text_bytes: total,
        })
    }

    async fn read<S: ObjectSource, K: Sink>(
        chunk: &Chunk<'_, S>,
        records: &mut Writer<'_, K>,
    ) -> Result<(), IngestError> {
        let msg = chunk.msg;
        let stopped = |stop| match stop {
            ElementStop::Unterminated(offset) => IngestError::Unterminated {
                source_uri: chunk.source_uri(),
                chunk: msg.chunk,
                offset,
            },
            ElementStop::Handler(e) => e,
        };
        let mut cursor = ElementCursor::new(msg.start, chunk.max_record());
        let mut stream = chunk.text(msg.start, Some(msg.end)).await?;
        while let Some(bytes) = stream.next().await {
            cursor
                .push(&bytes?, |offset, element| {
                    records.found(At::Byte(offset), element)
                })
                .map_err(stopped)?;
            records.send().await?;
        }
        cursor
            .finish(|offset, element| records.found(At::Byte(offset), element))
            .map_err(stopped)
    }
}

/// The result of scanning a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocPlan {
    /// Byte ranges of whole elements of the records array.
    pub chunks: Vec<(u64, u64)>,
    /// Number of elements (records) in the array.
    pub elements: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Searching,
    InArray { depth: u32 },
    Done,
}

/// Streaming scanner over a JSON document: feed it the object's bytes in
/// order, in pieces of any size, and it cuts the records array into chunks of
/// about `target` bytes. Memory stays constant whatever the document size.
#[derive(Debug)]
pub struct DocScanner {
    target: u64,
    pos: u64,
    depth: u32,
    string: Option<InString>,
    top_is_object: bool,
    expect_key: bool,
    key: Option<Vec<u8>>,
    last_key_is_data: bool,
    mode: Mode,
    in_element: bool,
    chunk_start: u64,
    chunk_has_element: bool,
    plan: DocPlan,
    error: Option<ChunkError>,
}

impl DocScanner {
    pub fn new(target: u64) -> Self {
        DocScanner {
            target: target.max(1),
            pos: 0,
            depth: 0,
            string: None,
            top_is_object: false,
            expect_key: false,
            key: None,
            last_key_is_data: false,
            mode: Mode::Searching,
            in_element: false,
            chunk_start: 0,
            chunk_has_element: false,
            plan: DocPlan {
                chunks: Vec::new(),
                elements: 0,
            },
            error: None,
        }
    }

    /// Scans the next bytes of the document.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.pos == 0 && bytes.starts_with(BOM) {
            bytes = &bytes[BOM.len()..];
            self.pos = BOM.len() as u64;
        }
        let base = self.pos;
        let mut i = 0;
        while i < bytes.len() && self.error.is_none() {
            // Runs of bytes that cannot change the state are skipped in bulk:
            // a string's contents up to its end or an escape, and inside an
            // element, everything but brackets and quotes.
            if let Some(s) = self.string {
                if self.key.is_none() {
                    i += s.plain_run(&bytes[i..]);
                    if i == bytes.len() {
                        break;
                    }
                }
            } else if matches!(self.mode, Mode::InArray { depth } if self.depth > depth) {
                match bytes[i..].iter().position(|&b| STRUCTURAL[usize::from(b)]) {
                    Some(k) => i += k,
                    None => break,
                }
            }
            self.pos = base + i as u64;
            self.step(bytes[i]);
            i += 1;
        }
        self.pos = base + bytes.len() as u64;
    }

    fn step(&mut self, b: u8) {
        if self.error.is_some() {
            return;
        }
        if let Some(s) = self.string.as_mut() {
            if s.ends_at(b) {
                self.string = None;
                if let Some(k) = self.key.take() {
                    self.last_key_is_data = k == b"data";
                }
            } else if let Some(k) = self.key.as_mut() {
                if k.len() < 8 {
                    k.push(b);
                } else {
                    k.clear();
                    k.extend_from_slice(b"<long>");
                }
            }
            return;
        }
        if b.is_ascii_whitespace() {
            return;
        }
        if self.depth == 0 && self.mode == Mode::Done {
            self.error = Some(ChunkError::TrailingContent(self.pos));
            return;
        }
        if let Mode::InArray { depth } = self.mode {
            if self.depth == depth {
                match b {
                    b',' => {
                        self.in_element = false;
                        if self.pos - self.chunk_start >= self.target && self.chunk_has_element {
                            self.plan.chunks.push((self.chunk_start, self.pos));
                            self.chunk_start = self.pos + 1;
                            self.chunk_has_element = false;
                        }
                        return;
                    }
                    b']' => {
                        if self.chunk_has_element {
                            self.plan.chunks.push((self.chunk_start, self.pos));
                        }
                        self.mode = Mode::Done;
                        self.depth -= 1;
                        return;
                    }
                    _ if !self.in_element => {
                        self.in_element = true;
                        self.chunk_has_element = true;
                        self.plan.elements += 1;
                    }
                    _ => {}
                }
            }
        }
        match b {
            b'"' => {
                self.string = Some(InString::default());
                if self.top_is_object && self.depth == 1 && self.expect_key {
                    self.key = Some(Vec::new());
                    self.expect_key = false;
                }
            }
            b'{' | b'[' => {
                let opens_records = self.mode == Mode::Searching
                    && b == b'['
                    && ((self.depth == 0)
                        || (self.depth == 1 && self.top_is_object && self.last_key_is_data));
                if self.depth == 0 && b == b'{' {
                    self.top_is_object = true;
                }
                self.depth += 1;
                self.expect_key = self.depth == 1 && b == b'{';
                if opens_records {
                    self.mode = Mode::InArray { depth: self.depth };
                    self.chunk_start = self.pos + 1;
                }
            }
            b'}' | b']' => {
                if self.depth == 0 {
                    self.error = Some(ChunkError::Truncated(self.pos));
                    return;
                }
                self.depth -= 1;
                if self.depth == 0 && self.mode == Mode::Searching {
                    // The top-level value closed without a records array.
                    self.mode = Mode::Done;
                    self.error = Some(ChunkError::NoRecords);
                }
            }
            b',' if self.depth == 1 => {
                self.expect_key = self.top_is_object;
                self.last_key_is_data = false;
            }
            _ => {}
        }
    }

    /// Ends the scan at the end of the object.
    pub fn finish(self) -> Result<DocPlan, ChunkError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.pos == 0
            || (self.mode == Mode::Searching && self.depth == 0 && self.string.is_none())
        {
            return Err(if self.pos == 0 {
                ChunkError::Empty
            } else {
                ChunkError::NoRecords
            });
        }
        if self.depth != 0 || self.string.is_some() {
            return Err(ChunkError::Truncated(self.pos));
        }
        match self.mode {
            Mode::Done => Ok(self.plan),
            _ => Err(ChunkError::NoRecords),
        }
    }
}

/// Why [`ElementCursor`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ElementStop<E> {
    /// The element at this offset never ends: the range stops inside it.
    Unterminated(u64),
    /// The handler's own error.
    Handler(E),
}

/// Finds the elements of a [`super::ChunkFormat::JsonElements`] range in its bytes,
/// fed in pieces of any size with [`push`](Self::push), then
/// [`finish`](Self::finish). An element ends where its brackets (or its
/// string) close, found by the same structure the planner cut the range by;
/// whether it is valid JSON is the record parser's to say, so a malformed
/// element is one bad record, as a malformed line is. Elements are handed
/// out from the pieces themselves where they fit; memory is bounded by the
/// longest element allowed, whatever the range's size.
#[derive(Debug)]
pub struct ElementCursor {
    max: usize,
    /// Offset in the object of the next byte pushed.
    offset: u64,
    /// The start of an element that began in an earlier piece.
    buf: Vec<u8>,
    /// The element being read, if any: where it started, and the scan.
    current: Option<(u64, ElementEnd)>,
    /// The current element is over the limit, reported, and being dropped.
    skipping: bool,
}

impl ElementCursor {
    /// A cursor for the range starting at `start`, with elements of at most `max` bytes.
    pub fn new(start: u64, max: usize) -> Self {
        ElementCursor {
            max: max.max(1),
            offset: start,
            buf: Vec::new(),
            current: None,
            skipping: false,
        }
    }

    /// Feeds the next bytes; calls `f(offset, element)` for each element
    /// they complete.
    pub fn push<E>(
        &mut self,
        bytes: &[u8],
        mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>,
    ) -> Result<(), ElementStop<E>> {
        let base = self.offset;
        self.offset += bytes.len() as u64;
        let mut i = 0;
        loop {
            let (start, scan) = match self.current.as_mut() {
                Some(current) => current,
                None => {
                    // Between elements: separators.
                    match bytes[i..]
                        .iter()
                        .position(|b| !(b.is_ascii_whitespace() || *b == b','))
                    {
                        Some(k) => i += k,
                        None => return Ok(()),
                    }
                    self.current
                        .insert((base + i as u64, ElementEnd::default()))
                }
            };
            let from = i;
            let Some(n) = scan.advance(&bytes[i..]) else {
                // The element goes on in the next piece.
                if !self.skipping {
                    self.buf.extend_from_slice(&bytes[from..]);
                    if self.buf.len() > self.max {
                        let start = *start;
                        self.buf.clear();
                        self.skipping = true;
                        f(start, Found::TooLong).map_err(ElementStop::Handler)?;
                    }
                }
                return Ok(());
            };
            i += n;
            let start = *start;
            let element = if self.skipping {
                None
            } else if self.buf.is_empty() {
                Some(&bytes[from..i])
            } else {
                self.buf.extend_from_slice(&bytes[from..i]);
                Some(&self.buf[..])
            };
            let handed = match element {
                Some(e) => f(start, found(e, self.max)),
                None => Ok(()),
            };
            self.current = None;
            self.skipping = false;
            self.buf.clear();
            handed.map_err(ElementStop::Handler)?;
        }
    }

    /// Ends the range: an element still open must be a bare value (a number,
    /// say), which ends with the range.
    pub fn finish<E>(
        &mut self,
        mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>,
    ) -> Result<(), ElementStop<E>> {
        let Some((start, scan)) = self.current.take() else {
            return Ok(());
        };
        if !scan.is_bare_value() {
            return Err(ElementStop::Unterminated(start));
        }
        let skipping = std::mem::take(&mut self.skipping);
        let buf = std::mem::take(&mut self.buf);
        if skipping {
            return Ok(());
        }
        f(start, found(&buf, self.max)).map_err(ElementStop::Handler)
    }
}

/// A whole element, or [`Found::TooLong`] past `max` bytes.
fn found(element: &[u8], max: usize) -> Found<'_> {
    if element.len() > max {
        Found::TooLong
    } else {
        Found::Record(element)
    }
}

/// Where an element ends, from its structure alone: brackets and strings
/// (with their escapes), and for a bare value, the first separator.
#[derive(Debug, Default)]
struct ElementEnd {
    depth: u32,
    string: Option<InString>,
    started: bool,
}

impl ElementEnd {
    /// Reads on through the element; returns how many of `bytes` it took
    /// when it ended in them.
    fn advance(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            // Runs that cannot end the element are skipped in bulk: a
            // string's contents, and inside brackets all but brackets and quotes.
            match self.string.as_mut() {
                Some(s) => {
                    i += s.plain_run(&bytes[i..]);
                    let b = *bytes.get(i)?;
                    i += 1;
                    if s.ends_at(b) {
                        self.string = None;
                        if self.depth == 0 {
                            return Some(i);
                        }
                    }
                    continue;
                }
                None if self.depth > 0 => {
                    i += bytes[i..]
                        .iter()
                        .position(|&b| STRUCTURAL[usize::from(b)])?
                }
                None => {}
            }
            let b = bytes[i];
            i += 1;
            match b {
                b'"' => self.string = Some(InString::default()),
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i);
                    }
                }
                // A bare value ends where a separator starts.
                b',' | b' ' | b'\n' | b'\r' | b'\t' if self.depth == 0 && self.started => {
                    return Some(i - 1)
                }
                _ => {}
            }
            self.started = true;
        }
        None
    }

    /// Whether the element is a bare value so far (it ends with the input).
    fn is_bare_value(&self) -> bool {
        self.started && self.depth == 0 && self.string.is_none()
    }
}
