//! A line reader with a hard cap on line length.
//!
//! An over-long line is never buffered whole: once a line passes `max_line_bytes` the reader
//! drops what it has and skips to the next newline, then reports the line once as too long
//! (Vector's `read_until_with_max_size` does the same). Offsets are byte positions in the file,
//! so a bad line can be found with `tail -c +OFFSET`.

use std::io::{self, Read};

/// One line (without `\n` or a trailing `\r`), or the fact that a line was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text {
        bytes: &'a [u8],
        /// 1-based line number in the file.
        number: u64,
        /// Byte offset of the line's start.
        offset: u64,
        /// Byte offset just past the line and its newline: where reading resumes.
        next: u64,
    },
    TooLong {
        length: u64,
        number: u64,
        offset: u64,
        next: u64,
    },
}

/// Reads lines from any `Read`.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    eof: bool,
    max_line_bytes: usize,
    /// Bytes of an over-long line dropped so far (`Some` while skipping one).
    discarding: Option<u64>,
    /// Offset in the file of `buf[pos]`.
    offset: u64,
    line_number: u64,
    /// Whether a last line without a newline counts at EOF (replay: yes; tailing: it may still
    /// be being written).
    final_partial_is_line: bool,
}

const CHUNK: usize = 256 * 1024;

impl<R: Read> LineReader<R> {
    pub fn new(inner: R, max_line_bytes: usize) -> LineReader<R> {
        LineReader::starting_at(inner, max_line_bytes, 0, 0)
    }

    /// A reader whose input starts at `offset` (line number `line_number` already read).
    pub fn starting_at(
        inner: R,
        max_line_bytes: usize,
        offset: u64,
        line_number: u64,
    ) -> LineReader<R> {
        LineReader {
            inner,
            buf: vec![0; CHUNK],
            pos: 0,
            filled: 0,
            eof: false,
            max_line_bytes,
            discarding: None,
            offset,
            line_number,
            final_partial_is_line: true,
        }
    }

    /// Leaves a last line without a newline unread (for tailing live files).
    pub fn wait_for_newline(mut self) -> Self {
        self.final_partial_is_line = false;
        self
    }

    /// Tailing: reads again after an EOF (the file may have grown).
    pub fn clear_eof(&mut self) {
        self.eof = false;
    }

    /// Tailing a file that is gone (deleted or rotated away): no writer can finish its last
    /// line, so a partial one now counts.
    pub fn set_final_partial_is_line(&mut self, value: bool) {
        self.final_partial_is_line = value;
    }

    /// Whether the last read hit the end of the input.
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Bytes read from the input but not yet returned as lines (a partial last line).
    pub fn buffered(&self) -> usize {
        self.filled - self.pos
    }

    /// Whether it is skipping an over-long line (read past bytes it has not returned).
    pub fn skipping(&self) -> bool {
        self.discarding.is_some()
    }

    /// The reader it reads from.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Offset just past the last line returned: where a checkpoint may resume.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// Reads the input again from its start (a truncated file's new generation), through the
    /// same handle: no second descriptor, which a process at its limit cannot get.
    pub fn rewind(&mut self) -> io::Result<()>
    where
        R: io::Seek,
    {
        self.inner.seek(io::SeekFrom::Start(0))?;
        (self.pos, self.filled, self.eof, self.discarding) = (0, 0, false, None);
        (self.offset, self.line_number) = (0, 0);
        Ok(())
    }

