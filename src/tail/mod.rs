//! Tail: follows every source's files as they grow, rotate and disappear.
//!
//! Learned from Vector's file source and its bug tracker (shared/docs/architecture-notes.md
//! §1–2): a poll loop (glob + stat) is the source of truth and inotify only wakes it early; a
//! file is identified by (device, inode) *and* a hash of its first bytes, so inode reuse and
//! in-place rewrites are new generations; rotated names stay discoverable through the globs
//! (`app.log*`); a file shorter than what was read was truncated (copytruncate) and is read
//! again from 0, while a new file whose head equals a known file's is the rotated copy and is
//! read from where the original was left; a deleted or rotated-away file is read to its end;
//! a partial last line waits for its newline; every file gets a byte budget per pass.

use crate::source::reader::{Line, LineReader};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of a file's head that identify it together with its inode.
const HEAD_BYTES: u64 = 256;

/// Where a file was left: what a checkpoint stores per file (format version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub file_id: u32,
    pub source: String,
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub head_hash: u64,
    pub head_len: u64,
    /// Bytes whose lines have been processed.
    pub offset: u64,
    /// Lines before `offset`.
    pub line: u64,
}

/// A source to follow.
#[derive(Debug, Clone)]
pub struct TailSource {
    pub name: String,
    pub globs: Vec<String>,
    pub max_line_bytes: usize,
}

/// What happened to files, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailCounters {
    pub files_opened: u64,
    pub truncations: u64,
    pub copies_detected: u64,
    pub new_generations: u64,
    pub files_closed: u64,
}

struct TailedFile {
    id: u32,
    source: usize,
    path: PathBuf,
    dev: u64,
    ino: u64,
    head_hash: u64,
    head_len: u64,
    reader: LineReader<File>,
    /// Where processed lines end (advanced by the owner through `mark_consumed`).
    consumed_offset: u64,
    consumed_line: u64,
    gone_since: Option<Instant>,
    /// Its length when last listed, when that last changed, and its modification time: a
    /// file that stopped growing while a newer one of its source goes on has been rotated
    /// away, and its last line is whole even without a newline.
    len: u64,
    grew_at: Instant,
    modified: Option<std::time::SystemTime>,
    /// When it was first listed: a file that turns up after another stopped growing is what
    /// rotated it away; one that was there all along (another node's log) is not.
    seen_at: Instant,
}

/// Information about the file a line came from.
#[derive(Debug, Clone, Copy)]
pub struct LineSource {
    pub file_id: u32,
    pub source: usize,
}

/// What a file held before it was truncated or rewritten: its copy (copytruncate) may turn up
/// under another name after the truncation was noticed.
struct Generation {
    /// The file id its lines were read under: some may still be queued, to be marked
    /// consumed under it.
    id: u32,
    source: usize,
    path: PathBuf,
    dev: u64,
    ino: u64,
    head_hash: u64,
    head_len: u64,
    /// Where it was read to: its copy is read on from here.
    offset: u64,
    line: u64,
    /// Where its processed lines end: what a checkpoint holds for it until its copy turns up
    /// (the lines between were read, and may be queued when the daemon stops).
    consumed_offset: u64,
    consumed_line: u64,
    ended: Instant,
}

/// Follows files.
pub struct Tailer {
    sources: Vec<TailSource>,
    files: Vec<TailedFile>,
    previous: Vec<Generation>,
    /// New files shorter than a head, by (dev, ino), with the length seen and when first
    /// listed: opened once their length holds still for a pass (a copy being written is not
    /// mistaken for a new file), as first listed then (a short log listed beside another at a
    /// start is not a rotation's new file: helper-44's parked live log).
    small: std::collections::HashMap<(u64, u64), (u64, Instant)>,
    resume: Vec<FilePosition>,
    /// Rotated files read to their end and closed while the globs still list them (each
    /// held a descriptor for ever, and under a low limit new files could not be opened):
    /// looked at by stat each pass, opened again from here if they grow, forgotten once no
    /// glob lists them. In checkpoints with the open files. With when each was first listed,
    /// which it keeps when opened again (else another node's log, written side by side,
    /// looked rotated away by it, and its partial last line was split).
    parked: Vec<(FilePosition, Instant)>,
    /// (old file id, the copy's): lines read under the id of a file that was truncated or
    /// drained, marked consumed after its copy took over, move the copy's position.
    copies: Vec<(u32, u32)>,
    next_file_id: u32,
    /// Files that could not be opened (by dev, ino), each reported once.
    unreadable: std::collections::HashSet<(u64, u64)>,
    read_budget_bytes: usize,
    rotate_wait: Duration,
    counters: TailCounters,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The hash of a file's first `len` bytes (`None` if it is shorter), read through a handle
/// already open on it, at its start, without moving its position: never by path, which may
/// name another file by now (a rotation between the listing and the read).
fn head_hash(file: &File, len: u64) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    let mut read = 0;
    while read < buf.len() {
        let n = file.read_at(&mut buf[read..], read as u64)?;
        if n == 0 {
            return Ok(None);
        }
        read += n;
    }
    Ok(Some(fnv1a(&buf)))
}

