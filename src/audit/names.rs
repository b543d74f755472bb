//! Columns of names that repeat through a table (apps, IdP actions), written to Parquet as a
//! dictionary chunk built from a hash of the names a row group holds.
//!
//! parquet-rs's dictionary encoder is handed an Arrow string a row, hashes it into its
//! dictionary (~160 instructions on the bench set) and compares it with the chunk's minimum
//! and maximum; here a row is one lookup in a small hash map, and the statistics come from
//! the dictionary once a row group. A row group whose names would make a dictionary bigger
//! than the values themselves (more distinct names than half its rows, or past 1 MiB: a
//! pointer that picks an ID by mistake) is written without one, as the IDs are
//! ([`IdChunk`]), so no input makes the writer fail.

use super::chunk;
use super::ids::IdChunk;
use crate::model::FastMap;
use arrow_array::{Array, StringArray};
use bytes::Bytes;
use parquet::basic::ZstdLevel;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::schema::types::ColumnDescPtr;
use std::ops::Range;

/// The most bytes a chunk's dictionary page takes (parquet-rs's default limit too).
const MAX_DICTIONARY_BYTES: usize = 1 << 20;

/// A row group's worth of a names column, gathered batch by batch.
#[derive(Debug, Default)]
pub struct NameChunk {
    /// Each name's code, in the order names first appeared (which is the dictionary's).
    codes_of: FastMap<Box<str>, u32>,
    /// The names by code.
    names: Vec<Box<str>>,
    /// The names' bytes, as the dictionary page holds them (a 4-byte length before each).
    dictionary_bytes: usize,
    /// A row's code plus one; 0 for a null.
    rows: Vec<u32>,
}

impl NameChunk {
    /// Adds rows `rows` of `array`.
    pub fn extend(&mut self, array: &StringArray, rows: Range<usize>) {
        self.rows.reserve(rows.len());
        for row in rows {
            if array.is_null(row) {
                self.rows.push(0);
                continue;
            }
            let name = array.value(row);
            let code = match self.codes_of.get(name) {
                Some(&code) => code,
                None => {
                    let code = self.names.len() as u32;
                    self.codes_of.insert(name.into(), code);
                    self.names.push(name.into());
                    self.dictionary_bytes += 4 + name.len();
                    code
                }
            };
            self.rows.push(code + 1);
        }
    }

    /// Whether a dictionary pays for this chunk.
    fn dictionary_pays(&self) -> bool {
        !self.names.is_empty()
            && self.names.len() <= self.rows.len() / 2
            && self.names.len() <= usize::from(u16::MAX)
            && self.dictionary_bytes <= MAX_DICTIONARY_BYTES
    }

    /// Encodes the chunk as `column` of a row group: one dictionary page and one data page,
    /// or, when a dictionary does not pay, one `DELTA_LENGTH_BYTE_ARRAY` data page.
    pub fn write(
        &self,
        column: &ColumnDescPtr,
        level: ZstdLevel,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        if !self.dictionary_pays() {
            let names: StringArray = self
                .rows
                .iter()
                .map(|&code| code.checked_sub(1).map(|c| &*self.names[c as usize]))
                .collect();
            let mut ids = IdChunk::default();
            ids.extend(&names, 0..names.len());
            return ids.write(column, level);
        }
        let names: Vec<&[u8]> = self.names.iter().map(|n| n.as_bytes()).collect();
        chunk::write_dictionary(column, level, &names, &self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(names: &[Option<&str>]) -> NameChunk {
        let array: StringArray = names.iter().copied().collect();
        let mut chunk = NameChunk::default();
        chunk.extend(&array, 0..2.min(names.len()));
        chunk.extend(&array, 2.min(names.len())..names.len());
        chunk
    }

    #[test]
    fn names_are_coded_in_the_order_they_first_appear() {
        let chunk = chunk(&[Some("okta"), None, Some("box"), Some("okta"), Some("box")]);
        assert_eq!(chunk.rows, [1, 0, 2, 1, 2]);
        let names: Vec<&str> = chunk.names.iter().map(|n| &**n).collect();
        assert_eq!(names, ["okta", "box"]);
        assert!(chunk.dictionary_pays());
    }

    #[test]
    fn a_dictionary_is_dropped_when_it_would_not_pay() {
        assert!(
            !chunk(&[Some("a"), Some("b"), Some("c")]).dictionary_pays(),
            "mostly distinct"
        );
        assert!(!chunk(&[None, None]).dictionary_pays(), "no names");
        let long = "x".repeat(600_000);
        let big = [
            Some(long.as_str()),
            Some(&long[1..]),
            Some(&long[2..]),
            None,
            None,
            None,
        ];
        assert!(!chunk(&big).dictionary_pays(), "past 1 MiB");
        assert!(chunk(&[Some("a"), Some("a"), Some("b"), Some("b")]).dictionary_pays());
    }
}
