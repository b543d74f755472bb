//! Columns whose texts come from a short, fixed list (how an operation was joined, its stage,
//! outcome and cause, the IdP's status and source, the HTTP method), written to Parquet
//! straight from each row's position in the list.
//!
//! A row keeps a code: 0 for null, `i + 1` for the list's `i`th text. A row group's column is
//! then one dictionary page (the list) and one data page (the codes, as the dictionary indexes
//! Parquet calls RLE_DICTIONARY), with the chunk's statistics and page index: to a reader, the
//! column parquet-rs would write, in one data page a row group rather than several (readers
//! check that: `tests/audit.rs`, DuckDB and arrow-rs). parquet-rs's own dictionary encoder is
//! handed an Arrow string per row, hashes it into its dictionary and compares it with the
//! chunk's running minimum and maximum; here a row costs a compare of addresses, since a judged
//! operation's texts are the enums' own `&'static str`s (−5.1% of a replay's instructions:
//! docs/performance-log.md, fifth stop).

use arrow_array::{ArrayRef, StringArray};
use bytes::Bytes;
use parquet::basic::{Compression, Encoding, EncodingMask, PageType, Type, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

/// Most texts one column takes. Ours take at most 14 (the causes) or the configured sources;
/// a column with more did not come from this writer, and an error says so (rather than a
/// lookup slowing with every new text).
pub const MAX_TEXTS: usize = 1024;

/// A column's texts, in code order: code `i + 1` is `texts[i]`. Only ever appended to, so
/// codes taken earlier keep their meaning.
pub type Texts = Arc<Vec<Cow<'static, str>>>;

/// A column appended row by row.
#[derive(Debug, Clone, Default)]
pub struct CodedBuilder {
    texts: Texts,
    codes: Vec<u16>,
    /// A new text arrived when the list was full.
    overflowed: bool,
}

/// A full list: the column is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_TEXTS} different texts")]
pub struct TooManyTexts;

impl CodedBuilder {
    /// A column whose list starts with `known`. Texts passed to `append` that are these very
    /// `&'static str`s are found by address.
    pub fn new(known: impl IntoIterator<Item = &'static str>) -> CodedBuilder {
        CodedBuilder {
            texts: Arc::new(known.into_iter().map(Cow::Borrowed).collect()),
            ..CodedBuilder::default()
        }
    }

    pub fn append(&mut self, text: Option<&str>) {
        let code = match text {
            None => 0,
            Some(text) => self.code(text),
        };
        self.codes.push(code);
    }

    fn code(&mut self, text: &str) -> u16 {
        // The same address and length is the same text: a judged operation's rows stop here.
        let same = |t: &Cow<str>| std::ptr::eq(t.as_ptr(), text.as_ptr()) && t.len() == text.len();
        let found = match self.texts.iter().position(same) {
            Some(i) => Some(i),
            None => self.texts.iter().position(|t| t == text),
        };
        if let Some(i) = found {
            return i as u16 + 1;
        }
        if self.texts.len() >= MAX_TEXTS {
            self.overflowed = true;
            return 0;
        }
        Arc::make_mut(&mut self.texts).push(Cow::Owned(text.to_owned()));
        self.texts.len() as u16
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Whether a text arrived when the list was full (it was kept as a null, which must not be
    /// written: `finish` refuses from then on).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Takes the codes appended so far, with the list they point into. The builder keeps its
    /// list and room for as many rows again. After an overflow it refuses and takes nothing.
    pub fn finish(&mut self) -> Result<Coded, TooManyTexts> {
        if self.overflowed {
            return Err(TooManyTexts);
        }
        let room = self.codes.len();
        let codes = std::mem::replace(&mut self.codes, Vec::with_capacity(room));
        Ok(Coded {
            texts: self.texts.clone(),
            codes,
        })
    }
}

/// A batch of a coded column.
#[derive(Debug, Clone)]
pub struct Coded {
    pub texts: Texts,
    pub codes: Vec<u16>,
}

impl Coded {
    /// The column as an Arrow string array.
    pub fn to_array(&self) -> ArrayRef {
        let texts = &self.texts;
        Arc::new(
            self.codes
                .iter()
                .map(|&code| code.checked_sub(1).map(|i| texts[i as usize].as_ref()))
                .collect::<StringArray>(),
        )
    }
}

/// A row group's worth of a coded column, gathered batch by batch, then written as one
/// dictionary page and one data page.
#[derive(Debug, Default)]
pub struct CodedChunk {
    texts: Texts,
    codes: Vec<u16>,
}

impl CodedChunk {
    /// Adds rows `rows` of `batch`.
    pub fn extend(&mut self, batch: &Coded, rows: Range<usize>) {
        let codes = &batch.codes[rows];
        let extends = batch.texts.len() >= self.texts.len()
            && self
                .texts
                .iter()
                .zip(batch.texts.iter())
                .all(|(a, b)| a == b);
        if extends {
            // The usual case: the batch comes from the builder earlier batches came from, whose
            // list has only grown.
            self.texts = batch.texts.clone();
            self.codes.extend_from_slice(codes);
            return;
        }
        // Another list: its codes are translated into this chunk's.
        let texts = Arc::make_mut(&mut self.texts);
        let mut map = vec![0u16; batch.texts.len() + 1];
        for (i, text) in batch.texts.iter().enumerate() {
            map[i + 1] = match texts.iter().position(|t| t == text) {
                Some(j) => j as u16 + 1,
                None => {
                    texts.push(text.clone());
                    texts.len() as u16
                }
            };
        }
        self.codes
            .extend(codes.iter().map(|&code| map[code as usize]));
    }

    /// Encodes the chunk as `column` of a row group: its bytes (pages with their headers, at
    /// offset 0) and what `SerializedRowGroupWriter::append_column` needs to splice them in.
    pub fn write(
        &self,
        column: &ColumnDescPtr,
        level: ZstdLevel,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let rows = self.codes.len();
        let optional = column.max_def_level() > 0;
        let mut present = vec![false; self.texts.len()];
        let mut indexes = Vec::with_capacity(rows);
        for &code in &self.codes {
            if let Some(i) = code.checked_sub(1) {
                present[i as usize] = true;
                indexes.push(i);
            }
        }
        let nulls = rows - indexes.len();
        if nulls > 0 && !optional {
            return Err(ParquetError::General(format!(
                "column {} may not be null, and {nulls} rows are",
                column.path()
            )));
        }

        // A v1 data page: the definition levels (length-prefixed), then the indexes' width
        // and the indexes.
        let mut data = Vec::new();
        if optional {
            let levels: Vec<u16> = self.codes.iter().map(|&c| u16::from(c != 0)).collect();
            data.extend_from_slice(&[0; 4]);
            hybrid(&levels, 1, &mut data);
            let length = (data.len() - 4) as u32;
            data[..4].copy_from_slice(&length.to_le_bytes());
        }
        let width = bit_width(self.texts.len());
        data.push(width);
        hybrid(&indexes, width, &mut data);

        // The dictionary page: each text, PLAIN (a 4-byte little-endian length, the bytes).
        let mut dictionary = Vec::new();
        for text in self.texts.iter() {
            dictionary.extend_from_slice(&(text.len() as u32).to_le_bytes());
            dictionary.extend_from_slice(text.as_bytes());
        }

        let mut sink = TrackedWrite::new(Vec::new());
        let (dictionary_page, data_page) = {
            let mut pages = SerializedPageWriter::new(&mut sink);
            let dictionary = pages.write_page(CompressedPage::new(
                Page::DictionaryPage {
                    buf: compress(&dictionary, level)?,
                    num_values: self.texts.len() as u32,
                    encoding: Encoding::PLAIN,
                    is_sorted: false,
                },
                dictionary.len(),
            ))?;
            let data = pages.write_page(CompressedPage::new(
                Page::DataPage {
                    buf: compress(&data, level)?,
                    num_values: rows as u32,
                    encoding: Encoding::RLE_DICTIONARY,
                    def_level_encoding: Encoding::RLE,
                    rep_level_encoding: Encoding::RLE,
                    statistics: None,
                },
                data.len(),
            ))?;
            (dictionary, data)
        };
        let bytes = Bytes::from(sink.into_inner()?);

        // Statistics over the texts that occur, compared as bytes (UTF-8's sort order).
        let occurring = self
            .texts
            .iter()
            .zip(&present)
            .filter(|(_, &p)| p)
            .map(|(t, _)| t.as_bytes());
        let min = occurring.clone().min().unwrap_or_default().to_vec();
        let max = occurring.max().unwrap_or_default().to_vec();
        let all_null = indexes.is_empty();
        let statistics = Statistics::ByteArray(ValueStatistics::new(
            (!all_null).then(|| ByteArray::from(min.clone())),
            (!all_null).then(|| ByteArray::from(max.clone())),
            None,
            Some(nulls as u64),
            false,
        ));
        let mut column_index = ColumnIndexBuilder::new(Type::BYTE_ARRAY);
        column_index.append(all_null, min, max, nulls as i64, None);
        let mut offset_index = OffsetIndexBuilder::new();
        offset_index.append_row_count(rows as i64);
        offset_index
            .append_offset_and_size(data_page.offset as i64, data_page.compressed_size as i32);

        let compressed_size = (dictionary_page.compressed_size + data_page.compressed_size) as i64;
        let metadata = ColumnChunkMetaData::builder(column.clone())
            .set_compression(Compression::ZSTD(level))
            .set_encodings_mask(EncodingMask::new_from_encodings(
                [Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY].iter(),
            ))
            .set_page_encoding_stats(vec![
                PageEncodingStats {
                    page_type: PageType::DICTIONARY_PAGE,
                    encoding: Encoding::PLAIN,
                    count: 1,
                },
                PageEncodingStats {
                    page_type: PageType::DATA_PAGE,
                    encoding: Encoding::RLE_DICTIONARY,
                    count: 1,
                },
            ])
            .set_total_compressed_size(compressed_size)
            .set_total_uncompressed_size(
                (dictionary_page.uncompressed_size + data_page.uncompressed_size) as i64,
            )
            .set_num_values(rows as i64)
            .set_dictionary_page_offset(Some(dictionary_page.offset as i64))
            .set_data_page_offset(data_page.offset as i64)
            .set_statistics(statistics)
            .build()?;
        let close = ColumnCloseResult {
            bytes_written: compressed_size as u64,
            rows_written: rows as u64,
            metadata,
            bloom_filter: None,
            column_index: Some(column_index.build()?),
            offset_index: Some(offset_index.build()),
        };
        Ok((bytes, close))
    }
}

fn compress(data: &[u8], level: ZstdLevel) -> Result<Bytes, ParquetError> {
    zstd::bulk::compress(data, level.compression_level())
        .map(Bytes::from)
        .map_err(|e| ParquetError::External(Box::new(e)))
}

/// Bits an index into a list of `texts` texts takes (0 for a list of one).
fn bit_width(texts: usize) -> u8 {
    (usize::BITS - texts.saturating_sub(1).leading_zeros()) as u8
}

/// Appends `values` to `out` in Parquet's RLE / bit-packing hybrid encoding at `width` bits a
/// value (parquet-format Encodings.md, "Run Length Encoding / Bit-Packing Hybrid"): a value
/// repeated eight times or more is one run, the rest are bit-packed eight at a time.
fn hybrid(values: &[u16], width: u8, out: &mut Vec<u8>) {
    let mut packed_from = 0;
    let mut start = 0;
    while start < values.len() {
        let value = values[start];
        let mut end = start + 1;
        while end < values.len() && values[end] == value {
            end += 1;
        }
        // Bit-packed runs hold whole groups of eight, and only the stream's last may be padded:
        // the values waiting before this repeat take enough of it to fill their last group.
        let fill = (8 - (start - packed_from) % 8) % 8;
        if end - start >= fill + 8 {
            bit_packed(&values[packed_from..start + fill], width, out);
            repeated(value, end - start - fill, width, out);
            packed_from = end;
        }
        start = end;
    }
    bit_packed(&values[packed_from..], width, out);
}

/// Bit-packed runs of at most 63 groups (a one-byte header, as parquet-mr writes them), the
/// last group padded with zeros.
fn bit_packed(values: &[u16], width: u8, out: &mut Vec<u8>) {
    for run in values.chunks(63 * 8) {
        let groups = run.len().div_ceil(8);
        uleb128((groups << 1 | 1) as u64, out);
        let mut bits: u64 = 0;
        let mut filled = 0;
        for i in 0..groups * 8 {
            bits |= u64::from(run.get(i).copied().unwrap_or(0)) << filled;
            filled += u32::from(width);
            while filled >= 8 {
                out.push(bits as u8);
                bits >>= 8;
                filled -= 8;
            }
        }
        debug_assert_eq!(filled, 0, "eight values fill whole bytes");
    }
}

/// A run of `count` copies of `value`, which takes `width` rounded up to bytes, little-endian.
fn repeated(value: u16, count: usize, width: u8, out: &mut Vec<u8>) {
    uleb128((count as u64) << 1, out);
    out.extend_from_slice(&value.to_le_bytes()[..usize::from(width).div_ceil(8)]);
}

fn uleb128(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parquet's hybrid decoding, as the format describes it, for `count` values.
    fn decode(mut bytes: &[u8], width: u8, count: usize) -> Vec<u16> {
        fn uleb(bytes: &mut &[u8]) -> u64 {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let byte = bytes[0];
                *bytes = &bytes[1..];
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return value;
                }
                shift += 7;
            }
        }
        let mut values = Vec::new();
        while values.len() < count {
            let header = uleb(&mut bytes);
            if header & 1 == 0 {
                let size = usize::from(width).div_ceil(8);
                let mut le = [0u8; 2];
                le[..size].copy_from_slice(&bytes[..size]);
                bytes = &bytes[size..];
                values.extend(std::iter::repeat_n(
                    u16::from_le_bytes(le),
                    (header >> 1) as usize,
                ));
            } else {
                let n = (header >> 1) as usize * 8;
                let mut bit = 0;
                for _ in 0..n {
                    let mut value = 0u16;
                    for b in 0..usize::from(width) {
                        let at = bit + b;
                        value |= u16::from(bytes[at / 8] >> (at % 8) & 1) << b;
                    }
                    bit += usize::from(width);
                    values.push(value);
                }
                bytes = &bytes[n * usize::from(width) / 8..];
            }
        }
        assert!(bytes.is_empty(), "{} bytes past the values", bytes.len());
        values.truncate(count);
        values
    }

    #[test]
    fn hybrid_encoding_decodes_to_its_values_at_every_width_and_run_shape() {
        let mut cases: Vec<Vec<u16>> = vec![vec![], vec![0], vec![1; 7], vec![1; 8], vec![1; 9]];
        for run in [1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 200, 503, 504, 505, 5_000] {
            // Repeats of `run` at every offset into a bit-packed group.
            for lead in 0..9 {
                let mut values: Vec<u16> = (0..lead).map(|i| i % 3).collect();
                values.extend(std::iter::repeat_n(2, run));
                values.extend((0..lead).map(|i| (i + 1) % 3));
                cases.push(values);
            }
        }
        cases.push((0..3_000).map(|i| (i * i % 7) as u16).collect());
        cases.push((0..3_000).map(|i| (i / 11 % 2) as u16).collect());
        for width in 0..=10u8 {
            let top = (1u32 << width) - 1;
            for case in &cases {
                let values: Vec<u16> = case.iter().map(|&v| (u32::from(v) & top) as u16).collect();
                let mut out = Vec::new();
                hybrid(&values, width, &mut out);
                assert_eq!(decode(&out, width, values.len()), values, "width {width}");
            }
        }
    }

    #[test]
    fn long_repeats_are_one_run_and_mixed_values_are_bit_packed() {
        let mut out = Vec::new();
        hybrid(&[3; 10_000], 2, &mut out);
        assert_eq!(
            out,
            [0xa0, 0x9c, 0x01, 3],
            "10,000 << 1 as ULEB128, then the value"
        );
        out.clear();
        hybrid(&[0, 1, 2, 3, 0, 1, 2, 3], 2, &mut out);
        assert_eq!(
            out,
            [0b11, 0b1110_0100, 0b1110_0100],
            "one group of eight, two bits each"
        );
    }

    #[test]
    fn bit_width_fits_the_largest_index() {
        let widths: Vec<u8> = [0, 1, 2, 3, 4, 5, 8, 9, 14, 1024].map(bit_width).to_vec();
        assert_eq!(widths, [0, 0, 1, 2, 2, 3, 3, 4, 4, 10]);
    }

    #[test]
    fn a_text_is_found_by_address_or_by_content_and_new_ones_are_added() {
        const KNOWN: [&str; 2] = ["joiner", "leaver"];
        let mut builder = CodedBuilder::new(KNOWN);
        let elsewhere = String::from("leaver");
        builder.append(Some(KNOWN[1]));
        builder.append(Some(&elsewhere));
        builder.append(None);
        builder.append(Some("mover"));
        builder.append(Some(&String::from("mover")));
        let coded = builder.finish().unwrap();
        assert_eq!(coded.codes, [2, 2, 0, 3, 3]);
        assert_eq!(coded.texts.as_slice(), ["joiner", "leaver", "mover"]);
        assert!(builder.is_empty(), "finish takes the rows; the list stays");
        builder.append(Some("mover"));
        assert_eq!(builder.finish().unwrap().codes, [3]);
    }

    #[test]
    fn a_column_of_too_many_texts_is_an_error_not_a_slow_scan() {
        let mut builder = CodedBuilder::default();
        for i in 0..=MAX_TEXTS {
            builder.append(Some(&i.to_string()));
        }
        assert!(builder.overflowed());
        assert!(builder.finish().is_err());
        assert_eq!(
            builder.len(),
            MAX_TEXTS + 1,
            "the rows are kept, not written with a null"
        );
        assert!(builder.finish().is_err(), "and refused again");
    }

    #[test]
    fn a_chunk_fed_from_another_list_translates_its_codes() {
        let mut first = CodedBuilder::new(["a", "b"]);
        let mut second = CodedBuilder::new(["b", "c"]);
        first.append(Some("b"));
        second.append(Some("c"));
        second.append(Some("b"));
        second.append(None);
        let mut chunk = CodedChunk::default();
        let (one, two) = (first.finish().unwrap(), second.finish().unwrap());
        chunk.extend(&one, 0..1);
        chunk.extend(&two, 0..3);
        let texts: Vec<Option<&str>> = chunk
            .codes
            .iter()
            .map(|&c| c.checked_sub(1).map(|i| chunk.texts[i as usize].as_ref()))
            .collect();
        assert_eq!(texts, [Some("b"), Some("c"), Some("b"), None]);
    }
}
