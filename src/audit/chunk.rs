//! A column chunk written here rather than by parquet-rs's column writers (the coded
//! columns, [`super::coded`]; the IDs, [`super::ids`]): its pages, statistics, page index and
//! metadata, and the encodings those pages use (parquet-format Encodings.md). A chunk is at
//! most a dictionary page and one data page (v1); `SerializedRowGroupWriter::append_column`
//! splices it into the row group.

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

/// A chunk's data page, encoded but not compressed, and what its statistics say.
pub struct Pages<'a> {
    /// The page's bytes: the definition levels (length-prefixed) for an optional column, then
    /// the values in `encoding`.
    pub data: &'a [u8],
    pub rows: usize,
    pub encoding: Encoding,
    pub nulls: usize,
    /// The least and greatest value, as bytes (UTF-8's sort order); `None` when every row
    /// is null.
    pub min_max: Option<(&'a [u8], &'a [u8])>,
}

/// Encodes a chunk of `column` of a byte-array type: a dictionary page when given (PLAIN
/// values, and how many), then the data page. Returns its bytes (pages with their headers,
/// at offset 0) and what `SerializedRowGroupWriter::append_column` needs to splice them in.
pub fn write(
    column: &ColumnDescPtr,
    level: ZstdLevel,
    dictionary: Option<(&[u8], usize)>,
    pages: Pages<'_>,
) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
    if pages.nulls > 0 && column.max_def_level() == 0 {
        return Err(ParquetError::General(format!(
            "column {} may not be null, and {} rows are",
            column.path(),
            pages.nulls
        )));
    }
    let mut sink = TrackedWrite::new(Vec::new());
    let (dictionary_page, data_page) = {
        let mut writer = SerializedPageWriter::new(&mut sink);
        let dictionary_page = match dictionary {
            Some((values, count)) => Some(writer.write_page(CompressedPage::new(
                Page::DictionaryPage {
                    buf: compress(values, level)?,
                    num_values: count as u32,
                    encoding: Encoding::PLAIN,
                    is_sorted: false,
                },
                values.len(),
            ))?),
            None => None,
        };
        let data_page = writer.write_page(CompressedPage::new(
            Page::DataPage {
                buf: compress(pages.data, level)?,
                num_values: pages.rows as u32,
                encoding: pages.encoding,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            },
            pages.data.len(),
        ))?;
        (dictionary_page, data_page)
    };
    let bytes = Bytes::from(sink.into_inner()?);

    let (min, max) = pages.min_max.unwrap_or_default();
    let all_null = pages.min_max.is_none();
    let statistics = Statistics::ByteArray(ValueStatistics::new(
        (!all_null).then(|| ByteArray::from(min.to_vec())),
        (!all_null).then(|| ByteArray::from(max.to_vec())),
        None,
        Some(pages.nulls as u64),
        false,
    ));
    let mut column_index = ColumnIndexBuilder::new(Type::BYTE_ARRAY);
    column_index.append(
        all_null,
        min.to_vec(),
        max.to_vec(),
        pages.nulls as i64,
        None,
    );
    let mut offset_index = OffsetIndexBuilder::new();
    offset_index.append_row_count(pages.rows as i64);
    offset_index.append_offset_and_size(data_page.offset as i64, data_page.compressed_size as i32);

    let mut encodings = vec![Encoding::RLE, pages.encoding];
    let mut page_stats = Vec::new();
    let (mut compressed, mut uncompressed) = (0, 0);
    if let Some(page) = &dictionary_page {
        encodings.push(Encoding::PLAIN);
        page_stats.push(PageEncodingStats {
            page_type: PageType::DICTIONARY_PAGE,
            encoding: Encoding::PLAIN,
            count: 1,
        });
        (compressed, uncompressed) = (page.compressed_size, page.uncompressed_size);
    }
    page_stats.push(PageEncodingStats {
        page_type: PageType::DATA_PAGE,
        encoding: pages.encoding,
        count: 1,
    });
    compressed += data_page.compressed_size;
    uncompressed += data_page.uncompressed_size;
    let metadata = ColumnChunkMetaData::builder(column.clone())
        .set_compression(Compression::ZSTD(level))
        .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
        .set_page_encoding_stats(page_stats)
        .set_total_compressed_size(compressed as i64)
        .set_total_uncompressed_size(uncompressed as i64)
        .set_num_values(pages.rows as i64)
        .set_dictionary_page_offset(dictionary_page.map(|page| page.offset as i64))
        .set_data_page_offset(data_page.offset as i64)
        .set_statistics(statistics)
        .build()?;
    let close = ColumnCloseResult {
        bytes_written: compressed as u64,
        rows_written: pages.rows as u64,
        metadata,
        bloom_filter: None,
        column_index: Some(column_index.build()?),
        offset_index: Some(offset_index.build()),
    };
    Ok((bytes, close))
}

