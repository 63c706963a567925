//! JSON Lines: one record a line. The planner cuts the object into equal
//! byte ranges without reading it ([`plan_lines`]); a chunk owns every line
//! that *starts* in `[start, end)`. Ingest reads from `start - 1` to see
//! whether a line starts at `start`, and reads past `end` to finish the last
//! line it owns ([`LineCursor`]).

use futures::StreamExt;
use shared::config::PlannerConfig;

use super::{Chunk, ChunkFormat, Format, Layout, Object, BOM};
use crate::error::{At, IngestError, PlanError};
use crate::s3::source::ObjectSource;
use crate::write::{Found, Sink, Writer};

/// JSON Lines: one record a line.
pub(crate) struct JsonLines;

impl Format for JsonLines {
    async fn plan<S: ObjectSource>(
        object: &Object<'_, S>,
        config: &PlannerConfig,
    ) -> Result<Layout, PlanError> {
        Ok(by_lines(object, config, ChunkFormat::JsonLines))
    }

    async fn read<S: ObjectSource, K: Sink>(
        chunk: &Chunk<'_, S>,
        records: &mut Writer<'_, K>,
    ) -> Result<(), IngestError> {
        read_lines(chunk, records, |records, offset, line| {
            records.found(At::Byte(offset), line)
        })
        .await
    }
}

/// The layout of a line format (JSON Lines, CSV): equal byte ranges, or
/// one chunk for a compressed object, which cannot be read from the middle.
pub(crate) fn by_lines<S: ObjectSource>(
    object: &Object<'_, S>,
    config: &PlannerConfig,
    format: ChunkFormat,
) -> Layout {
    let ranges = if object.compression.is_none() {
        plan_lines(object.size, config.chunk_bytes)
    } else {
        vec![(0, u64::MAX)]
    };
    Layout {
        format,
        compression: object.compression,
        ranges,
        estimated_users: object.estimated_lines(),
        text_bytes: object.text_bytes,
    }
}

/// Hands each line the chunk of a line format owns to `each`, with its
/// offset, sending full rounds on between reads.
pub(crate) async fn read_lines<S: ObjectSource, K: Sink>(
    chunk: &Chunk<'_, S>,
    records: &mut Writer<'_, K>,
    mut each: impl FnMut(&mut Writer<'_, K>, u64, Found<'_>) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let mut cursor = LineCursor::new(chunk.msg.start, chunk.msg.end, chunk.max_record());
    let mut stream = chunk.text(cursor.fetch_from(), None).await?;
    while let Some(bytes) = stream.next().await {
        cursor.push(&bytes?, |offset, line| each(records, offset, line))?;
        records.send().await?;
        if cursor.is_done() {
            break;
        }
    }
    cursor.finish(|offset, line| each(records, offset, line))
}

/// Equal byte ranges over a JSON Lines object of `size` bytes.
pub fn plan_lines(size: u64, target: u64) -> Vec<(u64, u64)> {
    let target = target.max(1);
    (0..size.div_ceil(target))
        .map(|i| (i * target, ((i + 1) * target).min(size)))
        .collect()
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
    pub fn push<E>(
        &mut self,
        bytes: &[u8],
        mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
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
    fn lines<E>(
        &mut self,
        data: &[u8],
        f: &mut impl FnMut(u64, Found<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut consumed = 0;
        let result = loop {
            let Some(nl) = memchr::memchr(b'\n', &data[consumed..]) else {
                break Ok(());
            };
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
    fn after_lines<E>(
        &mut self,
        f: &mut impl FnMut(u64, Found<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
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
    pub fn finish<E>(
        &mut self,
        mut f: impl FnMut(u64, Found<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.done
            && !self.skip_first
            && self.discarding.is_none()
            && !self.buf.is_empty()
            && self.buf_offset < self.end
        {
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

fn emit<E>(
    offset: u64,
    line: &[u8],
    f: &mut impl FnMut(u64, Found<'_>) -> Result<(), E>,
) -> Result<(), E> {
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
