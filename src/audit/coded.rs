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

use super::chunk;
use arrow_array::{ArrayRef, StringArray};
use bytes::Bytes;
use parquet::basic::ZstdLevel;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
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

    /// Encodes the chunk as `column` of a row group: one dictionary page (the list, PLAIN: each
    /// text's length in four bytes, little-endian, then its bytes) and one data page.
    pub fn write(
        &self,
        column: &ColumnDescPtr,
        level: ZstdLevel,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let texts: Vec<&[u8]> = self.texts.iter().map(|t| t.as_bytes()).collect();
        chunk::write_dictionary(column, level, &texts, &self.codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
