//! Generic JSON lines: pick fields by JSON Pointer (RFC 6901) in one pass.
//!
//! The pointers of a source are compiled into a tree; the line is walked once with serde, and
//! only the members on that tree are looked at. Everything else is skipped with `IgnoredAny`
//! (validated, never allocated), and picked strings borrow from the line unless they contain
//! escapes. That is what keeps parsing near memory speed on wide vendor records.

use super::{Field, Picked, Value};
use crate::swar::{flags_of, HIGH};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

/// A step of a pointer: an object member name (or array index), optionally with a filter that
/// picks the array element whose `key` equals `value` (`/target[type=AppUser]/alternateId`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    name: String,
    filter: Option<(String, String)>,
}

/// A compiled set of pointers.
#[derive(Debug, Default, Clone)]
pub struct Selector {
    root: Node,
    /// The top-level member names of the last line, in order: lines of one source share
    /// them, so a name is recognised by comparing its bytes, not scanned and looked up.
    shape: RefCell<Vec<KnownName>>,
}

/// How many top-level names a selector remembers: a line's first ones (log lines have a few
/// dozen), so a line of a million members cannot make it keep a million.
const KNOWN_NAMES: usize = 64;

/// A top-level member name as a line had it, from its opening quote to its colon, and the
/// root's child it selects: the same bytes scan the same way.
#[derive(Debug, Clone)]
struct KnownName {
    bytes: Box<[u8]>,
    child: Option<usize>,
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(Step, Node)>,
    /// Each child's member name as [`NameHead`] ([`NameHead::NONE`] for a filter), to find a
    /// member's child without comparing every name byte by byte.
    heads: Vec<NameHead>,
    /// Fields that take this node's value, with the priority of this pointer for the field.
    fields: Vec<(Field, u8)>,
    /// Set when a child uses a filter: the node is an array searched element by element.
    filtered: bool,
}