/// Encodes a dictionary chunk of `column`: `texts` as the dictionary page (PLAIN), then one
/// data page of each row's index into it. A row's code is 0 for a null, `i + 1` for
/// `texts[i]`; the statistics are over the texts that occur.
pub fn write_dictionary<C: Copy + Into<u32>>(
    column: &ColumnDescPtr,
    level: ZstdLevel,
    texts: &[&[u8]],
    codes: &[C],
) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
    if texts.len() > usize::from(u16::MAX) + 1 {
        return Err(ParquetError::General(format!(
            "column {}: a dictionary of {} texts (at most 65,536)",
            column.path(),
            texts.len()
        )));
    }
    let mut present = vec![false; texts.len()];
    let mut indexes = Vec::with_capacity(codes.len());
    for &code in codes {
        if let Some(i) = code.into().checked_sub(1) {
            present[i as usize] = true;
            indexes.push(i as u16);
        }
    }
    // A v1 data page: the definition levels, then the indexes' width and the indexes.
    let mut data = Vec::new();
    if column.max_def_level() > 0 {
        let levels: Vec<u16> = codes.iter().map(|&c| u16::from(c.into() != 0)).collect();
        definition_levels(&levels, &mut data);
    }
    let width = bit_width(texts.len());
    data.push(width);
    hybrid(&indexes, width, &mut data);
    let dictionary = plain_byte_arrays(texts.iter().copied());
    // Compared as bytes: UTF-8's sort order.
    let occurring = texts
        .iter()
        .zip(&present)
        .filter(|(_, &p)| p)
        .map(|(t, _)| *t);
    let min_max = occurring.clone().min().zip(occurring.max());
    write(
        column,
        level,
        Some((&dictionary, texts.len())),
        Pages {
            data: &data,
            rows: codes.len(),
            encoding: Encoding::RLE_DICTIONARY,
            nulls: codes.len() - indexes.len(),
            min_max,
        },
    )
}

/// Appends an optional column's definition levels to a data page: their length (four bytes,
/// little-endian), then the levels in the hybrid encoding at one bit each.
pub fn definition_levels(levels: &[u16], out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    hybrid(levels, 1, out);
    let length = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&length.to_le_bytes());
}

fn compress(data: &[u8], level: ZstdLevel) -> Result<Bytes, ParquetError> {
    zstd::bulk::compress(data, level.compression_level())
        .map(Bytes::from)
        .map_err(|e| ParquetError::External(Box::new(e)))
}

/// Bits an index into a dictionary of `texts` texts takes (0 for a dictionary of one).
fn bit_width(texts: usize) -> u8 {
    (usize::BITS - texts.saturating_sub(1).leading_zeros()) as u8
}

/// Byte arrays as a PLAIN page holds them (a dictionary page's values): each one's length in
/// four bytes, little-endian, then its bytes.
fn plain_byte_arrays<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
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

