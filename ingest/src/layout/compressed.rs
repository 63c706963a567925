//! Compressed batches: gzip and zstd, told apart by their magic bytes, with
//! any of the text formats inside.
//!
//! A compressed object cannot be split by byte range, so it is one chunk,
//! streamed through the decompressor: memory is bounded by the decompressor's
//! window and the longest record, never by the object. (Within a multi-file
//! batch, files are the parallelism.) Offsets in a compressed object's plan
//! and in the errors it fails with are offsets in its decompressed text.

use std::pin::Pin;

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt};

/// How an object's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    #[default]
    None,
    /// One or more gzip members (RFC 1952), as `gzip` and Python's `gzip` write.
    Gzip,
    /// One or more Zstandard frames.
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Most decompressed bytes read from an object's head to sniff it: bounds the
/// planner's memory whatever the compression ratio.
pub const HEAD_LIMIT: usize = 4 << 20;

impl Compression {
    /// The compression of an object whose first bytes are `head`.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Compression::None
    }

    /// Its name in a version's format label (`json-lines+gzip`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Compression::None, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    /// A reader of `input`'s decompressed bytes (of `input` itself when not
    /// compressed). Concatenated members or frames are read as one stream.
    pub fn decoder<'a, R: AsyncBufRead + Send + Unpin + 'a>(
        self,
        input: R,
    ) -> Pin<Box<dyn AsyncRead + Send + 'a>> {
        match self {
            Compression::None => Box::pin(input),
            Compression::Gzip => {
                let mut d = GzipDecoder::new(input);
                d.multiple_members(true);
                Box::pin(d)
            }
            Compression::Zstd => {
                let mut d = ZstdDecoder::new(input);
                d.multiple_members(true);
                Box::pin(d)
            }
        }
    }

    /// Decompresses `head`, an object's first bytes (or all of them, when
    /// `whole`), up to [`HEAD_LIMIT`] bytes of text, for sniffing its format
    /// and estimating its records. A head that stops mid-stream is expected;
    /// the same in a whole object is corruption, and so is a head from which
    /// nothing decompresses.
    pub async fn head(self, head: &[u8], whole: bool) -> Result<Vec<u8>, String> {
        let mut reader = self.decoder(head).take(HEAD_LIMIT as u64);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if whole || out.is_empty() => return Err(self.corrupt(&e)),
                Err(_) => return Ok(out),
            }
        }
    }

    /// [`Compression::decoder`] that fails with [`Oversize`] once more than
    /// `limit` bytes have come out of a compressed `input`: a small file that
    /// decompresses without end (a decompression bomb) fails its version
    /// instead of keeping a planner or ingest busy.
    pub fn capped_decoder<'a, R: AsyncBufRead + Send + Unpin + 'a>(
        self,
        input: R,
        limit: u64,
    ) -> Pin<Box<dyn AsyncRead + Send + 'a>> {
        match self {
            Compression::None => Box::pin(input),
            c => Box::pin(Capped {
                inner: c.decoder(input),
                left: limit,
                limit,
            }),
        }
    }

    /// Why a stream of this compression could not be read: what a version
    /// that fails on it says.
    pub fn corrupt(self, e: &std::io::Error) -> String {
        if let Some(o) = e.get_ref().and_then(|i| i.downcast_ref::<Oversize>()) {
            return format!("the {} stream {o}", self.as_str());
        }
        format!("the {} stream is corrupt or cut short ({e})", self.as_str())
    }
}

/// A compressed stream decompressed past its limit.
#[derive(Debug)]
pub struct Oversize {
    pub limit: u64,
}

impl std::fmt::Display for Oversize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "decompresses to more than {} bytes, past FS_MAX_DECOMPRESSED_BYTES",
            self.limit
        )
    }
}

impl std::error::Error for Oversize {}

/// A reader that fails once it has given `limit` bytes and has more.
struct Capped<'a> {
    inner: Pin<Box<dyn AsyncRead + Send + 'a>>,
    left: u64,
    limit: u64,
}

impl AsyncRead for Capped<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let n = (buf.filled().len() - before) as u64;
            match self.left.checked_sub(n) {
                Some(left) => self.left = left,
                None => {
                    let limit = self.limit;
                    return std::task::Poll::Ready(Err(std::io::Error::other(Oversize { limit })));
                }
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_tell_the_compressions_apart() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"{\"userId\": 1}"), Compression::None);
        assert_eq!(Compression::detect(&[0x1f]), Compression::None);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
        }
    }

    #[tokio::test]
    async fn a_head_that_is_not_the_format_is_an_error_and_a_cut_one_is_not() {
        // Gzip's magic, then nothing gzip.
        let bogus = [
            0x1f, 0x8b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(Compression::Gzip
            .head(&bogus, false)
            .await
            .unwrap_err()
            .contains("corrupt or cut short"));
        let fixture = include_bytes!("../../../tests/fixtures/bad/gzip.jsonl.gz");
        let whole = Compression::Gzip.head(fixture, true).await.unwrap();
        assert!(
            whole.starts_with(b"{\"userId\": 1000,"),
            "{:?}",
            &whole[..20]
        );
        let cut = Compression::Gzip
            .head(&fixture[..fixture.len() / 2], false)
            .await
            .unwrap();
        assert!(!cut.is_empty() && whole.starts_with(&cut));
        assert!(Compression::Gzip
            .head(&fixture[..fixture.len() / 2], true)
            .await
            .is_err());
    }
}