    /// The next line, or `None` at end of input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            if let Some(found) = memchr::memchr(b'\n', &self.buf[self.pos..self.filled]) {
                let start = self.pos;
                let line_offset = self.offset;
                self.pos += found + 1;
                self.offset += found as u64 + 1;
                self.line_number += 1;
                let next = self.offset;
                if let Some(dropped) = self.discarding.take() {
                    let length = dropped + found as u64;
                    return Ok(Some(Line::TooLong {
                        length,
                        number: self.line_number,
                        offset: line_offset - dropped,
                        next,
                    }));
                }
                let bytes = line_text(&self.buf[start..start + found], line_offset);
                if bytes.len() > self.max_line_bytes {
                    return Ok(Some(Line::TooLong {
                        length: bytes.len() as u64,
                        number: self.line_number,
                        offset: line_offset,
                        next,
                    }));
                }
                return Ok(Some(Line::Text {
                    bytes,
                    number: self.line_number,
                    offset: line_offset,
                    next,
                }));
            }
            // No newline in what we hold.
            let pending = self.filled - self.pos;
            if let Some(dropped) = self.discarding.as_mut() {
                *dropped += pending as u64;
                self.offset += pending as u64;
                self.pos = self.filled;
            } else if pending > self.max_line_bytes {
                self.discarding = Some(pending as u64);
                self.offset += pending as u64;
                self.pos = self.filled;
            }
            if self.eof {
                return Ok(self.take_final_line());
            }
            // Make room and read more.
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.filled, 0);
                self.filled -= self.pos;
                self.pos = 0;
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let read = loop {
                match self.inner.read(&mut self.buf[self.filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if read == 0 {
                self.eof = true;
            }
            self.filled += read;
        }
    }

    fn take_final_line(&mut self) -> Option<Line<'_>> {
        if !self.final_partial_is_line {
            // Rewind a partial line so a later read (after more is appended) sees it whole.
            return None;
        }
        if let Some(dropped) = self.discarding.take() {
            self.line_number += 1;
            return Some(Line::TooLong {
                length: dropped,
                number: self.line_number,
                offset: self.offset - dropped,
                next: self.offset,
            });
        }
        if self.pos < self.filled {
            let start = self.pos;
            let line_offset = self.offset;
            let length = self.filled - start;
            self.pos = self.filled;
            self.offset += length as u64;
            self.line_number += 1;
            let bytes = line_text(&self.buf[start..self.filled], line_offset);
            return Some(Line::Text {
                bytes,
                number: self.line_number,
                offset: line_offset,
                next: self.offset,
            });
        }
        None
    }
}

/// A line's text: without its `\r` (CRLF files), and for the file's first line without a
/// UTF-8 byte order mark (Windows tools write one; the first record was lost to it).
fn line_text(bytes: &[u8], offset: u64) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    match offset {
        0 => bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes),
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        assert_eq!(
            lines(b"\xEF\xBB\xBF{\"a\":1}\r\n\xEF\xBB\xBFx\n", 100),
            ["1@0:{\"a\":1}", "2@12:\u{feff}x"]
        );
        assert_eq!(lines(b"\xEF\xBB\xBFlast", 100), ["1@0:last"]);
    }

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(match line {
                Line::Text {
                    bytes,
                    number,
                    offset,
                    ..
                } => {
                    format!("{number}@{offset}:{}", String::from_utf8_lossy(bytes))
                }
                Line::TooLong {
                    length,
                    number,
                    offset,
                    ..
                } => format!("{number}@{offset}:TOO LONG {length}"),
            });
        }
        out
    }

    #[test]
    fn lines_carry_numbers_and_offsets_and_lose_crlf() {
        assert_eq!(
            lines(b"a\r\nbb\n\nccc", 100),
            ["1@0:a", "2@3:bb", "3@6:", "4@7:ccc"]
        );
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_the_next_line_survives() {
        let mut input = vec![b'x'; 1000];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(lines(&input, 64), ["1@0:TOO LONG 1000", "2@1001:ok"]);
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_skipped_without_holding_it() {
        let mut input = vec![b'y'; 3 * CHUNK + 17];
        input.extend_from_slice(b"\nafter");
        assert_eq!(
            lines(&input, 1024),
            [
                format!("1@0:TOO LONG {}", 3 * CHUNK + 17),
                format!("2@{}:after", 3 * CHUNK + 18)
            ]
        );
    }

    #[test]
    fn a_long_line_within_the_limit_is_returned_whole() {
        let mut input = vec![b'z'; 2 * CHUNK];
        input.push(b'\n');
        let mut reader = LineReader::new(&input[..], 4 * CHUNK);
        match reader.next_line().unwrap() {
            Some(Line::Text { bytes, .. }) => assert_eq!(bytes.len(), 2 * CHUNK),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tailing_leaves_a_partial_last_line_unread() {
        let mut reader = LineReader::new(&b"one\ntw"[..], 100).wait_for_newline();
        assert!(matches!(
            reader.next_line().unwrap(),
            Some(Line::Text { bytes: b"one", .. })
        ));
        assert_eq!(reader.next_line().unwrap(), None);
        assert_eq!(reader.offset(), 4);
    }
}
