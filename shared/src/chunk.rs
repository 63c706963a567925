//! Splitting a batch object into user-range chunks, and finding the records
//! of one chunk again on the ingest side.
//!
//! Invariant (property-tested below): for any file and any chunk size, every
//! record lands in exactly one chunk.
//! - **JSON Lines** needs no scan: the planner cuts the object into equal byte
//!   ranges, and a chunk owns every line that *starts* in `[start, end)`.
//!   Ingest reads from `start - 1` to see whether a line starts at `start`, and
//!   reads past `end` to finish the last line it owns ([`LineCursor`]).
//! - **JSON documents** (a pandas `orient="table"` document, or a top-level
//!   array) are scanned once, streaming ([`DocScanner`]), to cut the records
//!   array at commas between elements; each chunk holds whole elements,
//!   which ingest reads back as they stream in ([`ElementCursor`]).
//!
//! On both sides memory is bounded by the read size and the longest record
//! allowed, never by the chunk or the object.

use crate::messages::ChunkFormat;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Inside a JSON string, where only an unescaped quote ends it. The three
/// scans here ([`sniff`], [`DocScanner`], [`ElementCursor`]) share it.
#[derive(Debug, Default, Clone, Copy)]
struct InString {
    escaped: bool,
}

impl InString {
    /// How many of `bytes` cannot end the string and can be skipped: up to
    /// the next quote or backslash.
    fn plain_run(&self, bytes: &[u8]) -> usize {
        if self.escaped {
            0
        } else {
            memchr::memchr2(b'"', b'\\', bytes).unwrap_or(bytes.len())
        }
    }

    /// Reads one byte of the string; whether it ends it.
    fn ends_at(&mut self, b: u8) -> bool {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            return true;
        }
        false
    }
}

/// Why a batch object cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("the batch is empty")]
    Empty,
    #[error("unknown batch format: expected JSON Lines, a JSON array, or a table document (first byte {0:?})")]
    UnknownFormat(char),
    #[error("no records array found: expected a top-level array or a `data` array in a table document")]
    NoRecords,
    #[error("the document ends early at byte {0} (truncated or unbalanced)")]
    Truncated(u64),
    #[error("unexpected content after the document at byte {0}")]
    TrailingContent(u64),
}

