//! Columns of texts that are nearly all distinct (correlation IDs, user IDs, logins), written
//! to Parquet as DELTA_LENGTH_BYTE_ARRAY straight from the Arrow arrays the builders made.
//!
//! A row group's column is one data page: the definition levels, the values' lengths
//! (DELTA_BINARY_PACKED: a run of IDs of one length packs to a few bytes), then the values'
//! bytes back to back, which is how the Arrow array holds them already. parquet-rs's writer
//! copies each value on its own, and compares it with the chunk's minimum and maximum as a
//! byte slice; here a row group's bytes are copied at once, and the statistics compare each
//! value's first eight bytes as one number before its other bytes (random IDs differ there).

use super::chunk::{self, Pages};
use arrow_array::{Array, StringArray};
use bytes::Bytes;
use parquet::basic::{Encoding, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::schema::types::ColumnDescPtr;
use std::ops::Range;

/// A row group's worth of an ID column, gathered batch by batch.
#[derive(Debug, Default)]
pub struct IdChunk {
    /// The values' bytes, back to back.
    bytes: Vec<u8>,
    lengths: Vec<i64>,
    /// A definition level a row: 1 for a value, 0 for a null.
    levels: Vec<u16>,
    /// Where the least and the greatest value are in `bytes`, with their first eight bytes
    /// as a number ([`head`]).
    min: Option<(Range<usize>, u64)>,
    max: Option<(Range<usize>, u64)>,
}

impl IdChunk {
    /// A chunk with room for `bytes` bytes of values.
    pub fn with_capacity(bytes: usize) -> IdChunk {
        IdChunk {
            bytes: Vec::with_capacity(bytes),
            ..IdChunk::default()
        }
    }

    /// How many bytes of values the chunk holds.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Adds rows `rows` of `array`.
    pub fn extend(&mut self, array: &StringArray, rows: Range<usize>) {
        let offsets = array.value_offsets();
        let data = array.value_data();
        self.levels.reserve(rows.len());
        self.lengths.reserve(rows.len());
        if array.null_count() == 0 {
            // The usual case: the rows' bytes are already back to back.
            let base = self.bytes.len();
            let first = offsets[rows.start] as usize;
            self.bytes
                .extend_from_slice(&data[first..offsets[rows.end] as usize]);
            for row in rows {
                self.levels.push(1);
                let start = base + offsets[row] as usize - first;
                let value = start..base + offsets[row + 1] as usize - first;
                self.lengths.push(value.len() as i64);
                self.note(value);
            }
            return;
        }
        // A null's slot may hold bytes (Arrow allows it): each value is copied on its own.
        for row in rows {
            if array.is_null(row) {
                self.levels.push(0);
                continue;
            }
            self.levels.push(1);
            let start = self.bytes.len();
            self.bytes.extend_from_slice(array.value(row).as_bytes());
            self.lengths.push((self.bytes.len() - start) as i64);
            self.note(start..self.bytes.len());
        }
    }

    /// Keeps the value at `value` in `bytes` if it is a new least or greatest.
    fn note(&mut self, value: Range<usize>) {
        let bytes = &self.bytes;
        let key = head(&bytes[value.clone()]);
        let order = |(other, other_key): &(Range<usize>, u64)| {
            key.cmp(other_key)
                .then_with(|| bytes[value.clone()].cmp(&bytes[other.clone()]))
        };
        if self.min.as_ref().is_none_or(|min| order(min).is_lt()) {
            self.min = Some((value.clone(), key));
        }
        if self.max.as_ref().is_none_or(|max| order(max).is_gt()) {
            self.max = Some((value, key));
        }
    }

    /// Encodes the chunk as `column` of a row group: one data page.
    pub fn write(
        &self,
        column: &ColumnDescPtr,
        level: ZstdLevel,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let mut data = Vec::with_capacity(self.bytes.len() + self.levels.len() / 4 + 64);
        if column.max_def_level() > 0 {
            chunk::definition_levels(&self.levels, &mut data);
        }
        chunk::delta_binary_packed(&self.lengths, &mut data);
        data.extend_from_slice(&self.bytes);
        let text = |(range, _): &(Range<usize>, u64)| &self.bytes[range.clone()];
        chunk::write(
            column,
            level,
            None,
            Pages {
                data: &data,
                rows: self.levels.len(),
                encoding: Encoding::DELTA_LENGTH_BYTE_ARRAY,
                nulls: self.levels.len() - self.lengths.len(),
                min_max: self.min.as_ref().map(text).zip(self.max.as_ref().map(text)),
            },
        )
    }
}

/// A text's first eight bytes as a big-endian number, zero-padded: texts whose heads differ
/// compare as their heads do.
fn head(bytes: &[u8]) -> u64 {
    // The little-endian word, byte-swapped: one load for a text of eight bytes or more.
    crate::swar::word_at(bytes, 0).swap_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_and_greatest_values_are_those_a_byte_comparison_finds() {
        // Heads that tie (a shared eight-byte prefix, a prefix of another, a zero byte) and
        // heads that decide; nulls among them.
        let values = [
            Some("corp-0001-b"),
            None,
            Some("corp-0001-a"),
            Some("corp-0001"),
            Some("corp-0001\0"),
            Some("zz"),
            Some(""),
            Some("corp-0001-c"),
            None,
            Some("z"),
        ];
        let with_nulls: StringArray = values.iter().copied().collect();
        let without: StringArray = values.iter().flatten().map(|v| Some(*v)).collect();
        let present: Vec<&str> = values.iter().flatten().copied().collect();
        for array in [&with_nulls, &without] {
            for split in 0..=array.len() {
                let mut chunk = IdChunk::default();
                chunk.extend(array, 0..split);
                chunk.extend(array, split..array.len());
                let text = |v: &Option<(Range<usize>, u64)>| {
                    std::str::from_utf8(&chunk.bytes[v.clone().unwrap().0])
                        .unwrap()
                        .to_string()
                };
                assert_eq!(text(&chunk.min), *present.iter().min().unwrap());
                assert_eq!(text(&chunk.max), *present.iter().max().unwrap());
                let levels = array.iter().map(|v| u16::from(v.is_some()));
                assert_eq!(chunk.levels, levels.collect::<Vec<_>>());
                assert_eq!(chunk.bytes, present.concat().as_bytes());
                let lengths = present.iter().map(|v| v.len() as i64);
                assert_eq!(chunk.lengths, lengths.collect::<Vec<_>>());
            }
        }
    }
}