pub fn uleb128(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `values` in DELTA_BINARY_PACKED: a header (block size 128, four miniblocks of 32,
/// how many values, the first value), then per block of 128 deltas its least delta and each
/// miniblock's deltas less that, bit-packed at the miniblock's own width. The last block's
/// unused miniblocks have a width of 0 and no bytes.
pub fn delta_binary_packed(values: &[i64], out: &mut Vec<u8>) {
    const BLOCK: usize = 128;
    const MINIBLOCKS: usize = 4;
    const MINIBLOCK: usize = BLOCK / MINIBLOCKS;
    uleb128(BLOCK as u64, out);
    uleb128(MINIBLOCKS as u64, out);
    uleb128(values.len() as u64, out);
    uleb128(zigzag(values.first().copied().unwrap_or(0)), out);
    let deltas: Vec<i64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    for block in deltas.chunks(BLOCK) {
        let least = block.iter().copied().min().unwrap_or(0);
        uleb128(zigzag(least), out);
        let widths = out.len();
        out.extend_from_slice(&[0; MINIBLOCKS]);
        for (i, miniblock) in block.chunks(MINIBLOCK).enumerate() {
            let above = |delta: i64| delta.wrapping_sub(least) as u64;
            let width = 64
                - miniblock
                    .iter()
                    .map(|&d| above(d))
                    .max()
                    .unwrap_or(0)
                    .leading_zeros();
            out[widths + i] = width as u8;
            // A miniblock is always 32 values' worth of bits: the last is padded with zeros.
            let (mut bits, mut filled) = (0u128, 0u32);
            for j in 0..MINIBLOCK {
                bits |= u128::from(miniblock.get(j).map_or(0, |&d| above(d))) << filled;
                filled += width;
                while filled >= 8 {
                    out.push(bits as u8);
                    bits >>= 8;
                    filled -= 8;
                }
            }
        }
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an unsigned LEB128 number off the front of `bytes`.
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

    /// Parquet's hybrid decoding, as the format describes it, for `count` values.
    fn decode(mut bytes: &[u8], width: u8, count: usize) -> Vec<u16> {
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

    /// DELTA_BINARY_PACKED decoding, as the format describes it.
    fn decode_deltas(mut bytes: &[u8]) -> Vec<i64> {
        let signed = |v: u64| (v >> 1) as i64 ^ -((v & 1) as i64);
        let block = uleb(&mut bytes) as usize;
        let miniblocks = uleb(&mut bytes) as usize;
        let count = uleb(&mut bytes) as usize;
        let first = signed(uleb(&mut bytes));
        let mut values = Vec::new();
        if count > 0 {
            values.push(first);
        }
        let per_miniblock = block / miniblocks;
        while values.len() < count {
            let least = signed(uleb(&mut bytes));
            let widths = bytes[..miniblocks].to_vec();
            bytes = &bytes[miniblocks..];
            for width in widths {
                if values.len() == count {
                    break; // an unused miniblock: a width and no bytes
                }
                let width = usize::from(width);
                for j in 0..per_miniblock {
                    let mut delta = 0u64;
                    for b in 0..width {
                        let at = j * width + b;
                        delta |= u64::from(bytes[at / 8] >> (at % 8) & 1) << b;
                    }
                    if values.len() < count {
                        let last = *values.last().expect("the first value");
                        values.push(last.wrapping_add(least.wrapping_add(delta as i64)));
                    }
                }
                bytes = &bytes[per_miniblock * width / 8..];
            }
        }
        assert!(bytes.is_empty(), "{} bytes past the values", bytes.len());
        values
    }

    #[test]
    fn delta_binary_packing_decodes_to_its_values_for_every_block_shape() {
        let mut cases: Vec<Vec<i64>> =
            vec![vec![], vec![7], vec![32; 500], vec![i64::MIN, i64::MAX, 0]];
        for len in [
            2, 31, 32, 33, 127, 128, 129, 130, 160, 161, 255, 256, 257, 1_000,
        ] {
            cases.push((0..len).map(|i| (i * 7919 % 61) as i64).collect());
            cases.push((0..len).map(|i| 20 + (i % 3) as i64).collect());
            cases.push((0..len as i64).map(|i| -i * i).collect());
        }
        // Deltas that need all 64 bits once the least is taken off.
        cases.push(
            (0..300)
                .map(|i| if i % 2 == 0 { i64::MAX } else { i64::MIN })
                .collect(),
        );
        for values in &cases {
            let mut out = Vec::new();
            delta_binary_packed(values, &mut out);
            assert_eq!(&decode_deltas(&out), values, "{} values", values.len());
        }
        // A run of one length (every correlation ID is 32 bytes): widths of 0, no bits.
        let mut out = Vec::new();
        delta_binary_packed(&[32; 128], &mut out);
        assert_eq!(
            out,
            [128, 1, 4, 128, 1, 64, 0, 0, 0, 0, 0],
            "header, least delta, widths"
        );
    }

    #[test]
    fn bit_width_fits_the_largest_index() {
        let widths: Vec<u8> = [0, 1, 2, 3, 4, 5, 8, 9, 14, 1024].map(bit_width).to_vec();
        assert_eq!(widths, [0, 0, 1, 2, 2, 3, 3, 4, 4, 10]);
    }
}
