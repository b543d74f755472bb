//! Sources: reading log files line by line, and counting what could not be parsed.
//!
//! `replay` reads whole files through [`reader::LineReader`]; the daemon's tailer reuses the
//! same reader on live files. Parse failures are counted per source and reason, and the first
//! few are kept with their file and line so a person can go and look.

pub mod reader;

use crate::parse::{ParseError, Reason};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Whether a path is a compressed file by its name (`gateway.log.2.gz`, as logrotate's
/// `compress` leaves them): a glob such as `gateway.log*` matches those too, and read as text
/// every one of their lines would be set aside. Globs skip them; they are not logs to tail.
pub fn is_compressed(path: &std::path::Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["gz", "bz2", "xz", "zst", "lz4", "zip", "z", "lzma", "br"]
            .iter()
            .any(|c| e.eq_ignore_ascii_case(c))
    })
}

/// Why a file named for reading (`replay --idp FILE`) cannot be read as a log, if it cannot:
/// it is not there (or not a regular file), or it is compressed.
pub fn unreadable_log(path: &std::path::Path) -> Option<&'static str> {
    if !path.is_file() {
        return Some("not a readable file");
    }
    is_compressed(path).then_some("compressed; decompress it first (for example with zcat)")
}

/// How many bad lines per source are kept with their location.
pub const MAX_ERROR_SAMPLES: usize = 5;

/// One bad line, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorSample {
    pub source: String,
    pub file: String,
    pub line: u64,
    pub offset: u64,
    pub reason: &'static str,
    pub detail: String,
}

/// Lines read and lines set aside, per source.
#[derive(Debug, Clone, Default)]
pub struct SourceStats {
    pub lines: u64,
    pub errors: BTreeMap<Reason, u64>,
    pub samples: Vec<ErrorSample>,
    pub last_event: Option<crate::time::Ts>,
}

impl SourceStats {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Stats of all sources, by source name, plus the files they read (by file id).
#[derive(Debug, Clone, Default)]
pub struct IngestStats {
    pub sources: BTreeMap<String, SourceStats>,
    pub files: Vec<PathBuf>,
}

impl IngestStats {
    /// Registers a source so it appears in the report even with no lines.
    pub fn register(&mut self, source: &str) {
        self.source_mut(source);
    }

    pub fn line(&mut self, source: &str) {
        self.source_mut(source).lines += 1;
    }

    /// A source's counters (found without allocating: this runs for every line).
    pub fn source_mut(&mut self, source: &str) -> &mut SourceStats {
        if !self.sources.contains_key(source) {
            self.sources
                .insert(source.to_string(), SourceStats::default());
        }
        self.sources.get_mut(source).expect("inserted above")
    }

    /// Counts a bad line and keeps the first few with their location.
    pub fn error(&mut self, source: &str, file: u32, line: u64, offset: u64, error: &ParseError) {
        let file_name = self
            .files
            .get(file as usize)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.error_in(source, file_name, line, offset, error);
    }

    /// Counts a bad line of a file named by path.
    pub fn error_in(
        &mut self,
        source: &str,
        file_name: String,
        line: u64,
        offset: u64,
        error: &ParseError,
    ) {
        let stats = self.source_mut(source);
        *stats.errors.entry(error.reason).or_default() += 1;
        if stats.samples.len() < MAX_ERROR_SAMPLES {
            stats.samples.push(ErrorSample {
                source: source.to_string(),
                file: file_name,
                line,
                offset,
                reason: error.reason.as_str(),
                detail: error.detail.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_compressed;
    use std::path::Path;

    #[test]
    fn compressed_rotations_are_known_by_their_names() {
        for name in [
            "gateway.log.2.gz",
            "idp.jsonl.1.bz2",
            "a.log.xz",
            "a.log.ZST",
            "x.Z",
        ] {
            assert!(is_compressed(Path::new(name)), "{name}");
        }
        for name in [
            "gateway.log",
            "gateway.log.1",
            "idp.jsonl",
            "gz",
            "a.gzip.log",
        ] {
            assert!(!is_compressed(Path::new(name)), "{name}");
        }
    }
}