impl Node {
    fn child(&mut self, step: Step) -> &mut Node {
        let index = match self.children.iter().position(|(s, _)| *s == step) {
            Some(index) => index,
            None => {
                self.heads.push(match step.filter {
                    None => NameHead::of(&step.name),
                    Some(_) => NameHead::NONE,
                });
                self.children.push((step, Node::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[index].1
    }
}

/// A member name's length and first eight bytes (zero-padded) as a word: names that differ
/// in either differ, and names of up to eight bytes are equal when their heads are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameHead {
    len: usize,
    word: u64,
}

impl NameHead {
    /// The head of no member name (no name is that long): a filter's.
    const NONE: NameHead = NameHead {
        len: usize::MAX,
        word: 0,
    };

    fn of(name: &str) -> NameHead {
        let bytes = name.as_bytes();
        let word = match bytes.first_chunk::<8>() {
            Some(first) => u64::from_le_bytes(*first),
            None => bytes
                .iter()
                .rev()
                .fold(0, |word, byte| (word << 8) | u64::from(*byte)),
        };
        NameHead {
            len: bytes.len(),
            word,
        }
    }

    /// The index of `node`'s child for the member `name`.
    fn find(node: &Node, name: &str) -> Option<usize> {
        let head = NameHead::of(name);
        for (index, candidate) in node.heads.iter().enumerate() {
            if *candidate != head {
                continue;
            }
            let (step, _) = node.children.get(index)?;
            if head.len <= 8 || step.name.as_bytes()[8..] == name.as_bytes()[8..] {
                return Some(index);
            }
        }
        None
    }
}

/// Why a pointer is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPointer(pub String);

impl Selector {
    /// Adds a pointer whose value goes to `field`.
    pub fn add(&mut self, pointer: &str, field: Field) -> Result<(), BadPointer> {
        self.add_at(pointer, field, 0)
    }

    /// Adds a pointer whose value goes to `field` at a priority (0 = first alternative).
    pub fn add_at(&mut self, pointer: &str, field: Field, priority: u8) -> Result<(), BadPointer> {
        if !pointer.starts_with('/') {
            return Err(BadPointer(format!(
                "{pointer:?} is not a JSON Pointer (it must start with '/', e.g. \"/published\")"
            )));
        }
        let mut node = &mut self.root;
        for raw in pointer[1..].split('/') {
            let step = parse_step(raw)?;
            // `name[key=value]` is two levels: the member `name` (an array, searched), then
            // the element that passes the filter.
            let filter = step.filter.clone();
            node = node.child(Step {
                name: step.name,
                filter: None,
            });
            if let Some(filter) = filter {
                node.filtered = true;
                node = node.child(Step {
                    name: String::new(),
                    filter: Some(filter),
                });
            }
        }
        node.fields.push((field, priority));
        Ok(())
    }

    /// Picks this selector's values out of one line into an empty `picked`. `Err` when the
    /// line is not a JSON object.
    pub fn pick<'a>(&self, line: &'a str, picked: &mut Picked<'a>) -> Result<(), String> {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('{') {
            return Err("not a JSON object".into());
        }
        let mut shape = self.shape.borrow_mut();
        if Scan::new(line)
            .line(&self.root, picked, &mut shape)
            .is_some()
        {
            return Ok(());
        }
        // What the fast path does not handle exactly like serde_json, serde_json does, from
        // the start.
        *picked = Picked::default();
        self.pick_with_serde(line, picked)
    }

    /// [`Selector::pick`] without its fast path.
    fn pick_with_serde<'a>(&self, line: &'a str, picked: &mut Picked<'a>) -> Result<(), String> {
        let mut deserializer = serde_json::Deserializer::from_str(line);
        NodeSeed {
            node: &self.root,
            picked,
        }
        .deserialize(&mut deserializer)
        .map_err(|e| e.to_string())?;
        deserializer.end().map_err(|e| e.to_string())
    }
}

/// The fast path of [`Selector::pick`]: one pass over the bytes, validating as serde_json
/// does and picking as [`NodeSeed`] does, without serde's per-value machinery. It returns
/// `None` for anything it does not handle exactly like serde_json (an error of any kind, an
/// escaped key, a filtered or indexed array, a number or escaped string a node walks into,
/// nesting deeper than 64), and the caller then walks the line with serde_json from the
/// start: so a line is accepted, refused and picked exactly as before, and only the
/// common case is fast.
pub(super) struct Scan<'a> {
    text: &'a str,
    at: usize,
    /// Also refuse numbers and escaped strings (for readers that would check them more
    /// closely than skipping does: see `scim::request_body`).
    plain: bool,
    /// The text is JSON written inside a JSON string, still escaped (a logged request
    /// body): a string opens and closes with `\"`, and any other escape is refused.
    quoted: bool,
    /// Whether the last string read held a `\u` escape.
    unicode: bool,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Scan<'a> {
        Scan {
            text,
            at: 0,
            plain: false,
            quoted: false,
            unicode: false,
        }
    }

    /// A scan that returns `None` at any number or escaped string.
    pub(super) fn plain(text: &'a str) -> Scan<'a> {
        Scan {
            plain: true,
            ..Scan::new(text)
        }
    }

    /// A plain scan of JSON still escaped inside a JSON string's contents (`{\"k\":1}`): it
    /// reads what a plain scan of the unescaped text reads, or returns `None` (at any escape
    /// but a string's quotes, a newline or tab between tokens included).
    pub(super) fn quoted(text: &'a str) -> Scan<'a> {
        Scan {
            plain: true,
            quoted: true,
            ..Scan::new(text)
        }
    }

    /// Whether the whole text has been read.
    pub(super) fn at_end(&self) -> bool {
        self.at == self.text.len()
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    pub(super) fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// JSON whitespace (not Unicode's).
    pub(super) fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A whole line: an object, then only whitespace. `shape` holds the top-level names of
    /// the last line (see [`Selector`]) and is left with this line's.
    fn line(
        &mut self,
        root: &Node,
        picked: &mut Picked<'a>,
        shape: &mut Vec<KnownName>,
    ) -> Option<()> {
        if root.filtered || !root.fields.is_empty() {
            return None;
        }
        self.space();
        self.object(root, picked, Some(shape))?;
        self.space();
        (self.at == self.text.len()).then_some(())
    }

    /// An object whose members are looked up among `node`'s children (or recognised by
    /// `shape`, for the top level).
    fn object(
        &mut self,
        node: &Node,
        picked: &mut Picked<'a>,
        mut shape: Option<&mut Vec<KnownName>>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.space();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let mut index = 0;
        loop {
            self.space();
            let child = match shape.as_deref_mut() {
                Some(shape) if index < KNOWN_NAMES => self.known_name(node, shape, index)?,
                _ => self.name(node)?,
            };
            index += 1;
            self.space();
            match child {
                Some(child) => self.member(&node.children[child].1, picked)?,
                None => self.skip()?,
            }
            self.space();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A member name and its colon, as the index of `node`'s child the name selects.
    fn name(&mut self, node: &Node) -> Option<Option<usize>> {
        let (key, escaped) = self.string()?;
        if escaped {
            return None;
        }
        self.space();
        self.eat(b':')?;
        Some(NameHead::find(node, key))
    }

    /// The `index`th member name (and colon) of a top-level object: recognised when its
    /// bytes are those of the last line's, else read and remembered.
    fn known_name(
        &mut self,
        node: &Node,
        shape: &mut Vec<KnownName>,
        index: usize,
    ) -> Option<Option<usize>> {
        if let Some(known) = shape.get(index) {
            let end = self.at + known.bytes.len();
            let here = self.bytes().get(self.at..end);
            if here.is_some_and(|here| crate::swar::same_bytes(here, &known.bytes)) {
                self.at = end;
                return Some(known.child);
            }
        }
        let start = self.at;
        let child = self.name(node)?;
        let known = KnownName {
            bytes: self.bytes()[start..self.at].into(),
            child,
        };
        shape.truncate(index);
        shape.push(known);
        Some(child)
    }

    /// The value of a member on the pointer tree.
    fn member(&mut self, node: &Node, picked: &mut Picked<'a>) -> Option<()> {
        if node.filtered {
            return self.filtered(node, picked);
        }
        if node.fields.is_empty() {
            // Walked into: an object is searched, anything else is validated and ignored,
            // except what serde_json would check more closely when walking (numbers, escaped
            // strings) or an array with indexed children.
            return match self.peek()? {
                b'{' => self.object(node, picked, None),
                b'[' if node.children.is_empty() => self.skip(),
                b'"' => match self.string()? {
                    (_, false) => Some(()),
                    (_, true) => None,
                },
                b't' | b'f' | b'n' => self.skip(),
                _ => None,
            };
        }
        if self.peek()? == b'"' {
            // A string: its scan already says whether it holds escapes. A logged request
            // body is kept escaped, to be read in that form (`Picked::body`), unless a `\u`
            // escape might not unescape (a lone surrogate reads as null).
            let (contents, escaped) = self.string()?;
            let value = if escaped
                && !self.unicode
                && node.fields.iter().all(|(field, _)| *field == Field::Body)
            {
                Value::Escaped(contents)
            } else {
                string_value(picked, contents, escaped)
            };
            set_fields(picked, &node.fields, value);
            return Some(());
        }
        let start = self.at;
        self.skip()?;
        let raw = &self.text[start..self.at];
        let value = value_of_raw(picked, raw);
        set_fields(picked, &node.fields, value);
        if !node.children.is_empty() {
            match raw.as_bytes()[0] {
                b'{' => Scan::new(raw).object(node, picked, None)?,
                b'[' => return None,
                _ => {}
            }
        }
        Some(())
    }

    /// An array searched element by element for a filtered node (`/target[type=AppUser]/…`),
    /// as the serde walk searches it: every element, and for each the filters in order; an
    /// element passes when it is an object whose last `key` member is the string wanted, and
    /// is then walked by that filter's node. Only an array of objects that a plain scan reads
    /// (no number, no escape: nothing serde_json's `Map` would read differently) is searched
    /// here, and read once for that; anything else goes back to serde_json, as does a pointer
    /// to the node or to an element itself (serde_json keeps those raw).
    fn filtered(&mut self, node: &Node, picked: &mut Picked<'a>) -> Option<()> {
        let wanted_raw =
            |(step, child): &(Step, Node)| step.filter.is_some() && !child.fields.is_empty();
        if !node.fields.is_empty() || node.children.iter().any(wanted_raw) {
            return None;
        }
        let array: &'a str = &self.text[self.at..];
        let mut elements = Scan::plain(array);
        elements.eat(b'[')?;
        elements.space();
        if elements.eat(b']').is_none() {
            loop {
                elements.space();
                let first = elements.at;
                if elements.peek()? != b'{' {
                    return None;
                }
                elements.skip()?;
                let element = &array[first..elements.at];
                // The filters of one array mostly test one key (`type`): it is looked up once.
                let mut tested: Option<(&str, Option<&str>)> = None;
                for (step, child) in &node.children {
                    let Some((key, wanted)) = &step.filter else {
                        continue;
                    };
                    let value = match tested {
                        Some((k, value)) if k == key => value,
                        _ => last_string_member(element, key)?,
                    };
                    tested = Some((key, value));
                    if value == Some(wanted.as_str()) {
                        Scan::plain(element).object(child, picked, None)?;
                    }
                }
                elements.space();
                match elements.peek()? {
                    b',' => elements.at += 1,
                    _ => {
                        elements.eat(b']')?;
                        break;
                    }
                }
            }
        }
        self.at += elements.at;
        Some(())
    }

    /// A string at the cursor: its contents and whether they hold escapes. Validates escapes
    /// as serde_json does when skipping (a `\u` needs four hex digits; surrogates are not
    /// checked there, so an escaped string is only ever skipped or handed back to serde).
    pub(super) fn string(&mut self) -> Option<(&'a str, bool)> {
        if self.quoted {
            return self.quoted_string();
        }
        self.eat(b'"')?;
        let start = self.at;
        let (end, escaped, unicode) = string_end(self.bytes(), start, !self.plain)?;
        self.unicode = unicode;
        self.at = end + 1;
        Some((&self.text[start..end], escaped))
    }

    /// A string of a quoted scan: `\"`, contents with no backslash, `\"`. The text is a
    /// JSON string's contents, so it holds no `"` or control character of its own.
    fn quoted_string(&mut self) -> Option<(&'a str, bool)> {
        const QUOTE: &[u8] = b"\\\"";
        if self.bytes().get(self.at..self.at + 2)? != QUOTE {
            return None;
        }
        let start = self.at + 2;
        let end = special_from(self.bytes(), start);
        if self.bytes().get(end..end + 2)? != QUOTE {
            return None;
        }
        self.at = end + 2;
        Some((self.text.get(start..end)?, false))
    }

    /// Skips one value, validating it as serde_json's `IgnoredAny` does. Iterative: the
    /// depth of nesting is a bit stack (1 = object), at most 64 deep.
    pub(super) fn skip(&mut self) -> Option<()> {
        let (mut stack, mut depth) = (0u64, 0u32);
        loop {
            // A value.
            self.space();
            match self.peek()? {
                b'{' | b'[' => {
                    let object = self.peek() == Some(b'{');
                    self.at += 1;
                    self.space();
                    let close = if object { b'}' } else { b']' };
                    if self.eat(close).is_none() {
                        if depth == 64 {
                            return None;
                        }
                        stack = (stack << 1) | u64::from(object);
                        depth += 1;
                        if object {
                            self.space();
                            self.string()?;
                            self.space();
                            self.eat(b':')?;
                        }
                        continue;
                    }
                }
                // A backslash starts a string only in a quoted scan (`string` says).
                b'"' | b'\\' => {
                    self.string()?;
                }
                b't' => self.word(b"true")?,
                b'f' => self.word(b"false")?,
                b'n' => self.word(b"null")?,
                _ if self.plain => return None,
                _ => self.number()?,
            }
            // After a value: close containers, or go on to the next element or member.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.space();
                let object = stack & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        if object {
                            self.space();
                            self.string()?;
                            self.space();
                            self.eat(b':')?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.at += 1;
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    pub(super) fn word(&mut self, word: &[u8]) -> Option<()> {
        let found = self.bytes().get(self.at..self.at + word.len())?;
        (found == word).then(|| self.at += word.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => {
                self.at += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

/// Where a string whose contents start at `from` ends: the index of its closing quote, and
/// whether its contents hold escapes and a `\u` escape among them. `None` at a control
/// character (serde_json refuses them), at an escape when `escapes` is false or one serde_json
/// would refuse when skipping (a `\u` needs four hex digits; surrogates are not checked
/// there), or at the end of the text.
///
/// Sixteen bytes at a time: an escape is stepped over inside the block its backslash is in,
/// so a logged request body (a dozen `\"` in a line) costs a few instructions an escape
/// rather than a new search each.
fn string_end(bytes: &[u8], from: usize, escapes: bool) -> Option<(usize, bool, bool)> {
    let (mut escaped, mut unicode) = (false, false);
    let mut at = from;
    'blocks: loop {
        let (mut marks, width) = marks_at(bytes, at);
        while marks != 0 {
            let i = marks.trailing_zeros() as usize;
            let found = at + i;
            match bytes[found] {
                b'"' => return Some((found, escaped, unicode)),
                b'\\' if escapes => {}
                _ => return None,
            }
            escaped = true;
            let length = match *bytes.get(found + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                b'u' => {
                    let hex = bytes.get(found + 2..found + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    unicode = true;
                    6
                }
                _ => return None,
            };
            let after = i + length;
            if after >= width {
                at += after;
                continue 'blocks;
            }
            marks &= u32::MAX << after;
        }
        if width == 0 {
            return None;
        }
        at += width;
    }
}

/// The index of the first `"`, `\\` or control character at or after `from` (the length if
/// none).
fn special_from(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    loop {
        let (marks, width) = marks_at(bytes, at);
        if marks != 0 {
            return at + marks.trailing_zeros() as usize;
        }
        if width == 0 {
            return at;
        }
        at += width;
    }
}

/// The `"`, `\\` and control characters among the (up to) sixteen bytes from `at`, bit `i`
/// for the byte at `at + i`, and how many bytes that was (0 at the end): with SSE2 (every
/// x86-64 CPU has it), else a byte at a time.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn marks_at(bytes: &[u8], at: usize) -> (u32, usize) {
    let half = |chunk: &[u8]| i64::from_le_bytes(chunk.try_into().expect("eight bytes"));
    let block = |chunk: &[u8]| marks_sse2(half(&chunk[..8]), half(&chunk[8..]));
    if let Some(chunk) = bytes.get(at..at + 16) {
        return (block(chunk), 16);
    }
    // The last bytes: the text's last sixteen, shifted past those before `at`.
    let width = bytes.len().saturating_sub(at);
    match bytes
        .len()
        .checked_sub(16)
        .and_then(|last| bytes.get(last..))
    {
        Some(chunk) => (block(chunk) >> (16 - width), width),
        None => short_marks(bytes, at),
    }
}

/// [`marks_at`] in a text shorter than sixteen bytes, zero-padded (zeros are control
/// characters: masked off).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(never)]
fn short_marks(bytes: &[u8], at: usize) -> (u32, usize) {
    let width = bytes.len().saturating_sub(at);
    let word = |from: usize| crate::swar::word_at(bytes, from) as i64;
    let marks = marks_sse2(word(at), word(at + 8));
    (marks & ((1 << width) - 1), width)
}

/// The marks of sixteen bytes given as two little-endian words.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn marks_sse2(low: i64, high: i64) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_set_epi64x,
    };
    // SAFETY: these intrinsics only need SSE2, which this build targets (the `cfg` above;
    // every x86-64 CPU has it), and touch no memory.
    unsafe {
        let v = _mm_set_epi64x(high, low);
        let (quote, backslash) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8));
        // A control byte is one the unsigned minimum with 0x1F leaves unchanged.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);
        let marks = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        _mm_movemask_epi8(_mm_or_si128(marks, control)) as u32
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn marks_at(bytes: &[u8], at: usize) -> (u32, usize) {
    marks_at_bytes(bytes, at)
}

/// [`marks_at`] a byte at a time: for other targets, and the reference the tests hold the
/// SSE2 one to.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn marks_at_bytes(bytes: &[u8], at: usize) -> (u32, usize) {
    let block = bytes.get(at..).unwrap_or_default();
    let block = &block[..block.len().min(16)];
    let marks = block
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'"' || b == b'\\' || b < 0x20)
        .fold(0, |marks, (i, _)| marks | 1 << i);
    (marks, block.len())
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn parse_step(raw: &str) -> Result<Step, BadPointer> {
    if let Some(open) = raw.find('[') {
        if raw.ends_with(']') {
            let inner = &raw[open + 1..raw.len() - 1];
            let (key, value) = inner.split_once('=').ok_or_else(|| {
                BadPointer(format!("filter {raw:?} must look like name[key=value]"))
            })?;
            return Ok(Step {
                name: unescape(&raw[..open]),
                filter: Some((key.to_string(), value.to_string())),
            });
        }
    }
    Ok(Step {
        name: unescape(raw),
        filter: None,
    })
}

/// A string (or a map key) that borrows from the line when it has no escapes.
pub(super) struct CowStr<'a>(pub(super) Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Gives `value` to every field of a node.
fn set_fields<'a>(picked: &mut Picked<'a>, fields: &[(Field, u8)], value: Value<'a>) {
    if let Some((&(field, priority), others)) = fields.split_last() {
        for &(field, priority) in others {
            picked.set_at(field, priority, value);
        }
        picked.set_at(field, priority, value);
    }
}

/// An object's members, each value read by `member` (which must consume it).
pub(super) fn members<'a>(
    scan: &mut Scan<'a>,
    mut member: impl FnMut(&mut Scan<'a>, &'a str) -> Option<()>,
) -> Option<()> {
    scan.eat(b'{')?;
    scan.space();
    if scan.eat(b'}').is_some() {
        return Some(());
    }
    loop {
        scan.space();
        let (key, _) = scan.string()?;
        scan.space();
        scan.eat(b':')?;
        scan.space();
        member(scan, key)?;
        scan.space();
        match scan.peek()? {
            b',' => scan.eat(b',')?,
            _ => return scan.eat(b'}'),
        }
    }
}

/// The last member `key` of a plain object (already validated), if it is a string, as
/// serde_json's `Map` keeps the last of a repeated key.
fn last_string_member<'t>(object: &'t str, key: &str) -> Option<Option<&'t str>> {
    let mut found = None;
    members(&mut Scan::plain(object), |scan, name| {
        if name != key {
            return scan.skip();
        }
        found = match scan.peek()? {
            b'"' => Some(scan.string()?.0),
            _ => {
                scan.skip()?;
                None
            }
        };
        Some(())
    })?;
    Some(found)
}

/// The value of a JSON string's contents: borrowed without escapes, else unescaped (null
/// where serde_json would refuse an escape).
fn string_value<'a>(picked: &mut Picked<'a>, contents: &'a str, escaped: bool) -> Value<'a> {
    if !escaped {
        return Value::Str(contents);
    }
    match unescaped(contents) {
        Some(text) => picked.own(text),
        None => {
            picked.lone_surrogate = true;
            Value::Null
        }
    }
}

/// The first element of a raw JSON array when it is a string without escapes: a header sent
/// twice, which Kong (and any Lua or Node logger) writes as an array (`["k4","k4"]`).
pub(super) fn first_string(raw: &str) -> Option<&str> {
    let mut scan = Scan::plain(raw);
    scan.eat(b'[')?;
    scan.space();
    match scan.string()? {
        (contents, false) => Some(contents),
        (_, true) => None,
    }
}

/// Turns the raw JSON text of a picked member into a [`Value`].
fn value_of_raw<'a>(picked: &mut Picked<'a>, raw: &'a str) -> Value<'a> {
    match raw.as_bytes().first() {
        // Raw values are valid JSON: a string is its text between quotes.
        Some(b'"') if raw.len() >= 2 => {
            let contents = &raw[1..raw.len() - 1];
            string_value(
                picked,
                contents,
                memchr::memchr(b'\\', contents.as_bytes()).is_some(),
            )
        }
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'n') | None => Value::Null,
        Some(b'{' | b'[') => Value::Raw(raw),
        Some(_) => Value::Num(raw),
    }
}

/// The contents of a JSON string holding escapes (already checked to be well formed), as
/// serde_json reads them into a `String`: `None` where it refuses a `\\u` escape (a lone or
/// unpaired surrogate).
pub(super) fn unescaped(contents: &str) -> Option<String> {
    let bytes = contents.as_bytes();
    // Escapes are close together (a logged body is all `\\"`), so the runs between them are
    // short: they are copied eight bytes at a time into a buffer (a word past a backslash is
    // copied whole and cut back), which is checked as UTF-8 once at the end.
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut at = 0;
    loop {
        if let Some(chunk) = bytes.get(at..at + 8) {
            let chunk: [u8; 8] = chunk.try_into().expect("eight bytes");
            let run = backslash_in(u64::from_le_bytes(chunk));
            let kept = out.len() + run;
            out.extend_from_slice(&chunk);
            out.truncate(kept);
            at += run;
            if run == 8 {
                continue;
            }
        } else {
            let run = bytes[at..].iter().take_while(|b| **b != b'\\').count();
            out.extend_from_slice(&bytes[at..at + run]);
            at += run;
            if at == bytes.len() {
                break;
            }
        }
        at += 2;
        let escape = match *bytes.get(at - 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let first = hex4(bytes.get(at..at + 4)?)?;
                at += 4;
                let char = match first {
                    0xD800..=0xDBFF => {
                        if bytes.get(at..at + 2)? != b"\\u" {
                            return None;
                        }
                        let second = hex4(bytes.get(at + 2..at + 6)?)?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return None;
                        }
                        at += 6;
                        char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(first)?,
                };
                out.extend_from_slice(char.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(escape);
    }
    String::from_utf8(out).ok()
}

/// How many bytes of a little-endian word come before its first backslash (8 if none).
fn backslash_in(word: u64) -> usize {
    (flags_of(word, b'\\') & HIGH).trailing_zeros() as usize / 8
}

/// Four hex digits (`from_str_radix` alone would also take a sign).
fn hex4(digits: &[u8]) -> Option<u32> {
    if digits.len() != 4 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

struct NodeSeed<'n, 'p, 'a> {
    node: &'n Node,
    picked: &'p mut Picked<'a>,
}

impl<'de, 'n, 'p> DeserializeSeed<'de> for NodeSeed<'n, 'p, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.node.fields.is_empty() && !self.node.filtered {
            return deserializer.deserialize_any(NodeVisitor {
                node: self.node,
                picked: self.picked,
            });
        }
        // The node's own value is wanted (or its array must be searched): keep it raw.
        let raw: &'de RawValue = serde::Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        if !self.node.fields.is_empty() {
            let value = value_of_raw(self.picked, text);
            set_fields(self.picked, &self.node.fields, value);
        }
        if !self.node.children.is_empty() && matches!(text.as_bytes().first(), Some(b'{' | b'[')) {
            let mut inner = serde_json::Deserializer::from_str(text);
            NodeVisitor {
                node: self.node,
                picked: self.picked,
            }
            .walk(&mut inner)
            .map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

struct NodeVisitor<'n, 'p, 'a> {
    node: &'n Node,
    picked: &'p mut Picked<'a>,
}

impl<'n, 'p, 'de> NodeVisitor<'n, 'p, 'de> {
    fn walk(
        self,
        deserializer: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
    ) -> Result<(), serde_json::Error> {
        if self.node.filtered {
            // Search the array: each element is matched against every filtered child.
            let elements: Vec<&'de RawValue> = serde::Deserialize::deserialize(&mut *deserializer)
                .or_else(|_| Ok::<_, serde_json::Error>(Vec::new()))?;
            for element in elements {
                for (step, child) in &self.node.children {
                    let Some((key, wanted)) = &step.filter else {
                        continue;
                    };
                    let text = element.get();
                    let matches =
                        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                            .ok()
                            .and_then(|object| {
                                object
                                    .get(key.as_str())
                                    .and_then(|v| v.as_str().map(|s| s == wanted))
                            })
                            .unwrap_or(false);
                    if matches {
                        let mut inner = serde_json::Deserializer::from_str(text);
                        NodeSeed {
                            node: child,
                            picked: self.picked,
                        }
                        .deserialize(&mut inner)?;
                    }
                }
            }
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'n, 'p, 'de> Visitor<'de> for NodeVisitor<'n, 'p, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let child = self
                .node
                .children
                .iter()
                .find(|(step, _)| step.filter.is_none() && step.name == key.0);
            match child {
                Some((_, child)) => map.next_value_seed(NodeSeed {
                    node: child,
                    picked: self.picked,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let child =
                self.node.children.iter().find(|(step, _)| {
                    step.filter.is_none() && step.name.parse::<usize>() == Ok(index)
                });
            let more = match child {
                Some((_, child)) => seq
                    .next_element_seed(NodeSeed {
                        node: child,
                        picked: self.picked,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{mutations, Rng};

    fn pick<'a>(pointers: &[(&str, Field)], line: &'a str) -> Picked<'a> {
        let mut selector = Selector::default();
        for (pointer, field) in pointers {
            selector.add(pointer, *field).unwrap();
        }
        let mut picked = Picked::default();
        selector.pick(line, &mut picked).unwrap();
        picked
    }

    /// A header sent twice is logged as an array (Kong, any Lua or Node logger): its text is
    /// the first value; an array of anything else, or an escaped first string, stays raw.
    #[test]
    fn an_array_of_strings_reads_as_its_first() {
        assert_eq!(first_string(r#"["k4","k5"]"#), Some("k4"));
        assert_eq!(first_string(r#"[ "k4" ]"#), Some("k4"));
        assert_eq!(first_string(r#"[1,"k4"]"#), None);
        assert_eq!(first_string(r#"["a\"b"]"#), None);
        assert_eq!(first_string(r#"[]"#), None);
        assert_eq!(first_string(r#"{"k":"v"}"#), None);
    }

    #[test]
    fn the_end_of_a_string_is_found_as_a_byte_search_finds_it_at_every_offset() {
        let naive = |bytes: &[u8], from: usize| {
            bytes[from..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map_or(bytes.len(), |n| from + n)
        };
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1F, b' ', 0x7F, 0x80, 0xFF] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    for from in 0..=len {
                        assert_eq!(
                            super::special_from(&bytes, from),
                            naive(&bytes, from),
                            "{special:#x} at {at} of {len}, from {from}"
                        );
                        assert_eq!(
                            super::marks_at(&bytes, from),
                            super::marks_at_bytes(&bytes, from),
                            "{special:#x} at {at} of {len}, from {from}"
                        );
                    }
                }
            }
        }
    }

    /// `string_end` against a reader that takes a byte at a time, on strings made of pieces
    /// (escapes good and bad, quotes, control and multi-byte characters) placed at every
    /// offset of a block, so escapes straddle the sixteen-byte blocks and the text's end.
    #[test]
    fn string_ends_are_found_as_a_byte_at_a_time_reader_finds_them() {
        fn reference(bytes: &[u8], from: usize, escapes: bool) -> Option<(usize, bool, bool)> {
            let (mut escaped, mut unicode, mut at) = (false, false, from);
            loop {
                match *bytes.get(at)? {
                    b'"' => return Some((at, escaped, unicode)),
                    b'\\' if escapes => {
                        escaped = true;
                        match *bytes.get(at + 1)? {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                            b'u' => {
                                let hex = bytes.get(at + 2..at + 6)?;
                                if !hex.iter().all(u8::is_ascii_hexdigit) {
                                    return None;
                                }
                                unicode = true;
                                at += 6;
                            }
                            _ => return None,
                        }
                    }
                    byte if byte < 0x20 || byte == b'\\' => return None,
                    _ => at += 1,
                }
            }
        }
        let pieces: [&[u8]; 14] = [
            b"a",
            b"abcdefg",
            b"\"",
            b"\\\"",
            b"\\\\",
            b"\\n",
            b"\\u00e9",
            b"\\uD83D",
            b"\\u12G4",
            b"\\x",
            b"\\",
            b"\x01",
            b"\x7f",
            "é€".as_bytes(),
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let (mut ends, mut escapes_seen) = (0, 0);
        for _ in 0..20_000 {
            let mut bytes = vec![b'a'; next(18)];
            let from = bytes.len();
            for _ in 0..next(9) {
                bytes.extend_from_slice(pieces[next(pieces.len())]);
            }
            // Mostly with plain text before the end, so most strings end at a quote.
            if next(4) > 0 {
                bytes.extend_from_slice(b"bcd\"}");
            }
            for escapes in [true, false] {
                let expected = reference(&bytes, from, escapes);
                assert_eq!(
                    super::string_end(&bytes, from, escapes),
                    expected,
                    "{:?} from {from}, escapes {escapes}",
                    String::from_utf8_lossy(&bytes)
                );
                ends += usize::from(expected.is_some());
                escapes_seen += usize::from(expected.is_some_and(|(_, escaped, _)| escaped));
            }
        }
        // The mix is not degenerate: strings end, with and without escapes, and some do not.
        assert!(
            ends > 8_000 && escapes_seen > 2_000 && ends < 38_000,
            "{ends} {escapes_seen}"
        );
    }

    #[test]
    fn nested_pointers_pick_strings_numbers_and_raw_objects() {
        let line = r#"{"a":{"b":"x","skip":[1,2,{"c":3}]},"n":12.5,"o":{"k":[1]},"t":true}"#;
        let picked = pick(
            &[
                ("/a/b", Field::Action),
                ("/n", Field::Status),
                ("/o", Field::Body),
                ("/t", Field::Error),
            ],
            line,
        );
        assert_eq!(picked.get(Field::Action), Some(&Value::Str("x")));
        assert_eq!(picked.get(Field::Status), Some(&Value::Num("12.5")));
        assert_eq!(picked.get(Field::Body), Some(&Value::Raw(r#"{"k":[1]}"#)));
        assert_eq!(picked.get(Field::Error), Some(&Value::Bool(true)));
    }

    #[test]
    fn array_indices_and_escaped_names_work() {
        let line = r#"{"list":["zero","one"],"a/b":"slash","e":"tab\there"}"#;
        let picked = pick(
            &[
                ("/list/1", Field::Action),
                ("/a~1b", Field::App),
                ("/e", Field::Error),
            ],
            line,
        );
        assert_eq!(picked.get(Field::Action), Some(&Value::Str("one")));
        assert_eq!(picked.get(Field::App), Some(&Value::Str("slash")));
        assert_eq!(picked.get(Field::Error), Some(&Value::Own(0)));
        assert_eq!(picked.text(Field::Error), Some("tab\there"));
    }

    #[test]
    fn each_unescaped_string_keeps_its_own_text() {
        // Escaped strings on both paths: the fast scan, and serde_json's (a pointer that walks
        // into a number sends the line there). Two pointers to one member share its text.
        for (tail, fast) in [("", true), (r#","z":{"n":1}"#, false)] {
            let line = format!(r#"{{"a":"x\ty","b":"p\nq","c":"plain","d":"\"q\""{tail}}}"#);
            let mut selector = Selector::default();
            for (pointer, field) in [
                ("/a", Field::Action),
                ("/b", Field::App),
                ("/c", Field::Error),
                ("/d", Field::UserLogin),
                ("/d", Field::UserId),
                ("/z/n/x", Field::Status),
            ] {
                selector.add(pointer, field).unwrap();
            }
            let mut scratch = Picked::default();
            let scanned = Scan::new(&line).line(&selector.root, &mut scratch, &mut vec![]);
            assert_eq!(scanned.is_some(), fast, "{line}");
            let mut picked = Picked::default();
            selector.pick(&line, &mut picked).unwrap();
            assert_eq!(picked.text(Field::Action), Some("x\ty"), "{line}");
            assert_eq!(picked.text(Field::App), Some("p\nq"), "{line}");
            assert_eq!(picked.text(Field::Error), Some("plain"), "{line}");
            assert_eq!(picked.text(Field::UserLogin), Some("\"q\""), "{line}");
            assert_eq!(picked.text(Field::UserId), Some("\"q\""), "{line}");
            assert_eq!(picked.text(Field::Status), None, "{line}");
        }
    }

    #[test]
    fn filters_pick_the_array_element_by_type() {
        let line = r#"{"target":[{"type":"AppInstance","alternateId":"Acme"},{"type":"AppUser","alternateId":"rita@corp.example"}]}"#;
        let picked = pick(
            &[
                ("/target[type=AppUser]/alternateId", Field::UserLogin),
                ("/target[type=AppInstance]/alternateId", Field::App),
            ],
            line,
        );
        assert_eq!(picked.text(Field::UserLogin), Some("rita@corp.example"));
        assert_eq!(picked.text(Field::App), Some("Acme"));
    }

    #[test]
    fn non_objects_and_trailing_garbage_are_errors() {
        let mut selector = Selector::default();
        selector.add("/a", Field::Action).unwrap();
        for bad in ["[1,2]", "\"s\"", "{\"a\":1} x", "{\"a\":", "\u{0}\u{1}"] {
            let mut picked = Picked::default();
            assert!(selector.pick(bad, &mut picked).is_err(), "{bad:?}");
        }
    }

    /// What `pick` does, with serde_json alone.
    fn pick_with_serde_only<'a>(
        selector: &Selector,
        line: &'a str,
        picked: &mut Picked<'a>,
    ) -> Result<(), String> {
        if !line.trim_start().starts_with('{') {
            return Err("not a JSON object".into());
        }
        selector.pick_with_serde(line, picked)
    }

    /// The fast path accepts, refuses and picks exactly as serde_json does: over edge cases
    /// and thousands of deterministic mutations of them (bytes deleted, inserted, replaced
    /// with JSON's own punctuation), for flat, nested, indexed and filtered pointers.
    #[test]
    fn the_fast_path_agrees_with_serde_json_on_every_line() {
        let selectors: Vec<Selector> = [
            &[
                ("/time", Field::Time),
                ("/status", Field::Status),
                ("/request_body", Field::Body),
                ("/app", Field::App),
                ("/xrid", Field::CorrelationId),
            ][..],
            &[
                ("/a/b", Field::Action),
                ("/o", Field::Body),
                ("/o/k", Field::App),
            ],
            &[("/list/1", Field::Action), ("/n", Field::Status)],
            &[("/target[type=AppUser]/alternateId", Field::UserLogin)],
            &[
                ("/published", Field::Time),
                ("/target[type=AppInstance]/alternateId", Field::App),
                ("/target[type=AppUser]/alternateId", Field::UserLogin),
                ("/target[type=User]/alternateId", Field::UserLogin),
                ("/target[type=User]/id", Field::UserId),
            ],
            &[
                ("/target[type=AppUser]", Field::Event),
                ("/target[type=AppUser]/alternateId", Field::UserLogin),
            ],
            &[
                ("/target[type=AppUser]/alternateId", Field::UserLogin),
                ("/target[kind=x]/id", Field::UserId),
            ],
        ]
        .iter()
        .map(|pointers| {
            let mut selector = Selector::default();
            for (pointer, field) in pointers.iter() {
                selector.add(pointer, *field).unwrap();
            }
            selector
        })
        .collect();
        let seeds = [
            r#"{"time":"2026-07-01T08:00:00.072917Z","xrid":"ecbea6ce","method":"PATCH","status":200,"request_time":0.090,"app":"box","request_body":"{\"Operations\":[{\"op\":\"replace\",\"path\":\"title\",\"value\":\"Engineer\"}]}"}"#,
            r#"  {"status":-0.5e+3,"n":1E9,"app":null,"time":true,"x":[1,[2,{}],{"y":[]}],"request_body":{"k":[1,"\u00e9\ud83d\ude00"]}}  "#,
            r#"{"a":{"b":"x","skip":[1,2,{"c":3}]},"n":12.5,"o":{"k":[1],"z":"\n"},"t":true}"#,
            r#"{"a":{"b":1e400},"o":"\ud800","list":["zero","one",2],"n":"é\t"}"#,
            r#"{"target":[{"type":"AppUser","alternateId":"r@x"}],"list":{"1":"x"},"a":"\/"}"#,
            r#"{"published":"p","target":[{"id":"0ua1","type":"AppUser","alternateId":"rita@x","d":{"k":[true,null]}},{"type":"AppInstance","alternateId":"Acme","type":"AppInstance"},{"id":"00u1","type":"User","alternateId":"rita@x"},{"type":"User","alternateId":"second"}],"v":"0"}"#,
            r#"{"target":[{"type":"AppUser","type":"User","alternateId":"a"},{"type":{"x":1},"alternateId":"b"},{"alternateId":"c","type":"AppUser"},[],{}]}"#,
            r#"{"target":[{"type":"AppUser","kind":"y","id":"i1","alternateId":"a"},{"type":"x","kind":"x","id":"i2"}]}"#,
            r#"{"a\u0062":1,"app":"\"q\"","time":"\uDC00","status":"\ud800\u0041"}"#,
            r#"{"o":{"k":"v","k":"w"},"o":[],"status":01,"app":"a"}"#,
            r#"{}"#,
            "{\"app\":\"tab\there\",\"status\":0}",
        ];
        let alphabet = "{}[]:,\"\\ \t\n0123456789-+.eEtrufalsnub/\u{1}é\u{a0}";
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let (mut fast, mut total) = (0, 0);
        for selector in &selectors {
            for seed in seeds {
                let lines = mutations(seed, alphabet, 400, 3, &mut rng);
                for line in &lines {
                    let mut quick = Picked::default();
                    let got = selector.pick(line, &mut quick);
                    let mut slow = Picked::default();
                    let expected = pick_with_serde_only(selector, line, &mut slow);
                    assert_eq!(got, expected, "{line}");
                    // A body kept escaped reads, unescaped, as serde_json's string.
                    for slot in 0..quick.values.len() {
                        if let Some((priority, Value::Escaped(raw))) = quick.values[slot] {
                            let value = string_value(&mut quick, raw, true);
                            quick.values[slot] = Some((priority, value));
                        }
                    }
                    assert_eq!(format!("{quick:?}"), format!("{slow:?}"), "{line}");
                    total += 1;
                    let mut scratch = Picked::default();
                    let line_alone =
                        Scan::new(line).line(&selector.root, &mut scratch, &mut vec![]);
                    if line_alone.is_some() {
                        fast += 1;
                    }
                }
            }
        }
        // Enough lines took the fast path for it to be what was tested (most mutations break
        // a line, and the fast path must refuse those), the typical gateway line among them.
        assert!(
            fast * 10 > total,
            "{fast} of {total} lines took the fast path"
        );
        let mut picked = Picked::default();
        assert!(Scan::new(seeds[0])
            .line(&selectors[0].root, &mut picked, &mut vec![])
            .is_some());
        assert_eq!(picked.text(Field::App), Some("box"));
        // An Okta-like event is searched by the fast path, filters and all.
        let mut picked = Picked::default();
        assert!(Scan::new(seeds[5])
            .line(&selectors[4].root, &mut picked, &mut vec![])
            .is_some());
        assert_eq!(picked.text(Field::App), Some("Acme"));
        assert_eq!(picked.text(Field::UserLogin), Some("rita@x"));
        assert_eq!(picked.text(Field::UserId), Some("00u1"));
    }

    /// One selector reads lines whose top-level names change from one to the next (renamed,
    /// reordered, one a prefix of another, escaped, spaced): each is picked as serde_json
    /// picks it alone, whatever the line before taught the selector.
    #[test]
    fn names_remembered_from_the_last_line_never_change_a_pick() {
        let mut selector = Selector::default();
        for (pointer, field) in [
            ("/app", Field::App),
            ("/time", Field::Time),
            ("/status", Field::Status),
        ] {
            selector.add(pointer, field).unwrap();
        }
        let lines = [
            r#"{"time":"t1","app":"a1","status":200,"x":1}"#,
            r#"{"time":"t2","app":"a2","status":201,"x":1}"#,
            r#"{"time":"t3","apple":"no","app":"a3","status":202}"#,
            r#"{"time":"t4","ap":"no","status":203,"app":"a4"}"#,
            r#"{"tim":"no","app":"a5","time":"t5"}"#,
            r#"{"time" : "t6", "app":"a6"}"#,
            r#"{"time":"t7","a\u0070p":"a7"}"#,
            r#"{"time":"t8","app":"a8","app":"a9"}"#,
            r#"{"time":"t9","status":"s","app":{"nested":1}}"#,
            r#"{"time":"t10","app":"a10","status":200,"x":1}"#,
            r#"{"time":"t11","app":"a11"}"#,
            r#"{"time":"t12","app":"a12","status":200,"x":1}"#,
            r#"{"time":"t13","app":"a13","status":204,"x":1"#,
            r#"{"time":"t14","app":"a14","status":205,"x":1}"#,
            r#"{"time":"t15","apq":"no","status":206,"x":1}"#,
        ];
        for round in 0..2 {
            for line in lines {
                let mut picked = Picked::default();
                let got = selector.pick(line, &mut picked);
                let mut alone = Picked::default();
                let expected = pick_with_serde_only(&selector, line, &mut alone);
                assert_eq!(got, expected, "round {round}: {line}");
                assert_eq!(format!("{picked:?}"), format!("{alone:?}"), "{line}");
            }
        }
        let mut picked = Picked::default();
        selector.pick(lines[0], &mut picked).unwrap();
        assert_eq!(picked.text(Field::App), Some("a1"));
        assert_eq!(selector.shape.borrow().len(), 4, "the first line's names");
        // A line wider than what is remembered: its first names only, and still picked.
        let wide: Vec<String> = (0..200).map(|n| format!("\"k{n}\":{n}")).collect();
        let line = format!("{{{},\"app\":\"last\"}}", wide.join(","));
        let mut picked = Picked::default();
        selector.pick(&line, &mut picked).unwrap();
        assert_eq!(picked.text(Field::App), Some("last"));
        assert_eq!(selector.shape.borrow().len(), KNOWN_NAMES);
    }

    #[test]
    fn escapes_read_as_serde_json_reads_them() {
        for contents in [
            r#"plain"#,
            r#"\"quoted\" \\ \/ \b\f\n\r\t"#,
            r#"\u0041\u00e9\u20AC"#,
            r#"\ud83d\ude00 pair"#,
            r#"\ud83d"#,
            r#"\ud83d\u0041"#,
            r#"\ud83d\ud83d\ude00"#,
            r#"\ude00"#,
            r#"\ud83dx"#,
            r#"\ud83d\n"#,
            r#"a\u0000b"#,
            r#"\u+abc"#,
            r#"\u12"#,
            r#"ends with a backslash pair \\"#,
        ] {
            // Runs are copied a word at a time: every case at every offset into a word, with
            // multi-byte characters around it.
            for pad in 0..17 {
                let contents = format!("{}{contents}é{}", "x".repeat(pad), "ü".repeat(pad % 5));
                let expected = serde_json::from_str::<String>(&format!("\"{contents}\"")).ok();
                assert_eq!(unescaped(&contents), expected, "{contents}");
            }
        }
    }

    #[test]
    fn a_member_finds_its_child_by_name_head() {
        let names = [
            "",
            "a",
            "ab",
            "ba",
            "abcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefghi",
            "abcdefghj",
            "abcdefghij",
            "request_body",
            "request_time",
            "é",
            "\u{0}a",
        ];
        let mut node = Node::default();
        for name in names {
            node.child(Step {
                name: name.to_string(),
                filter: None,
            });
        }
        // A filter step shares its (empty) name with a member but is never found as one.
        node.child(Step {
            name: String::new(),
            filter: Some(("type".into(), "x".into())),
        });
        for (index, name) in names.iter().enumerate() {
            assert_eq!(NameHead::find(&node, name), Some(index), "{name:?}");
        }
        for missing in [
            "abc",
            "abcdefghk",
            "request_bodx",
            "\u{0}",
            "b",
            "abcdefgh\u{0}",
        ] {
            assert!(NameHead::find(&node, missing).is_none(), "{missing:?}");
        }
    }

    #[test]
    fn pointers_must_start_with_a_slash() {
        assert!(Selector::default().add("published", Field::Time).is_err());
    }
}
