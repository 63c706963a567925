//! The one JSON string scanner every format shares.
//!
//! Finding where a record, an element or a document ends needs only two
//! things from JSON: where strings end (an unescaped quote; a backslash
//! escapes the next byte) and which bytes are brackets. [`InString`] is the
//! first, [`STRUCTURAL`] the second; the format sniffer, the document scanner,
//! the element cursor and the record checks all use these, so an escape rule
//! is written once.

/// Inside a JSON string, where only an unescaped quote ends it.
#[derive(Debug, Default, Clone, Copy)]
pub struct InString {
    escaped: bool,
}

impl InString {
    /// How many of `bytes` cannot end the string and can be skipped: up to
    /// the next quote or backslash.
    pub fn plain_run(&self, bytes: &[u8]) -> usize {
        if self.escaped {
            0
        } else {
            memchr::memchr2(b'"', b'\\', bytes).unwrap_or(bytes.len())
        }
    }

    /// Reads one byte of the string; whether it ends it.
    pub fn ends_at(&mut self, b: u8) -> bool {
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

/// Bytes that matter inside an element (brackets and quotes): the rest is
/// skipped in bulk by the document scanner and the element cursor.
pub const STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'[' as usize] = true;
    t[b'}' as usize] = true;
    t[b']' as usize] = true;
    t
};