/// Decides the layout of a batch from its first bytes (64 KiB is plenty).
/// `user_field` tells a record (`{"userId": …}`) from a table document.
pub fn sniff(prefix: &[u8], user_field: &str) -> Result<ChunkFormat, ChunkError> {
    let body = prefix.strip_prefix(BOM).unwrap_or(prefix);
    let first = body.iter().position(|b| !b.is_ascii_whitespace()).ok_or(ChunkError::Empty)?;
    match body[first] {
        b'[' => Ok(ChunkFormat::JsonElements),
        b'{' => {
            // Walk the first object's top-level keys: a record has the user
            // field there, a table document has `schema` or `data`.
            let mut depth = 0u32;
            let mut string: Option<InString> = None;
            let mut key_start = None;
            let mut expect_key = false;
            for (i, &b) in body.iter().enumerate().skip(first) {
                if let Some(s) = string.as_mut() {
                    if s.ends_at(b) {
                        string = None;
                        if let Some(s) = key_start.take() {
                            let key = &body[s..i];
                            if key == user_field.as_bytes() {
                                return Ok(ChunkFormat::JsonLines);
                            }
                            if key == b"data" || key == b"schema" {
                                return Ok(ChunkFormat::JsonElements);
                            }
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => {
                        string = Some(InString::default());
                        if depth == 1 && expect_key {
                            key_start = Some(i + 1);
                            expect_key = false;
                        }
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        expect_key = depth == 1;
                    }
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' => expect_key = depth == 1,
                    _ => {}
                }
            }
            Ok(ChunkFormat::JsonLines)
        }
        other => Err(ChunkError::UnknownFormat(other as char)),
    }
}

/// Equal byte ranges over a JSON Lines object of `size` bytes.
pub fn plan_lines(size: u64, target: u64) -> Vec<(u64, u64)> {
    let target = target.max(1);
    (0..size.div_ceil(target)).map(|i| (i * target, ((i + 1) * target).min(size))).collect()
}

/// The result of scanning a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocPlan {
    /// Byte ranges of whole elements of the records array.
    pub chunks: Vec<(u64, u64)>,
    /// Number of elements (records) in the array.
    pub elements: u64,
}

/// Bytes that matter inside an element (brackets and quotes): the rest is
/// skipped in bulk by [`DocScanner`] and [`ElementEnd`].
const STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'[' as usize] = true;
    t[b'}' as usize] = true;
    t[b']' as usize] = true;
    t
};

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
            plan: DocPlan { chunks: Vec::new(), elements: 0 },
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
                    && ((self.depth == 0) || (self.depth == 1 && self.top_is_object && self.last_key_is_data));
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
        if self.pos == 0 || (self.mode == Mode::Searching && self.depth == 0 && self.string.is_none()) {
            return Err(if self.pos == 0 { ChunkError::Empty } else { ChunkError::NoRecords });
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

/// A record found in a chunk by [`LineCursor`] or [`ElementCursor`].
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A whole record's bytes (a line without its `\n` or a trailing `\r`,
    /// or an element), not yet checked as JSON.
    Record(&'a [u8]),
    /// A record longer than the cursor's limit; its bytes are skipped.
    TooLong,
}

/// Why [`ElementCursor`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ElementStop<E> {
    /// The element at this offset never ends: the range stops inside it.
    Unterminated(u64),
    /// The handler's own error.
    Handler(E),
}