impl Tailer {
    /// `resume`: positions from the last checkpoint.
    pub fn new(
        sources: Vec<TailSource>,
        resume: Vec<FilePosition>,
        read_budget_bytes: usize,
        rotate_wait: Duration,
    ) -> Tailer {
        let next_file_id = resume.iter().map(|p| p.file_id + 1).max().unwrap_or(0);
        Tailer {
            sources,
            files: Vec::new(),
            previous: Vec::new(),
            small: std::collections::HashMap::new(),
            resume,
            parked: Vec::new(),
            copies: Vec::new(),
            next_file_id,
            unreadable: Default::default(),
            read_budget_bytes: read_budget_bytes.max(1),
            rotate_wait,
            counters: TailCounters::default(),
        }
    }

    pub fn counters(&self) -> TailCounters {
        self.counters
    }

    /// The path of a file id (for error samples).
    pub fn path_of(&self, file_id: u32) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| f.id == file_id)
            .map(|f| f.path.as_path())
    }

    /// The directories to watch for wake-ups.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .sources
            .iter()
            .flat_map(|s| s.globs.iter())
            .filter_map(|g| {
                let path = Path::new(g);
                // The deepest directory without glob characters.
                let mut dir = path.parent()?.to_path_buf();
                while dir.to_string_lossy().contains(['*', '?', '[']) {
                    dir = dir.parent()?.to_path_buf();
                }
                Some(dir)
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Whether every file has been read to its end (nothing is waiting to be read).
    pub fn caught_up(&self) -> bool {
        self.files.iter().all(|f| f.reader.at_eof())
    }

    /// Whether a file still has bytes to read (its lines may hold back the merge).
    pub fn has_unread(&self, file_id: u32) -> bool {
        self.files
            .iter()
            .any(|f| f.id == file_id && !f.reader.at_eof())
    }

    /// Records that the lines of a file up to `offset` (line `line`) are processed. Lines of
    /// a file since truncated move its copy's position (the copy holds the same bytes), or,
    /// until the copy turns up, the old generation's.
    pub fn mark_consumed(&mut self, file_id: u32, offset: u64, line: u64) {
        let copy = self
            .copies
            .iter()
            .find(|(old, _)| *old == file_id)
            .map(|c| c.1);
        if let Some(copy) = copy {
            if let Some(file) = self.files.iter_mut().find(|f| f.id == copy) {
                if offset > file.consumed_offset {
                    (file.consumed_offset, file.consumed_line) = (offset, line);
                }
            }
        }
        if let Some(file) = self.files.iter_mut().find(|f| f.id == file_id) {
            if offset >= file.consumed_offset || line < file.consumed_line {
                file.consumed_offset = offset;
                file.consumed_line = line;
            }
        } else if let Some(g) = self.previous.iter_mut().find(|g| g.id == file_id) {
            if offset > g.consumed_offset {
                (g.consumed_offset, g.consumed_line) = (offset, line);
            }
        }
    }

    /// Where every file stands, for a checkpoint. Files not seen since the last start keep
    /// their old positions (they may come back).
    pub fn positions(&self) -> Vec<FilePosition> {
        let mut positions: Vec<FilePosition> = self
            .files
            .iter()
            .map(|f| FilePosition {
                file_id: f.id,
                source: self.sources[f.source].name.clone(),
                path: f.path.clone(),
                dev: f.dev,
                ino: f.ino,
                head_hash: f.head_hash,
                head_len: f.head_len,
                offset: f.consumed_offset,
                line: f.consumed_line,
            })
            .collect();
        // A truncated file's old generation, until its copy turns up: a restart then reads
        // the copy from there (the lines after it may have been read and still queued).
        positions.extend(
            self.previous
                .iter()
                // (not once its copy has turned up: the copy carries its position)
                .filter(|g| !self.copies.iter().any(|(old, _)| *old == g.id))
                .map(|g| FilePosition {
                    file_id: g.id,
                    source: self.sources[g.source].name.clone(),
                    path: g.path.clone(),
                    dev: g.dev,
                    ino: g.ino,
                    head_hash: g.head_hash,
                    head_len: g.head_len,
                    offset: g.consumed_offset,
                    line: g.consumed_line,
                }),
        );
        positions.extend(self.resume.iter().cloned());
        positions.extend(self.parked.iter().map(|(p, _)| p.clone()));
        positions.sort_by_key(|p| p.file_id);
        positions
    }

    /// One pass: discover files, notice rotation and truncation, and read up to the budget of
    /// each file, handing every complete line to `on_line`.
    pub fn poll(&mut self, on_line: &mut dyn FnMut(LineSource, Line<'_>)) -> io::Result<()> {
        self.poll_holding(&|_| false, on_line)
    }

    /// [`Tailer::poll`], reading nothing this pass from the files `held` names (by file id):
    /// the daemon's, whose lines read earlier still wait in the merge.
    pub fn poll_holding(
        &mut self,
        held: &dyn Fn(u32) -> bool,
        on_line: &mut dyn FnMut(LineSource, Line<'_>),
    ) -> io::Result<()> {
        self.discover()?;
        let budget = self.read_budget_bytes as u64;
        for file in &mut self.files {
            // Held or not, it may have grown: not at its end until a read says so.
            file.reader.clear_eof();
            if held(file.id) {
                continue;
            }
            let source = LineSource {
                file_id: file.id,
                source: file.source,
            };
            let start = file.reader.offset();
            while file.reader.offset() - start < budget {
                match file.reader.next_line()? {
                    Some(line) => on_line(source, line),
                    None => break,
                }
            }
        }
        Ok(())
    }

    fn discover(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let mut seen: Vec<bool> = vec![false; self.files.len()];
        let mut parked_seen: Vec<bool> = vec![false; self.parked.len()];
        for source_index in 0..self.sources.len() {
            let mut paths = Vec::new();
            for pattern in &self.sources[source_index].globs {
                if let Ok(found) = glob::glob(pattern) {
                    paths.extend(found.flatten());
                }
            }
            paths.retain(|p| !crate::source::is_compressed(p));
            paths.sort();
            paths.dedup();
            for path in paths {
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let (dev, ino, len) = (meta.dev(), meta.ino(), meta.len());
                if let Some(index) = self.files.iter().position(|f| f.dev == dev && f.ino == ino) {
                    seen[index] = true;
                    let file = &mut self.files[index];
                    if file.len != len {
                        (file.len, file.grew_at) = (len, now);
                    }
                    file.modified = meta.modified().ok();
                    self.check_known(index, &path, len)?;
                    continue;
                }
                let mut first_seen = None;
                if let Some(index) =
                    (self.parked.iter()).position(|(p, _)| p.dev == dev && p.ino == ino)
                {
                    if len == self.parked[index].0.offset {
                        parked_seen[index] = true;
                        continue; // read to its end, and not grown
                    }
                    // Grown (or rewritten): opened again, from its position if it is the same.
                    let (position, seen_at) = self.parked.remove(index);
                    parked_seen.remove(index);
                    self.resume.push(position);
                    first_seen = Some(seen_at);
                }
                let resumable = self.resume.iter().any(|p| p.dev == dev && p.ino == ino);
                if len < HEAD_BYTES && !resumable {
                    let listed = self.small.entry((dev, ino)).or_insert((u64::MAX, now));
                    if listed.0 != len {
                        listed.0 = len;
                        continue; // still growing (maybe a copy being written): look again next pass
                    }
                }
                if let Some((_, listed)) = self.small.remove(&(dev, ino)) {
                    first_seen = first_seen.or(Some(listed));
                }
                let opened = self.files.len();
                self.open_new(source_index, &path, dev, ino, len)?;
                if let Some(file) = self.files.get_mut(opened) {
                    // Files first listed in one pass share its time (they are one listing).
                    file.seen_at = first_seen.unwrap_or(now);
                }
                seen.push(true);
            }
        }
        // Parked files no glob lists any more are gone (removed, or out of the globs).
        let mut parked_index = 0;
        self.parked.retain(|_| {
            parked_index += 1;
            parked_seen[parked_index - 1]
        });
        // Files no glob finds any more: read to the end, then let go after the grace period.
        let rotate_wait = self.rotate_wait;
        self.previous
            .retain(|g| now.duration_since(g.ended) < rotate_wait.max(Duration::from_secs(1)));
        // Per file, whether another file of its source, written since, turned up after it
        // last grew: the file that rotated it away. (A newer modification alone also said so
        // of two nodes' logs written side by side, and a line one of them wrote in two parts
        // a while apart became two bad lines.)
        let listed: Vec<(usize, u32, Instant, Option<std::time::SystemTime>)> = self
            .files
            .iter()
            .zip(seen.iter().chain(std::iter::repeat(&true)))
            .filter(|(_, found)| **found)
            .map(|(f, _)| (f.source, f.id, f.seen_at, f.modified))
            .collect();
        let rotated_away = |file: &TailedFile| {
            listed.iter().any(|(source, id, seen_at, modified)| {
                *source == file.source
                    && *id != file.id
                    // (with `rotate_wait` of slack: files listed together at a start are one
                    // listing, and an app may write the old file a while after the new one
                    // appears, until logrotate's postrotate signal reaches it)
                    && *seen_at + rotate_wait.max(Duration::from_secs(1)) >= file.grew_at
                    && *modified > file.modified
            })
        };
        // Whether a file of its source was first listed after it: a rotation's new file. Not
        // so for files listed together at a start (two nodes' logs side by side): a quiet
        // live log parked, then copytruncated, was read again from 0 (helper-44).
        let newer_listed = |file: &TailedFile| {
            (listed.iter()).any(|(source, id, seen_at, _)| {
                *source == file.source && *id != file.id && *seen_at > file.seen_at
            })
        };
        let mut closed = 0;
        let mut index = 0;
        let sources = &self.sources;
        let parked = &mut self.parked;
        self.files.retain_mut(|file| {
            let found = seen.get(index).copied().unwrap_or(true);
            index += 1;
            let drained = file.reader.at_eof() && file.reader.buffered() == 0;
            if found {
                file.gone_since = None;
                // Rotated away (a file of its source that turned up since is written; this one
                // has not grown for rotate_wait): a last line without a newline will not get one.
                let idle = now.duration_since(file.grew_at) >= rotate_wait;
                let rotated = idle && rotated_away(file);
                file.reader.set_final_partial_is_line(rotated);
                // Read to its end, every line processed: closed, its position parked.
                let processed = file.consumed_offset == file.reader.offset();
                let read = drained && processed && file.len == file.reader.offset();
                if rotated && read && newer_listed(file) {
                    let position = FilePosition {
                        file_id: file.id,
                        source: sources[file.source].name.clone(),
                        path: file.path.clone(),
                        dev: file.dev,
                        ino: file.ino,
                        head_hash: file.head_hash,
                        head_len: file.head_len,
                        offset: file.consumed_offset,
                        line: file.consumed_line,
                    };
                    parked.push((position, file.seen_at));
                    closed += 1;
                    return false;
                }
                return true;
            }
            let since = *file.gone_since.get_or_insert(now);
            // No glob lists it (removed, or moved out of the globs: logrotate's `olddir`), but
            // the app may still finish its last line through its handle: that line is whole
            // only once the file has not grown for rotate_wait (it was split at once).
            if let Ok(meta) = file.reader.get_ref().metadata() {
                if meta.len() != file.len {
                    (file.len, file.grew_at) = (meta.len(), now);
                }
            }
            let idle = now.duration_since(file.grew_at) >= rotate_wait;
            file.reader.set_final_partial_is_line(idle);
            let keep = !(drained && now.duration_since(since) >= rotate_wait);
            if !keep {
                closed += 1;
            }
            keep
        });
        self.counters.files_closed += closed;
        if closed > 0 {
            let open: Vec<u32> = self.files.iter().map(|f| f.id).collect();
            self.copies.retain(|(_, copy)| open.contains(copy));
        }
        Ok(())
    }

    /// A known inode under a (possibly new) path: follow renames, notice truncation and a new
    /// generation (the head changed), and extend a short head as the file grows.
    fn check_known(&mut self, index: usize, path: &Path, len: u64) -> io::Result<()> {
        let file = &mut self.files[index];
        if file.path != path {
            file.path = path.to_path_buf();
        }
        let truncated = len < file.reader.offset();
        // The held handle is this inode, whatever the path names now.
        let held = file.reader.get_ref();
        let head_changed = file.head_len > 0
            && len >= file.head_len
            && head_hash(held, file.head_len)? != Some(file.head_hash);
        if truncated || head_changed || (file.head_len > 0 && len < file.head_len) {
            if truncated && !head_changed {
                self.counters.truncations += 1;
            } else {
                self.counters.new_generations += 1;
            }
            self.previous.push(Generation {
                id: file.id,
                source: file.source,
                path: file.path.clone(),
                dev: file.dev,
                ino: file.ino,
                head_hash: file.head_hash,
                head_len: file.head_len,
                offset: file.reader.offset(),
                line: file.reader.line_number(),
                consumed_offset: file.consumed_offset,
                consumed_line: file.consumed_line,
                ended: Instant::now(),
            });
            let mut handle = file.reader.get_ref().try_clone()?;
            handle.seek(SeekFrom::Start(0))?;
            let head_len = len.min(HEAD_BYTES);
            file.head_len = head_len;
            file.head_hash = head_hash(&handle, head_len)?.unwrap_or(0);
            let max = self.sources[file.source].max_line_bytes;
            file.reader = LineReader::starting_at(handle, max, 0, 0).wait_for_newline();
            file.consumed_offset = 0;
            file.consumed_line = 0;
            // A new id for the new generation: its line numbers start again at 1, and (file,
            // line) must still name one line (the join's pending writes are keyed by it: under
            // the old id, a copytruncated file's new line 3 replaced the old line 3's pending
            // write, which was lost or joined to the wrong operation). Lines of the old
            // generation still queued keep the old id.
            file.id = self.next_file_id;
            self.next_file_id += 1;
            return Ok(());
        }
        if file.head_len < HEAD_BYTES && len > file.head_len {
            let head_len = len.min(HEAD_BYTES);
            if let Some(hash) = head_hash(file.reader.get_ref(), head_len)? {
                file.head_len = head_len;
                file.head_hash = hash;
            }
        }
        Ok(())
    }

    fn open_new(
        &mut self,
        source: usize,
        path: &Path,
        dev: u64,
        ino: u64,
        len: u64,
    ) -> io::Result<()> {
        // Opened first, then checked to be the file that was listed: a path renamed or
        // removed since is looked at again next pass, not read as another file or an error.
        let mut handle = match File::open(path) {
            Ok(handle) => handle,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                // One file the daemon may not read (a rotation's `create 0600`) is said, once,
                // with its path, and looked at again each pass; the other files go on.
                if self.unreadable.insert((dev, ino)) {
                    tracing::error!(path = %path.display(), error = %e, "Cannot open a log file; skipping it until it can be read.");
                }
                return Ok(());
            }
        };
        self.unreadable.remove(&(dev, ino));
        let meta = handle.metadata()?;
        if (meta.dev(), meta.ino()) != (dev, ino) {
            return Ok(());
        }
        let held = &handle;
        let head_len = len.min(HEAD_BYTES);
        let Some(hash) = head_hash(held, head_len)? else {
            return Ok(());
        };
        let name = self.sources[source].name.clone();
        let mut start = (0u64, 0u64);
        // Where its processed lines end, and the file whose copy it is (its id, and where it
        // was read to).
        let mut consumed = (0u64, 0u64);
        let mut copy_of: Option<(u32, u64, u64)> = None;
        let mut file_id = None;
        // 1. This very file, from the last checkpoint (same inode, same head, not shorter),
        //    under this source's name, or under a name no source has now (a renamed source:
        //    its files are not read again from the start).
        let renamed = |p: &FilePosition| !self.sources.iter().any(|s| s.name == p.source);
        if let Some(position) = self.resume.iter().position(|p| {
            (p.source == name || renamed(p))
                && p.dev == dev
                && p.ino == ino
                && len >= p.offset
                && p.head_len <= len
                && head_hash(held, p.head_len).ok().flatten() == Some(p.head_hash)
        }) {
            let p = self.resume.remove(position);
            if p.source != name {
                tracing::warn!(path = %path.display(), from = %p.source, to = %name, "A source was renamed: its file carries on from its checkpointed position.");
            }
            start = (p.offset, p.line);
            consumed = start;
            file_id = Some(p.file_id);
        } else {
            // 2. A copy of a file still followed (copytruncate; a copy, then a delete): what
            //    was read of the original is not read again. It waits while the original is
            //    listed and not truncated: caught half written, it was read on from where the
            //    original stood, past its own end, taken for truncated and read again from 0;
            //    and the lines the original got meanwhile were read from both. The
            //    truncation (or the original gone and read to its end) says where to go on.
            let matches = |f_head_len: u64, f_head_hash: u64| {
                f_head_len > 0
                    && f_head_len <= len
                    && head_hash(held, f_head_len).ok().flatten() == Some(f_head_hash)
            };
            let original = (self.files.iter())
                .find(|f| f.source == source && matches(f.head_len, f.head_hash));
            if let Some(f) = original {
                let drained =
                    f.gone_since.is_some() && f.reader.at_eof() && f.reader.buffered() == 0;
                if !drained {
                    return Ok(()); // looked at again next pass
                }
                copy_of = Some((f.id, f.reader.offset(), f.reader.line_number()));
                consumed = (f.consumed_offset, f.consumed_line);
            } else if let Some(g) = (self.previous.iter().rev())
                .find(|g| g.source == source && matches(g.head_len, g.head_hash))
            {
                if g.offset > len {
                    return Ok(()); // the copy is still being written
                }
                copy_of = Some((g.id, g.offset, g.line));
                consumed = (g.consumed_offset, g.consumed_line);
            } else if let Some(p) = self
                .resume
                .iter()
                .find(|p| p.source == name && p.offset <= len && matches(p.head_len, p.head_hash))
            {
                // 3. A copy of a file the last checkpoint names (rotated while down).
                start = (p.offset, p.line);
                consumed = start;
                self.counters.copies_detected += 1;
            }
            if let Some((_, offset, line)) = copy_of {
                self.counters.copies_detected += 1;
                start = (offset, line);
            }
        }
        handle.seek(SeekFrom::Start(start.0))?;
        let id = file_id.unwrap_or_else(|| {
            let id = self.next_file_id;
            self.next_file_id += 1;
            id
        });
        let max = self.sources[source].max_line_bytes;
        self.files.push(TailedFile {
            id,
            source,
            path: path.to_path_buf(),
            dev,
            ino,
            head_hash: hash,
            head_len,
            reader: LineReader::starting_at(handle, max, start.0, start.1).wait_for_newline(),
            consumed_offset: consumed.0,
            consumed_line: consumed.1,
            gone_since: None,
            len,
            grew_at: Instant::now(),
            seen_at: Instant::now(),
            modified: meta.modified().ok(),
        });
        self.counters.files_opened += 1;
        if let Some((old, ..)) = copy_of {
            self.copies.push((old, id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Harness {
        dir: tempfile::TempDir,
        tailer: Tailer,
        seen: Vec<String>,
        /// (file id, line number) of each line seen, in order.
        keys: Vec<(u32, u64)>,
    }

    /// A tailer of `dir`'s `app.log*` as the source `name`, from `positions`.
    fn tailer_in(
        dir: &Path,
        name: &str,
        positions: Vec<FilePosition>,
        rotate_wait: Duration,
    ) -> Tailer {
        let glob = dir.join("app.log*").to_string_lossy().into_owned();
        let source = TailSource {
            name: name.into(),
            globs: vec![glob],
            max_line_bytes: 1024,
        };
        Tailer::new(vec![source], positions, 1 << 20, rotate_wait)
    }

    impl Harness {
        fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let tailer = tailer_in(dir.path(), "s", Vec::new(), Duration::ZERO);
            Harness {
                dir,
                tailer,
                seen: Vec::new(),
                keys: Vec::new(),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn append(&self, name: &str, lines: &[&str]) {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .unwrap();
            for line in lines {
                writeln!(file, "{line}").unwrap();
            }
        }
        fn poll(&mut self) {
            let seen = &mut self.seen;
            let mut ids = Vec::new();
            self.tailer
                .poll(&mut |source, line| {
                    if let Line::Text {
                        bytes,
                        next,
                        number,
                        ..
                    } = line
                    {
                        seen.push(String::from_utf8_lossy(bytes).into_owned());
                        ids.push((source.file_id, next, number));
                    }
                })
                .unwrap();
            for (id, next, number) in ids {
                self.keys.push((id, number));
                self.tailer.mark_consumed(id, next, number);
            }
        }
    }

    /// Between listing a path and opening it, a rotation may rename another file onto it or
    /// remove it: neither is read as the listed file, nor stops the daemon (both once did,
    /// QA on 2026-12-05: lines read twice, and "No such file or directory"); the next pass
    /// reads what is there.
    #[test]
    fn a_path_replaced_or_removed_after_listing_is_not_read_as_the_listed_file() {
        let mut h = Harness::new();
        h.append("app.log", &["one"]);
        let listed = fs::metadata(h.path("app.log")).unwrap();
        let (dev, ino, len) = (listed.dev(), listed.ino(), listed.len());
        h.append("other", &["two"]);
        let _keep = File::open(h.path("app.log")).unwrap(); // its inode stays in use
        fs::rename(h.path("other"), h.path("app.log")).unwrap();
        h.tailer
            .open_new(0, &h.path("app.log"), dev, ino, len)
            .unwrap();
        assert!(
            h.tailer.files.is_empty(),
            "another file: looked at next pass"
        );
        fs::remove_file(h.path("app.log")).unwrap();
        h.tailer
            .open_new(0, &h.path("app.log"), dev, ino, len)
            .unwrap();
        assert!(h.tailer.files.is_empty(), "gone: not an error");
        h.append("app.log", &["three"]);
        h.poll();
        h.poll();
        assert_eq!(h.seen, ["three"]);
    }

    /// A rotated-away file whose last line has no newline: once a newer file of the source
    /// is written and the old one has not grown for `rotate_wait`, that line is read (as
    /// `replay` reads it); the active file's partial line still waits.
    #[test]
    fn a_rotated_files_last_line_without_a_newline_is_read_once_it_is_superseded() {
        let mut h = Harness::new();
        h.append("app.log", &["one"]);
        fs::OpenOptions::new()
            .append(true)
            .open(h.path("app.log"))
            .unwrap()
            .write_all(b"tw")
            .unwrap();
        h.poll();
        h.poll();
        assert_eq!(h.seen, ["one"]);
        fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // a later modification time
        h.append("app.log", &["three"]);
        fs::OpenOptions::new()
            .append(true)
            .open(h.path("app.log"))
            .unwrap()
            .write_all(b"fo")
            .unwrap();
        for _ in 0..4 {
            h.poll();
        }
        assert_eq!(h.seen, ["one", "tw", "three"]);
    }

    /// Two nodes' logs of one source, written side by side: one node's line written in two
    /// parts a while apart is one line, though the other file is written meanwhile (it was
    /// taken as a rotation: the part was read as a line, and the rest as a second, both bad).
    #[test]
    fn a_partial_line_waits_while_another_file_of_its_source_is_written_side_by_side() {
        let mut h = Harness::new();
        h.append("app.log.a", &["one"]);
        h.append("app.log.b", &["x"]);
        h.poll();
        h.poll();
        // Both have been there since long before either stops mid-line.
        std::thread::sleep(Duration::from_millis(1100));
        let write = |h: &Harness, name: &str, bytes: &[u8]| {
            fs::OpenOptions::new()
                .append(true)
                .open(h.path(name))
                .unwrap()
                .write_all(bytes)
                .unwrap()
        };
        write(&h, "app.log.a", b"tw");
        h.poll();
        for line in ["y", "z"] {
            std::thread::sleep(Duration::from_millis(20)); // a later modification time
            h.append("app.log.b", &[line]);
            h.poll();
            h.poll();
        }
        write(&h, "app.log.a", b"o\n");
        h.poll();
        h.poll();
        let mut seen = h.seen.clone();
        seen.sort();
        assert_eq!(seen, ["one", "two", "x", "y", "z"]);
    }

    /// (file id, line) names one line, also across a truncation: the join keys pending writes
    /// by it, and under one id a copytruncated file's new line 1 took the place of the old
    /// line 1's pending write (lost, or joined to the wrong operation).
    #[test]
    fn a_truncated_file_s_new_lines_come_under_a_new_id() {
        let mut h = Harness::new();
        h.append("app.log", &["one", "two"]);
        h.poll();
        h.poll();
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(h.path("app.log"))
            .unwrap();
        h.poll();
        h.append("app.log", &["three", "four"]);
        h.poll();
        h.poll();
        assert_eq!(h.seen, ["one", "two", "three", "four"]);
        let mut keys = h.keys.clone();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 4, "{:?}", h.keys);
        assert_ne!(h.keys[0].0, h.keys[2].0, "{:?}", h.keys);
    }

    /// A source renamed in the config carries on from its checkpointed position (its file was
    /// read again from the start, and every operation written twice), and a file the daemon
    /// may not open is skipped, not the end of the daemon.
    #[test]
    fn a_renamed_source_resumes_and_an_unreadable_file_is_skipped() {
        let mut h = Harness::new();
        h.append("app.log", &["one", "two"]);
        h.poll();
        h.poll();
        assert_eq!(h.seen, ["one", "two"]);
        let positions = h.tailer.positions();
        let mut renamed = tailer_in(h.dir.path(), "renamed", positions, Duration::ZERO);
        h.append("app.log", &["three"]);
        let mut seen = Vec::new();
        for _ in 0..2 {
            renamed
                .poll(&mut |_, line| {
                    if let Line::Text { bytes, .. } = line {
                        seen.push(String::from_utf8_lossy(bytes).into_owned());
                    }
                })
                .unwrap();
        }
        assert_eq!(seen, ["three"]);
        // A file that cannot be opened (a symlink to itself: ELOOP; as root, a permission
        // cannot be denied in a test) is skipped and said once, not the end of the daemon.
        let looped = h.path("app.log.loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        assert!(File::open(&looped).is_err());
        for _ in 0..2 {
            let result = renamed.open_new(0, &looped, 1, 2, 10);
            assert!(result.is_ok(), "{result:?}");
        }
        assert!(renamed.unreadable.contains(&(1, 2)));
    }

    #[test]
    fn copytruncate_noticed_before_the_copy_is_found_reads_nothing_twice() {
        let mut h = Harness::new();
        h.append("app.log", &["one", "two"]);
        h.poll();
        h.poll();
        fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(h.path("app.log"))
            .unwrap();
        h.append("app.log", &["three"]);
        h.poll();
        h.poll();
        h.poll();
        h.poll();
        h.seen.sort();
        assert_eq!(h.seen, ["one", "three", "two"]);
        assert_eq!(h.tailer.counters().copies_detected, 1);
    }

    #[test]
    fn lines_written_between_the_last_read_and_the_copy_are_read_from_the_copy() {
        let mut h = Harness::new();
        h.append("app.log", &["one"]);
        h.poll();
        h.poll();
        h.append("app.log", &["two"]);
        fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(h.path("app.log"))
            .unwrap();
        h.poll();
        h.poll();
        assert_eq!(h.seen, ["one", "two"]);
    }

    #[test]
    fn rename_rotation_follows_the_inode_and_reads_the_new_file_from_zero() {
        let mut h = Harness::new();
        h.append("app.log", &["one"]);
        h.poll();
        h.poll();
        h.append("app.log", &["two"]);
        fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
        h.append("app.log", &["three"]);
        h.poll();
        h.poll();
        h.poll();
        h.poll();
        h.seen.sort();
        assert_eq!(h.seen, ["one", "three", "two"]);
    }

    #[test]
    fn a_restart_resumes_each_file_where_it_was_left_even_after_a_rotation() {
        let mut h = Harness::new();
        h.append("app.log", &["one", "two"]);
        h.poll();
        h.poll();
        let positions = h.tailer.positions();
        // Down: the file is rotated and a new one started.
        h.append("app.log", &["three"]);
        fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
        h.append("app.log", &["four"]);
        h.tailer = tailer_in(h.dir.path(), "s", positions, Duration::ZERO);
        h.poll();
        h.poll();
        h.poll();
        h.poll();
        h.seen.sort();
        assert_eq!(h.seen, ["four", "one", "three", "two"]);
    }

    /// A copy caught past its head but short of where the original was read (logrotate's
    /// copytruncate writes it in chunks) waits for the original's truncation: it was read on
    /// from the original's offset, past its own end, taken for truncated and read again from
    /// 0 (every line twice); and a line the original got while the copy was written was read
    /// from both (helper-42's review).
    #[test]
    fn a_copy_caught_short_of_the_originals_offset_waits_for_the_truncation() {
        let mut h = Harness::new();
        let long: Vec<String> = (0..20)
            .map(|i| format!("line {i} {}", "x".repeat(30)))
            .collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        h.append("app.log", &refs);
        h.poll();
        h.poll();
        let whole = fs::read(h.path("app.log")).unwrap();
        assert!(whole.len() > 400 && HEAD_BYTES < 400);
        fs::write(h.path("app.log.1"), &whole[..400]).unwrap();
        h.poll();
        h.append("app.log", &["late"]);
        h.poll();
        h.poll();
        fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(h.path("app.log"))
            .unwrap();
        h.append("app.log", &["after"]);
        for _ in 0..4 {
            h.poll();
        }
        let mut expected = long.clone();
        expected.extend(["late".to_string(), "after".to_string()]);
        let mut seen = h.seen.clone();
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected);
        assert_eq!(h.tailer.counters().copies_detected, 1);
    }

    /// Lines read but not yet processed (queued behind another source's) when their file is
    /// truncated are read again after a restart from the checkpoint: the copy was seeded as
    /// processed up to where the original was read, and they were lost (helper-42's review).
    /// Processed later, they move the copy's position.
    #[test]
    fn lines_queued_when_their_file_is_truncated_are_not_lost_across_a_restart() {
        let read = |tailer: &mut Tailer, consume: &dyn Fn(&str) -> bool| {
            let mut lines = Vec::new();
            for _ in 0..4 {
                tailer
                    .poll(&mut |source, line| {
                        if let Line::Text {
                            bytes,
                            next,
                            number,
                            ..
                        } = line
                        {
                            let text = String::from_utf8_lossy(bytes).into_owned();
                            lines.push((source.file_id, next, number, text));
                        }
                    })
                    .unwrap();
            }
            for (id, next, number, text) in &lines {
                if consume(text) {
                    tailer.mark_consumed(*id, *next, *number);
                }
            }
            lines
        };
        let texts = |lines: &[(u32, u64, u64, String)]| -> Vec<String> {
            lines.iter().map(|l| l.3.clone()).collect()
        };
        for (copy_before_checkpoint, late_consumed) in [(false, false), (true, false), (true, true)]
        {
            let mut h = Harness::new();
            h.append("app.log", &["one", "two", "three"]);
            // "two" and "three" are read, and wait in the merge.
            let queued = read(&mut h.tailer, &|text| text == "one");
            assert_eq!(texts(&queued), ["one", "two", "three"]);
            fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(h.path("app.log"))
                .unwrap();
            h.append("app.log", &["four"]);
            if !copy_before_checkpoint {
                fs::remove_file(h.path("app.log.1")).unwrap();
            }
            let seen = read(&mut h.tailer, &|text| text == "four");
            assert_eq!(texts(&seen), ["four"]);
            if late_consumed {
                // The queued lines are processed now, under the old file's id.
                for (id, next, number, _) in &queued[1..] {
                    h.tailer.mark_consumed(*id, *next, *number);
                }
            }
            let positions = h.tailer.positions();
            if !copy_before_checkpoint {
                fs::write(h.path("app.log.1"), b"one\ntwo\nthree\n").unwrap();
            }
            let mut restarted = tailer_in(h.dir.path(), "s", positions, Duration::ZERO);
            let seen = texts(&read(&mut restarted, &|_| true));
            let expected: &[&str] = if late_consumed {
                &[]
            } else {
                &["two", "three"]
            };
            assert_eq!(
                seen, expected,
                "copy before the checkpoint {copy_before_checkpoint}, late {late_consumed}"
            );
        }
    }

    /// A held file is not read that pass (its lines wait in the daemon's merge), and is read
    /// from where it was once it is let go.
    #[test]
    fn a_held_file_is_read_once_let_go() {
        let mut h = Harness::new();
        h.append("app.log", &["one"]);
        h.append("app.log.b", &["x"]);
        h.poll();
        h.poll();
        h.append("app.log", &["two"]);
        h.append("app.log.b", &["y"]);
        let held = h.keys[0].0;
        let mut seen = Vec::new();
        h.tailer
            .poll_holding(&|id| id == held, &mut |_, line| {
                if let Line::Text { bytes, .. } = line {
                    seen.push(String::from_utf8_lossy(bytes).into_owned());
                }
            })
            .unwrap();
        assert_eq!(seen, ["y"]);
        assert!(h.tailer.has_unread(held));
        h.poll();
        assert_eq!(h.seen[2..], ["two"]);
    }

    /// A rotated file read to its end is closed though its name still matches the globs (each
    /// held a descriptor for ever; helper-42), its position kept: not opened again while it
    /// does not grow, read on from there if it does, in the checkpoint meanwhile, and
    /// forgotten once removed.
    #[test]
    fn a_rotated_file_read_to_its_end_is_closed_and_read_on_if_it_grows() {
        let mut h = Harness::new();
        h.append("app.log", &["one"]);
        h.poll();
        fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // a later modification time
        h.append("app.log", &["two"]);
        for _ in 0..3 {
            h.poll();
        }
        assert_eq!(h.tailer.files.len(), 1, "the rotated file is closed");
        assert_eq!(h.tailer.parked.len(), 1);
        let opened = h.tailer.counters().files_opened;
        h.poll();
        assert_eq!(h.tailer.counters().files_opened, opened, "not opened again");
        assert_eq!(h.tailer.positions().len(), 2);
        h.append("app.log.1", &["late"]);
        h.poll();
        h.poll();
        assert_eq!(h.seen, ["one", "two", "late"]);
        std::thread::sleep(Duration::from_millis(20)); // the active file written after it
        h.append("app.log", &["three"]);
        for _ in 0..3 {
            h.poll();
        }
        assert_eq!(h.tailer.parked.len(), 1, "parked again");
        fs::remove_file(h.path("app.log.1")).unwrap();
        h.poll();
        assert!(h.tailer.parked.is_empty(), "{:?}", h.tailer.parked);
        assert_eq!(h.tailer.positions().len(), 1);
    }

    /// Two nodes' logs listed together are both kept open, however quiet one is: parked as
    /// rotated away, a live log copytruncated later was read again from 0 (helper-44).
    #[test]
    fn files_listed_together_are_not_parked() {
        let mut h = Harness::new();
        let long = "x".repeat(300); // opened at once; a short file waits a pass to be opened
        h.append("app.log.a", &[&long]);
        std::thread::sleep(Duration::from_millis(20)); // b is newer
        h.append("app.log.b", &["x"]);
        for _ in 0..4 {
            h.poll();
        }
        assert_eq!(h.tailer.files.len(), 2);
        assert!(h.tailer.parked.is_empty());
    }

    /// A file moved out of the globs (logrotate's `olddir`) while its app is writing a line in
    /// two parts: the line is whole once the file stops growing for `rotate_wait`, not split
    /// at once into two bad lines (helper-42).
    #[test]
    fn a_line_finished_after_its_file_left_the_globs_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut tailer = tailer_in(dir.path(), "s", Vec::new(), Duration::from_millis(300));
        let mut seen = Vec::new();
        let mut poll = |tailer: &mut Tailer| {
            tailer
                .poll(&mut |_, line| {
                    if let Line::Text { bytes, .. } = line {
                        seen.push(String::from_utf8_lossy(bytes).into_owned());
                    }
                })
                .unwrap()
        };
        fs::write(dir.path().join("app.log"), "one\ntw").unwrap();
        poll(&mut tailer);
        poll(&mut tailer); // (a file shorter than a head is opened once it holds still)
        fs::create_dir(dir.path().join("old")).unwrap();
        let moved = dir.path().join("old/app.log");
        fs::rename(dir.path().join("app.log"), &moved).unwrap();
        poll(&mut tailer);
        poll(&mut tailer);
        let mut file = fs::OpenOptions::new().append(true).open(&moved).unwrap();
        file.write_all(b"o\n").unwrap();
        poll(&mut tailer);
        std::thread::sleep(Duration::from_millis(400));
        poll(&mut tailer);
        poll(&mut tailer);
        assert_eq!(seen, ["one", "two"]);
    }

    #[test]
    fn a_copy_caught_half_written_is_not_read_from_zero() {
        let mut h = Harness::new();
        let long: Vec<String> = (0..20)
            .map(|i| format!("line {i} {}", "x".repeat(30)))
            .collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        h.append("app.log", &refs);
        h.poll();
        h.poll();
        // The copy is caught while only its first bytes exist.
        fs::write(
            h.path("app.log.1"),
            &fs::read(h.path("app.log")).unwrap()[..40],
        )
        .unwrap();
        h.poll();
        fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(h.path("app.log"))
            .unwrap();
        h.poll();
        h.poll();
        h.poll();
        h.poll();
        assert_eq!(h.seen.len(), 20, "{:?}", h.seen);
    }
}