/// Finds the elements of a [`ChunkFormat::JsonElements`] range in its bytes,
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
        ElementCursor { max: max.max(1), offset: start, buf: Vec::new(), current: None, skipping: false }
    }

    /// Feeds the next bytes; calls `f(offset, element)` for each element
    /// they complete.
    pub fn push<E>(&mut self, bytes: &[u8], mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>) -> Result<(), ElementStop<E>> {
        let base = self.offset;
        self.offset += bytes.len() as u64;
        let mut i = 0;
        loop {
            let (start, scan) = match self.current.as_mut() {
                Some(current) => current,
                None => {
                    // Between elements: separators.
                    match bytes[i..].iter().position(|b| !(b.is_ascii_whitespace() || *b == b',')) {
                        Some(k) => i += k,
                        None => return Ok(()),
                    }
                    self.current.insert((base + i as u64, ElementEnd::default()))
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
    pub fn finish<E>(&mut self, mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>) -> Result<(), ElementStop<E>> {
        let Some((start, scan)) = self.current.take() else { return Ok(()) };
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
    if element.len() > max { Found::TooLong } else { Found::Record(element) }
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
                None if self.depth > 0 => i += bytes[i..].iter().position(|&b| STRUCTURAL[usize::from(b)])?,
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
                b',' | b' ' | b'\n' | b'\r' | b'\t' if self.depth == 0 && self.started => return Some(i - 1),
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


/// Finds the lines a JSON Lines chunk owns in a byte stream that starts at
/// [`LineCursor::fetch_from`]: feed pieces with [`push`](Self::push) until it
/// reports the chunk complete, then call [`finish`](Self::finish). Memory is
/// bounded by the longest line allowed, whatever the input.
#[derive(Debug)]
pub struct LineCursor {
    end: u64,
    max_line: usize,
    /// Offset of `buf[0]` in the object.
    buf_offset: u64,
    buf: Vec<u8>,
    skip_first: bool,
    /// Skipping the rest of an over-long line that started at this offset.
    discarding: Option<u64>,
    done: bool,
}

impl LineCursor {
    /// A cursor for the chunk `[start, end)` with lines of at most `max_line` bytes.
    pub fn new(start: u64, end: u64, max_line: usize) -> Self {
        LineCursor {
            end,
            max_line: max_line.max(1),
            buf_offset: start.saturating_sub(1),
            buf: Vec::new(),
            skip_first: start > 0,
            discarding: None,
            done: false,
        }
    }

    /// Where the read must start: one byte before the chunk, to see whether a
    /// line starts exactly at `start`.
    pub fn fetch_from(&self) -> u64 {
        self.buf_offset
    }

    /// Whether every line the chunk owns has been handed out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds the next bytes; calls `f(offset, line)` for each line the chunk
    /// owns (blank lines skipped).
    pub fn push<E>(&mut self, bytes: &[u8], mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.done {
            return Ok(());
        }
        let mut rest = bytes;
        if !self.buf.is_empty() {
            // Complete the buffered partial line first, then read the rest in place.
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.buf.extend_from_slice(rest);
                return self.after_lines(&mut f);
            };
            self.buf.extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
            let buf = std::mem::take(&mut self.buf);
            let scanned = self.lines(&buf, &mut f);
            self.buf = buf;
            self.buf.clear();
            scanned?;
        }
        if !self.done {
            let consumed = self.lines(rest, &mut f)?;
            if !self.done {
                self.buf.extend_from_slice(&rest[consumed..]);
            }
        }
        self.after_lines(&mut f)
    }

    /// Hands out the whole lines of `data` (which starts at `buf_offset`),
    /// moving `buf_offset` past them; returns how many bytes they took.
    fn lines<E>(&mut self, data: &[u8], f: &mut impl FnMut(u64, Found<'_>) -> Result<(), E>) -> Result<usize, E> {
        let mut consumed = 0;
        let result = loop {
            let Some(nl) = memchr::memchr(b'\n', &data[consumed..]) else { break Ok(()) };
            let line = &data[consumed..consumed + nl];
            let offset = self.buf_offset + consumed as u64;
            consumed += nl + 1;
            if self.skip_first {
                self.skip_first = false;
                continue;
            }
            if let Some(start) = self.discarding.take() {
                // The tail of an over-long line, already reported.
                if self.buf_offset + consumed as u64 >= self.end && start < self.end {
                    self.done = true;
                    break Ok(());
                }
                continue;
            }
            if offset >= self.end {
                self.done = true;
                break Ok(());
            }
            let handed = if line.strip_suffix(b"\r").unwrap_or(line).len() > self.max_line {
                f(offset, Found::TooLong)
            } else {
                emit(offset, line, f)
            };
            if let Err(e) = handed {
                break Err(e);
            }
            if self.buf_offset + consumed as u64 >= self.end {
                self.done = true;
                break Ok(());
            }
        };
        self.buf_offset += consumed as u64;
        result.map(|()| consumed)
    }

    /// What follows the whole lines of a push: the partial line in `buf`.
    fn after_lines<E>(&mut self, f: &mut impl FnMut(u64, Found<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.done {
            return Ok(());
        }
        if self.skip_first {
            // Inside a line that started before the chunk: its bytes are not
            // ours, and once past `end` no line can start in the chunk.
            self.buf_offset += self.buf.len() as u64;
            self.buf.clear();
            if self.buf_offset >= self.end {
                self.done = true;
            }
            return Ok(());
        }
        // A partial line past the limit (and room for a `\r`): report it
        // once, then drop its bytes.
        if !self.done && self.buf.len() > self.max_line.saturating_add(1) {
            if self.discarding.is_none() {
                if self.buf_offset >= self.end {
                    self.done = true;
                    return Ok(());
                }
                self.discarding = Some(self.buf_offset);
                f(self.buf_offset, Found::TooLong)?;
            }
            self.buf_offset += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Ends the stream: the last line may have no newline.
    pub fn finish<E>(&mut self, mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>) -> Result<(), E> {
        if !self.done && !self.skip_first && self.discarding.is_none() && !self.buf.is_empty() && self.buf_offset < self.end {
            let line = std::mem::take(&mut self.buf);
            if line.strip_suffix(b"\r").unwrap_or(&line).len() > self.max_line {
                f(self.buf_offset, Found::TooLong)?;
            } else {
                emit(self.buf_offset, &line, &mut f)?;
            }
        }
        self.done = true;
        Ok(())
    }
}

fn emit<E>(offset: u64, line: &[u8], f: &mut impl FnMut(u64, Found<'_>) -> Result<(), E>) -> Result<(), E> {
    let mut line = line;
    if offset == 0 {
        line = line.strip_prefix(BOM).unwrap_or(line);
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    f(offset, Found::Record(line))
}


#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines_max(data: &[u8], start: u64, end: u64, piece: usize, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut c = LineCursor::new(start, end, max);
        let mut out = Vec::new();
        let from = c.fetch_from() as usize;
        let mut take = |o: u64, l: Found<'_>| -> Result<(), ()> {
            out.push((o, match l { Found::Record(r) => r.to_vec(), Found::TooLong => b"<too long>".to_vec() }));
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
    fn elements_in(doc: &[u8], start: usize, end: usize, piece: usize, max: usize) -> Result<Vec<(u64, String)>, ElementStop<()>> {
        let mut cursor = ElementCursor::new(start as u64, max);
        let mut out = Vec::new();
        let mut take = |o: u64, el: Found<'_>| -> Result<(), ()> {
            out.push((o, match el { Found::Record(r) => String::from_utf8_lossy(r).into_owned(), Found::TooLong => "<too long>".to_string() }));
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
            out.extend(elements_in(doc, s as usize, e as usize, piece, usize::MAX).unwrap().into_iter().map(|(_, el)| el));
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
            assert_eq!(elements_in(range, 0, range.len(), piece, 1000), Ok(want.clone()), "pieces of {piece}");
        }
    }

    #[test]
    fn over_long_elements_are_reported_once_in_place_and_skipped() {
        let range = br#"{"userId": 1, "movieId": [1, 2, 3, 4, 5, 6, 7]}, {"userId": 2, "movieId": []}, {"userId": "}\"{", "movieId": [[[[[[[[1]]]]]]]]}, 7"#;
        for piece in [1, 5, 16, 1000] {
            let got = elements_in(range, 0, range.len(), piece, 35).unwrap();
            assert_eq!(
                got,
                vec![(0, "<too long>".to_string()), (49, r#"{"userId": 2, "movieId": []}"#.to_string()), (79, "<too long>".to_string()), (129, "7".to_string())],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn malformed_elements_are_handed_out_and_unterminated_ones_stop_the_scan() {
        for piece in [1, 4, 1000] {
            // Whether an element is valid JSON is the record parser's to say.
            let got = elements_in(br#"{"userId": 1}, {"userId": 2,, } }, x"#, 0, 36, piece, 1000);
            let want = vec![(0, r#"{"userId": 1}"#.to_string()), (15, r#"{"userId": 2,, }"#.to_string()), (32, "}".to_string()), (35, "x".to_string())];
            assert_eq!(got, Ok(want), "pieces of {piece}");
            assert_eq!(elements_in(br#"{"userId": 1}, {"userId": 2"#, 0, 27, piece, 1000), Err(ElementStop::Unterminated(15)), "pieces of {piece}");
            assert_eq!(elements_in(br#"{"userId": 1}, "abc"#, 0, 19, piece, 1000), Err(ElementStop::Unterminated(15)), "pieces of {piece}");
            assert_eq!(elements_in(br#"{"userId": 1}, {"userId": "2"#, 0, 28, piece, 8), Err(ElementStop::Unterminated(15)), "pieces of {piece}");
        }
    }

    #[test]
    fn sniff_tells_the_formats_apart() {
        let u = "userId";
        assert_eq!(sniff(b"{\"userId\": 1, \"movieId\": [1]}\n", u), Ok(ChunkFormat::JsonLines));
        assert_eq!(sniff(b"{\"movieId\": [{\"data\":1}], \"userId\": 1}\n", u), Ok(ChunkFormat::JsonLines));
        assert_eq!(sniff(b"\xEF\xBB\xBF{\"userId\": 1}", u), Ok(ChunkFormat::JsonLines));
        assert_eq!(sniff(b"{\"schema\": {\"fields\": []}, \"data\": [", u), Ok(ChunkFormat::JsonElements));
        assert_eq!(sniff(b"{\n  \"data\": [\n {\"userId\": 1", u), Ok(ChunkFormat::JsonElements));
        assert_eq!(sniff(b"  [ {\"userId\": 1}]", u), Ok(ChunkFormat::JsonElements));
        assert_eq!(sniff(b"  \n ", u), Err(ChunkError::Empty));
        assert_eq!(sniff(b"\x1f\x8b\x08", u), Err(ChunkError::UnknownFormat('\x1f')));
    }

    #[test]
    fn table_document_with_keys_in_any_order() {
        let doc = br#"{"data": [{"movieId": [2012, 553], "userId": 1}, {"movieId": [1704], "userId": 2}], "schema": {"fields": [{"name": "data"}], "primaryKey": ["userId"], "pandas_version": "0.20.0"}}"#;
        let plan = scan(doc, 1, 7).unwrap();
        assert_eq!(plan.elements, 2);
        assert_eq!(plan.chunks.len(), 2);
        assert_eq!(
            elements_of(doc, &plan, 5),
            vec![r#"{"movieId": [2012, 553], "userId": 1}"#, r#"{"movieId": [1704], "userId": 2}"#]
        );
        let schema_first = br#"{"schema": {"fields": [], "data": [1]}, "data": [{"userId": 1, "movieId": []}]}"#;
        let plan = scan(schema_first, 1000, 3).unwrap();
        assert_eq!(plan.elements, 1);
    }

    #[test]
    fn broken_documents_are_errors() {
        assert_eq!(scan(b"", 10, 1), Err(ChunkError::Empty));
        assert_eq!(scan(br#"{"schema": {}}"#, 10, 1), Err(ChunkError::NoRecords));
        assert!(matches!(scan(br#"{"data": [{"userId": 1}"#, 10, 4), Err(ChunkError::Truncated(_))));
        assert!(matches!(scan(br#"[{"userId": "a"#, 10, 4), Err(ChunkError::Truncated(_))));
        assert!(matches!(scan(br#"[{"userId": 1}] x"#, 10, 4), Err(ChunkError::TrailingContent(_))));
        assert!(matches!(scan(br#"[]]"#, 10, 4), Err(ChunkError::TrailingContent(_))));
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
        let lines: Vec<_> = got.iter().map(|(_, l)| String::from_utf8(l.clone()).unwrap()).collect();
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
            c.push::<()>(p, |_, l| panic!("owns nothing, got {l:?}")).unwrap();
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
            let got: Vec<String> =
                lines_max(data.as_bytes(), 0, data.len() as u64, piece, 20).into_iter().map(|(_, l)| String::from_utf8(l).unwrap()).collect();
            assert_eq!(got, vec!["{\"a\":1}", "<too long>", "{\"b\":2}"], "piece {piece}");
        }
    }

    fn record_strategy() -> impl Strategy<Value = String> {
        // Records with strings that contain commas, brackets, quotes and
        // newlines-as-escapes, so naive splitting would fail.
        (any::<u32>(), proptest::collection::vec("[a-z,\\[\\]{}\" ]{0,6}", 0..5)).prop_map(|(id, items)| {
            let items: Vec<String> = items.into_iter().map(|s| serde_json::to_string(&s).unwrap()).collect();
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
}
