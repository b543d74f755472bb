//! Understanding a SCIM request from what a gateway logged: which resource, which kind of
//! write (RFC 7644 §3.3–3.6), which userName, and the SCIM error the target answered (§3.12).
//!
//! The four leaver shapes seen on the wire (formats.md §0.3, §6): PATCH with `path: active` and
//! `false` or `"False"` (Entra), PATCH without path and `value.active: false` (Okta OIN), PUT of
//! the whole user with `active: false` (Okta AIW), and DELETE. `op` is matched ignoring case
//! (Entra sends `Replace`, CloudTrail `REPLACE`).

use super::json::{members, CowStr, Scan};
use crate::model::{Member, MemberChange, Method, WriteKind};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// The SCIM resource a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// `/Users` or `/Users/{id}`.
    Users(Option<&'a str>),
    /// `/Groups` or `/Groups/{id}`.
    Groups(Option<&'a str>),
}

/// Finds the `Users`/`Groups` segment of a path (any base, any case) and the id after it.
///
/// One pass over the bytes up to any `?` or `#`, a segment compared where a `/` ends it. It runs
/// for every request and again for every judged attempt; paths are a few dozen bytes, where
/// searching for each slash eight bytes at a time (a word assembled, flags tested, per search)
/// cost ~500 instructions a path against ~200 for this loop (callgrind).
pub fn resource_of(path: &str) -> Option<Resource<'_>> {
    let bytes = path.as_bytes();
    fn resource(users: bool, id: Option<&str>) -> Resource<'_> {
        if users {
            Resource::Users(id)
        } else {
            Resource::Groups(id)
        }
    }
    // Whether the last segment compared was `Users` (true) or `Groups` (false).
    let mut found: Option<bool> = None;
    let mut start = 0;
    for at in 0..=bytes.len() {
        let byte = bytes.get(at).copied().unwrap_or(b'?');
        if !matches!(byte, b'/' | b'?' | b'#') {
            continue;
        }
        if start < at {
            if let Some(users) = found {
                // Both ends are at a `/`, `?`, `#` or the end: always character boundaries.
                return Some(resource(users, Some(&path[start..at])));
            }
            let segment = &bytes[start..at];
            if segment.eq_ignore_ascii_case(b"Users") {
                found = Some(true);
            } else if segment.eq_ignore_ascii_case(b"Groups") {
                found = Some(false);
            }
        }
        if byte != b'/' {
            break;
        }
        start = at + 1;
    }
    found.map(|users| resource(users, None))
}

/// Parses a logged body: a JSON object, or a JSON string holding one (nginx `escape=json`
/// logs `$request_body` as a string).
pub fn parse_body(body: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    match value {
        Value::String(inner) => serde_json::from_str(inner.trim()).ok(),
        other => Some(other),
    }
}

/// The scalar methods of a reader's visitor: each hands what it saw to `$keep`.
macro_rules! forward_scalars {
    ($keep:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            let keep = $keep;
            Ok(keep(Seen::Bool(v)))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            let keep = $keep;
            Ok(keep(Seen::Other))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            let keep = $keep;
            Ok(keep(Seen::Other))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            let keep = $keep;
            Ok(keep(Seen::Other))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let keep = $keep;
            Ok(keep(Seen::Str(v)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            let keep = $keep;
            Ok(keep(Seen::Other))
        }
    };
}

/// What a logged request body says about a SCIM write: `active` as a PUT or a PATCH leaves
/// it, and the `userName`. Read in one pass without building the body's tree, and exactly as
/// reading the tree would: members matched ignoring case, the first in sorted key order, the
/// last of exact duplicates (a `serde_json::Map`'s order); the same JSON refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestBody {
    put_active: Option<bool>,
    patch_active: Option<bool>,
    user_name: Option<String>,
    /// The `userName` the last `replace`/`add` operation sets (a rename by PATCH, as Okta
    /// and others send it).
    patch_user_name: Option<String>,
}

/// What a PATCH's operations set, the last setting of each winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PatchSets {
    active: Option<bool>,
    user_name: Option<String>,
}

impl PatchSets {
    /// Takes what a later operation sets over what an earlier one did.
    fn then(&mut self, later: PatchSets) {
        if later.active.is_some() {
            self.active = later.active;
        }
        if later.user_name.is_some() {
            self.user_name = later.user_name;
        }
    }
}

impl RequestBody {
    /// The value the body gives `active`, if it sets it: a PUT's member, else the last
    /// `replace`/`add` operation that sets it.
    pub fn active(&self, method: Method) -> Option<bool> {
        match method {
            Method::Put => self.put_active,
            _ => self.patch_active,
        }
    }
}

/// Reads a logged request body: a JSON object, or a JSON string holding one (nginx
/// `escape=json` logs `$request_body` as a string). `None` when it is not JSON.
pub fn request_body(body: &str) -> Option<RequestBody> {
    if let Some(read) = plain_body(Scan::plain(body)) {
        return Some(read);
    }
    match serde_json::from_str::<Outer>(crate::model::trim(body)).ok()? {
        Outer::Read(facts) => Some(facts),
        Outer::Text(inner) => serde_json::from_str::<Facts>(inner.trim())
            .ok()
            .map(|facts| facts.0),
    }
}

/// [`request_body`] of a body logged as a JSON string, given its contents still escaped (with
/// no `\u` escape): read in that form when the quoted scan can, else unescaped and read as
/// `Picked::text` would give it (trimmed; empty or `-` is no body).
pub fn request_body_escaped(raw: &str) -> Option<RequestBody> {
    if let Some(read) = plain_body(Scan::quoted(raw)) {
        return Some(read);
    }
    let text = super::json::unescaped(raw)?;
    super::present(&text).and_then(request_body)
}

/// The fast path of [`request_body`]: an object body read in one pass over its bytes, without
/// serde. `None` for anything it does not read exactly as the serde reader does (any number
/// or escape, which the serde reader checks more closely; a member it looks at appearing
/// twice ignoring case, where the serde reader picks one; a body that is a string, or not an
/// object, or not JSON), and the caller reads the body again with serde.
fn plain_body(mut scan: Scan<'_>) -> Option<RequestBody> {
    scan.space();
    let (mut active, mut user_name, mut operations) = (None, None, None);
    members(&mut scan, |scan, key| {
        if key.eq_ignore_ascii_case("active") {
            once(&mut active, plain_scalar(scan)?.and_then(flag))
        } else if key.eq_ignore_ascii_case("userName") {
            once(&mut user_name, plain_text(scan)?.map(str::to_string))
        } else if key.eq_ignore_ascii_case("Operations") {
            once(&mut operations, plain_operations(scan)?)
        } else {
            scan.skip()
        }
    })?;
    scan.space();
    let sets = operations.flatten().unwrap_or_default();
    scan.at_end().then(|| RequestBody {
        put_active: active.flatten(),
        patch_active: sets.active,
        user_name: user_name.flatten(),
        patch_user_name: sets.user_name,
    })
}

/// Fills a member's slot; `None` when it was already filled (a duplicate, ignoring case).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

/// A value as the serde reader sees it: a scalar it looks at, or `Some(None)` for anything
/// else (walked and dropped).
fn plain_scalar<'a>(scan: &mut Scan<'a>) -> Option<Option<Seen<'a>>> {
    Some(match scan.peek()? {
        // A backslash starts a string only in a quoted scan (`Scan::string` says).
        b'"' | b'\\' => Some(Seen::Str(scan.string()?.0)),
        b't' => {
            scan.word(b"true")?;
            Some(Seen::Bool(true))
        }
        b'f' => {
            scan.word(b"false")?;
            Some(Seen::Bool(false))
        }
        _ => {
            scan.skip()?;
            None
        }
    })
}

/// A string value, else nothing.
fn plain_text<'a>(scan: &mut Scan<'a>) -> Option<Option<&'a str>> {
    Some(match plain_scalar(scan)? {
        Some(Seen::Str(text)) => Some(text),
        _ => None,
    })
}

/// `Operations`, as [`Operations`] reads it.
fn plain_operations(scan: &mut Scan<'_>) -> Option<Option<PatchSets>> {
    if scan.peek()? != b'[' {
        scan.skip()?;
        return Some(None);
    }
    scan.eat(b'[')?;
    scan.space();
    let mut sets = PatchSets::default();
    if scan.eat(b']').is_none() {
        loop {
            scan.space();
            sets.then(plain_operation(scan)?);
            scan.space();
            match scan.peek()? {
                b',' => scan.eat(b',')?,
                _ => {
                    scan.eat(b']')?;
                    break;
                }
            }
        }
    }
    Some(Some(sets))
}

/// One PATCH operation, as [`Operation`] reads it: what it sets of `active` and `userName`.
fn plain_operation(scan: &mut Scan<'_>) -> Option<PatchSets> {
    if scan.peek()? != b'{' {
        scan.skip()?;
        return Some(PatchSets::default());
    }
    let (mut op, mut value, mut path) = (None, None, None);
    members(scan, |scan, key| {
        if key.eq_ignore_ascii_case("op") {
            once(&mut op, plain_text(scan)?)
        } else if key.eq_ignore_ascii_case("value") {
            once(&mut value, plain_operation_value(scan)?)
        } else if key.eq_ignore_ascii_case("path") {
            once(&mut path, plain_text(scan)?)
        } else {
            scan.skip()
        }
    })?;
    let op = op.flatten().unwrap_or_default();
    Some(value.unwrap_or_default().set_by(op, path.flatten()))
}

/// An operation's `value`, as [`OperationValue`] reads it.
fn plain_operation_value(scan: &mut Scan<'_>) -> Option<OperationValue> {
    match scan.peek()? {
        b'{' => {
            let (mut active, mut user_name) = (None, None);
            members(scan, |scan, key| {
                if key.eq_ignore_ascii_case("active") {
                    once(&mut active, plain_scalar(scan)?.and_then(flag))
                } else if key.eq_ignore_ascii_case("userName") {
                    once(&mut user_name, plain_text(scan)?.map(str::to_string))
                } else {
                    scan.skip()
                }
            })?;
            Some(OperationValue {
                active: active.flatten(),
                user_name: user_name.flatten(),
                ..OperationValue::default()
            })
        }
        b'[' => {
            scan.skip()?;
            Some(OperationValue::default())
        }
        _ => Some(OperationValue::scalar(plain_scalar(scan)?)),
    }
}

/// A PATCH path without the URN of the core schema of `resource` (`User`, `Group`) that
/// RFC 7644 §3.10 lets a client put before the attribute
/// (`urn:ietf:params:scim:schemas:core:2.0:User:active`); any other path as it is.
pub fn unqualified<'p>(path: &'p str, resource: &str) -> &'p str {
    strip_prefix_ignoring_case(path, "urn:ietf:params:scim:schemas:core:2.0:")
        .and_then(|rest| strip_prefix_ignoring_case(rest, resource))
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(path)
}

/// `text` after `prefix`, matched ignoring ASCII case.
fn strip_prefix_ignoring_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// The body as logged: read, or a string to read again.
enum Outer {
    Read(RequestBody),
    Text(String),
}

/// A body read: an object gives its facts, any other JSON value none.
struct Facts(RequestBody);

/// The member of a `serde_json::Map` that a case-insensitive lookup finds: the smallest
/// key, and of equal keys the last.
struct Chosen<'de, T> {
    key: Option<Cow<'de, str>>,
    value: Option<T>,
}

impl<'de, T> Chosen<'de, T> {
    fn new() -> Self {
        Chosen {
            key: None,
            value: None,
        }
    }

    fn offer(&mut self, key: Cow<'de, str>, value: T) {
        if self.key.as_ref().is_none_or(|chosen| key <= *chosen) {
            self.key = Some(key);
            self.value = Some(value);
        }
    }
}

/// Any JSON value, checked as reading it into a `serde_json::Value` would check it (numbers
/// in range, strings and keys valid), and dropped. Nothing is allocated but escaped keys.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Read(|_: Seen<'_>| Skipped))
    }
}

/// What a value turned out to be, for the readers below: scalars they look at, or a
/// container they walk.
enum Seen<'a> {
    Bool(bool),
    Str(&'a str),
    Other,
}

/// A visitor that reads a value as [`Skipped`] does and keeps what `keep` makes of it (a
/// container is walked, and seen as `Other`).
struct Read<F>(F);

impl<'de, T, F: FnOnce(Seen<'_>) -> T> Visitor<'de> for Read<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Ok((self.0)(Seen::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(Seen::Str(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok((self.0)(Seen::Other))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        while map.next_key::<CowStr>()?.is_some() {
            map.next_value::<Skipped>()?;
        }
        Ok((self.0)(Seen::Other))
    }
}

/// `true`, `false`, or those words as a string in any case.
struct Flag(Option<bool>);

fn flag(seen: Seen<'_>) -> Option<bool> {
    match seen {
        Seen::Bool(b) => Some(b),
        Seen::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Seen::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Read(|seen: Seen<'_>| Flag(flag(seen))))
    }
}

/// A string value, else nothing.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Read(|seen: Seen<'_>| {
            Text(match seen {
                Seen::Str(s) => Some(s.to_string()),
                _ => None,
            })
        }))
    }
}

/// An operation's `value`: a flag or a text itself, or an object with an `active` flag and a
/// `userName`.
#[derive(Default)]
struct OperationValue {
    itself: Option<bool>,
    text: Option<String>,
    active: Option<bool>,
    user_name: Option<String>,
}

impl OperationValue {
    /// A value that is not an object (`None`: anything but a scalar the reader looks at).
    fn scalar(seen: Option<Seen<'_>>) -> OperationValue {
        let text = match &seen {
            Some(Seen::Str(text)) => Some(text.to_string()),
            _ => None,
        };
        OperationValue {
            itself: seen.and_then(flag),
            text,
            ..OperationValue::default()
        }
    }

    /// What an operation `op` with `path` and this value sets: only `replace` and `add` set
    /// anything; a path names the attribute the value is, else the value is an object of
    /// attributes.
    fn set_by(self, op: &str, path: Option<&str>) -> PatchSets {
        if !op.eq_ignore_ascii_case("replace") && !op.eq_ignore_ascii_case("add") {
            return PatchSets::default();
        }
        match path.map(|path| unqualified(path, "User")) {
            Some(path) if path.eq_ignore_ascii_case("active") => PatchSets {
                active: self.itself,
                user_name: None,
            },
            Some(path) if path.eq_ignore_ascii_case("userName") => PatchSets {
                active: None,
                user_name: self.text,
            },
            Some(_) => PatchSets::default(),
            None => PatchSets {
                active: self.active,
                user_name: self.user_name,
            },
        }
    }
}

impl<'de> Deserialize<'de> for OperationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OperationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OperationValue, A::Error> {
                let (mut active, mut user_name) = (Chosen::new(), Chosen::new());
                while let Some(CowStr(key)) = map.next_key()? {
                    if key.eq_ignore_ascii_case("active") {
                        let Flag(value) = map.next_value()?;
                        active.offer(key, value);
                    } else if key.eq_ignore_ascii_case("userName") {
                        let Text(value) = map.next_value()?;
                        user_name.offer(key, value);
                    } else {
                        map.next_value::<Skipped>()?;
                    }
                }
                Ok(OperationValue {
                    active: active.value.flatten(),
                    user_name: user_name.value.flatten(),
                    ..OperationValue::default()
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OperationValue, A::Error> {
                Read(|_: Seen<'_>| OperationValue::default()).visit_seq(seq)
            }
            forward_scalars!(|seen: Seen<'_>| OperationValue::scalar(Some(seen)));
        }
        deserializer.deserialize_any(V)
    }
}

/// One PATCH operation: what it sets of `active` and `userName`.
struct Operation(PatchSets);

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Operation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operation, A::Error> {
                let (mut op, mut value, mut path) = (Chosen::new(), Chosen::new(), Chosen::new());
                while let Some(CowStr(key)) = map.next_key()? {
                    if key.eq_ignore_ascii_case("op") {
                        let Text(text) = map.next_value()?;
                        op.offer(key, text);
                    } else if key.eq_ignore_ascii_case("value") {
                        value.offer(key, map.next_value::<OperationValue>()?);
                    } else if key.eq_ignore_ascii_case("path") {
                        let Text(text) = map.next_value()?;
                        path.offer(key, text);
                    } else {
                        map.next_value::<Skipped>()?;
                    }
                }
                let op = op.value.flatten().unwrap_or_default();
                let value = value.value.unwrap_or_default();
                Ok(Operation(
                    value.set_by(&op, path.value.flatten().as_deref()),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Operation, A::Error> {
                Read(|_: Seen<'_>| Operation(PatchSets::default())).visit_seq(seq)
            }
            forward_scalars!(|_: Seen<'_>| Operation(PatchSets::default()));
        }
        deserializer.deserialize_any(V)
    }
}

/// `Operations`: `Some(active)` as the list leaves it when it is an array, else `None`.
struct Operations(Option<PatchSets>);

impl<'de> Deserialize<'de> for Operations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Operations;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Operations, A::Error> {
                let mut sets = PatchSets::default();
                while let Some(Operation(set)) = seq.next_element()? {
                    sets.then(set);
                }
                Ok(Operations(Some(sets)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Operations, A::Error> {
                Read(|_: Seen<'_>| Operations(None)).visit_map(map)
            }
            forward_scalars!(|_: Seen<'_>| Operations(None));
        }
        deserializer.deserialize_any(V)
    }
}

/// The top-level object's members.
fn read_object<'de, A: MapAccess<'de>>(mut map: A) -> Result<RequestBody, A::Error> {
    let (mut active, mut user_name, mut operations) = (Chosen::new(), Chosen::new(), Chosen::new());
    while let Some(CowStr(key)) = map.next_key()? {
        if key.eq_ignore_ascii_case("active") {
            let Flag(value) = map.next_value()?;
            active.offer(key, value);
        } else if key.eq_ignore_ascii_case("userName") {
            let Text(value) = map.next_value()?;
            user_name.offer(key, value);
        } else if key.eq_ignore_ascii_case("Operations") {
            let Operations(value) = map.next_value()?;
            operations.offer(key, value);
        } else {
            map.next_value::<Skipped>()?;
        }
    }
    let sets = operations.value.flatten().unwrap_or_default();
    Ok(RequestBody {
        put_active: active.value.flatten(),
        patch_active: sets.active,
        user_name: user_name.value.flatten(),
        patch_user_name: sets.user_name,
    })
}

impl<'de> Deserialize<'de> for Facts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Facts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Facts, A::Error> {
                read_object(map).map(Facts)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Facts, A::Error> {
                Read(|_: Seen<'_>| Facts(RequestBody::default())).visit_seq(seq)
            }
            forward_scalars!(|_: Seen<'_>| Facts(RequestBody::default()));
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Outer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Outer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Outer, A::Error> {
                read_object(map).map(Outer::Read)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Outer, A::Error> {
                Read(|_: Seen<'_>| Outer::Read(RequestBody::default())).visit_seq(seq)
            }
            // A string is read again; any other scalar is JSON that says nothing.
            forward_scalars!(|seen: Seen<'_>| match seen {
                Seen::Str(text) => Outer::Text(text.to_string()),
                _ => Outer::Read(RequestBody::default()),
            });
        }
        deserializer.deserialize_any(V)
    }
}

/// What a request does, if it is a SCIM write. Reads, searches (`POST /Users/.search`) and
/// non-SCIM traffic are `None`.
pub fn classify_write(method: Method, path: &str, body: Option<&RequestBody>) -> Option<WriteKind> {
    classify_resource_write(method, resource_of(path), body)
}

/// [`classify_write`] for a path whose resource is already known.
pub fn classify_resource_write(
    method: Method,
    resource: Option<Resource<'_>>,
    body: Option<&RequestBody>,
) -> Option<WriteKind> {
    if !method.is_write() {
        return None;
    }
    match resource? {
        Resource::Users(id) => match (method, id) {
            (Method::Post, None) => Some(WriteKind::CreateUser),
            (Method::Post, Some(id)) if id.starts_with('.') => None,
            (Method::Delete, Some(_)) => Some(WriteKind::DeleteUser),
            (Method::Patch | Method::Put, Some(_)) => match body {
                None => Some(WriteKind::UnknownUpdate),
                Some(body) => match body.active(method) {
                    Some(false) => Some(WriteKind::Disable),
                    Some(true) => Some(WriteKind::Enable),
                    None => Some(WriteKind::Update),
                },
            },
            _ => Some(WriteKind::Update),
        },
        Resource::Groups(id) => match id {
            Some(id) if id.starts_with('.') => None,
            _ => Some(WriteKind::Update),
        },
    }
}

/// `userName` from a body (POST/PUT, or the one a PATCH sets: a rename, not on a group),
/// else from a `filter=userName eq "…"` query. `resource` is the path's ([`resource_of`]),
/// which the caller has already read.
pub fn user_name_of(
    path: &str,
    resource: Option<Resource<'_>>,
    body: Option<&RequestBody>,
) -> Option<String> {
    if let Some(body) = body {
        let on_group = matches!(resource, Some(Resource::Groups(_)));
        let renamed = body.patch_user_name.as_ref().filter(|_| !on_group);
        if let Some(name) = body.user_name.as_ref().or(renamed) {
            return Some(name.clone());
        }
    }
    let (_, query) = path.split_once('?')?;
    let decoded = percent_decode(query);
    let lower = decoded.to_ascii_lowercase();
    let at = lower.find("username eq ")?;
    let rest = &decoded[at + "username eq ".len()..];
    let rest = rest.trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

/// The member ids a group write names (RFC 7644 §3.5.2): the `value`s of a PATCH operation
/// whose `path` is `members` (add, remove or replace), each `value eq "…"` of a
/// `members[…]` filter (Okta's and Entra's remove), a `members` list in a path-less
/// operation's `value` object, and a PUT's whole `members` list; each with what the
/// operation's `op` does to it. Each id once, in first-seen order. Read with serde's tree: ask
/// [`may_name_members`] first, on the text as logged.
pub fn group_members(body: &str) -> Vec<Member> {
    let Some(Value::Object(body)) = parse_body(body) else {
        return Vec::new();
    };
    let mut members: Vec<Member> = Vec::new();
    // Where each id is in `members`: a bulk PATCH may name thousands.
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut add = |id: &str, change: MemberChange| {
        if id.is_empty() {
            return;
        }
        match seen.get(id) {
            // Added and removed in one request: its membership is set, either way.
            Some(&at) if members[at].change != change => members[at].change = MemberChange::Set,
            Some(_) => {}
            None => {
                seen.insert(id.to_string(), members.len());
                members.push(Member {
                    id: id.to_string(),
                    change,
                });
            }
        }
    };
    fn values_of(list: Option<&Value>) -> impl Iterator<Item = &str> {
        let list = list.and_then(Value::as_array).into_iter().flatten();
        list.filter_map(|member| match member {
            Value::Object(member) => member_of(member, "value").and_then(Value::as_str),
            _ => None,
        })
    }
    for id in values_of(member_of(&body, "members")) {
        add(id, MemberChange::Set);
    }
    let operations = member_of(&body, "Operations").and_then(Value::as_array);
    for operation in operations
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let op = member_of(operation, "op").and_then(Value::as_str);
        let Some(change) = op.and_then(MemberChange::of_op) else {
            continue;
        };
        let value = member_of(operation, "value");
        let path = member_of(operation, "path").and_then(Value::as_str);
        match path.map(|path| unqualified(path, "Group")) {
            None => {
                let object = value.and_then(Value::as_object);
                for id in values_of(object.and_then(|v| member_of(v, "members"))) {
                    add(id, change);
                }
            }
            Some(path) => match members_filter(path) {
                Some(filter) => filter_values(filter).for_each(|id| add(&id, change)),
                None if path.trim().eq_ignore_ascii_case("members") => {
                    values_of(value).for_each(|id| add(id, change))
                }
                None => {}
            },
        }
    }
    members
}

/// Whether a body's text (logged, perhaps still escaped) has `members` in it in any case, or
/// a `\u` escape that could spell it: a group write that changes no membership (a PATCH of
/// `displayName`) is passed over without building its tree. Found by its `m` and the `u` of
/// `\u`, not by the backslash: an escaped body has one before every quote.
pub fn may_name_members(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr3_iter(b'm', b'M', b'u', bytes).any(|at| match bytes[at] {
        b'u' => at > 0 && bytes[at - 1] == b'\\',
        _ => bytes
            .get(at..at + 7)
            .is_some_and(|word| word.eq_ignore_ascii_case(b"members")),
    })
}

/// An object's member, its name matched ignoring case.
fn member_of<'v>(object: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// The filter of a `members[…]` path (anything after the `]`, a sub-attribute, ignored).
fn members_filter(path: &str) -> Option<&str> {
    let rest = strip_prefix_ignoring_case(path.trim(), "members")?;
    let rest = rest.trim_start().strip_prefix('[')?;
    Some(&rest[..rest.rfind(']')?])
}

/// The ids a filter compares `value` with: each `value eq "…"` (joined by `or`, any case).
fn filter_values(filter: &str) -> impl Iterator<Item = String> + '_ {
    let lower = filter.to_ascii_lowercase();
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let found = at + lower[at..].find("value")?;
        at = found + "value".len();
        // `value` as a whole word: not the end of `displayvalue` or the start of `values`.
        let before = lower[..found].bytes().next_back();
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_') {
            continue;
        }
        let rest = filter[at..].trim_start();
        let Some(rest) = rest
            .get(..2)
            .filter(|op| op.eq_ignore_ascii_case("eq"))
            .map(|_| rest[2..].trim_start())
        else {
            continue;
        };
        let Some(quoted) = rest.strip_prefix('"') else {
            continue;
        };
        let Some(end) = quoted.find('"') else {
            continue;
        };
        at = filter.len() - quoted.len() + end + 1;
        return Some(quoted[..end].to_string());
    })
}

/// The id of a created resource: the last segment of `Location`, else the body's `id`.
pub fn created_id(location: Option<&str>, response_body: Option<&Value>) -> Option<String> {
    if let Some(location) = location {
        if let Some(Resource::Users(Some(id)) | Resource::Groups(Some(id))) = resource_of(location)
        {
            return Some(id.to_string());
        }
    }
    response_body
        .and_then(Value::as_object)
        .and_then(|o| o.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A SCIM error body's `scimType` and `detail` (`status` may be a string or a number).
pub fn error_detail(response_body: &Value) -> Option<String> {
    let object = response_body.as_object()?;
    let is_error = object
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|v| v.as_str().is_some_and(|v| v.ends_with(":Error")))
        })
        || object.contains_key("scimType")
        || object.contains_key("detail");
    if !is_error {
        return None;
    }
    let scim_type = object.get("scimType").and_then(Value::as_str);
    let detail = object.get("detail").and_then(Value::as_str);
    let text = match (scim_type, detail) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => return None,
    };
    Some(text.chars().take(240).collect())
}

/// Decodes `%XX` escapes and `+` (as a space), leaving malformed escapes as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    if memchr::memchr2(b'%', b'+', bytes).is_none() {
        return text.to_string(); // nothing to decode (the common case: an id)
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{mutations, Rng};

    fn kind(method: &str, path: &str, body: &str) -> Option<WriteKind> {
        let body = request_body(body);
        classify_write(Method::parse(method), path, body.as_ref())
    }

    // The tree-walking reading that `request_body` replaced: the reference it must match.

    fn as_active_flag(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    fn get_ignore_case<'v>(
        object: &'v serde_json::Map<String, Value>,
        key: &str,
    ) -> Option<&'v Value> {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// What a PATCH body's `replace`/`add` operations set of `attribute`, in order: the
    /// value of one whose `path` names it, or its member in a `value` object without a path.
    fn set_by_operations<'v>(body: &'v Value, attribute: &str) -> Vec<&'v Value> {
        let Some(operations) = body
            .as_object()
            .and_then(|o| get_ignore_case(o, "Operations"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        let mut set = Vec::new();
        for operation in operations.iter().filter_map(Value::as_object) {
            let op = get_ignore_case(operation, "op")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !op.eq_ignore_ascii_case("replace") && !op.eq_ignore_ascii_case("add") {
                continue;
            }
            let value = get_ignore_case(operation, "value");
            // RFC 7644 §3.10: an attribute may be named with its schema's URN before it.
            let qualified = format!("urn:ietf:params:scim:schemas:core:2.0:User:{attribute}");
            set.extend(
                match get_ignore_case(operation, "path").and_then(Value::as_str) {
                    Some(path)
                        if path.eq_ignore_ascii_case(attribute)
                            || path.eq_ignore_ascii_case(&qualified) =>
                    {
                        value
                    }
                    Some(_) => None,
                    None => value
                        .and_then(Value::as_object)
                        .and_then(|v| get_ignore_case(v, attribute)),
                },
            );
        }
        set
    }

    /// The value a PATCH or PUT body gives `active`, if it sets it. The last operation wins.
    fn active_in_body(method: Method, body: &Value) -> Option<bool> {
        if method == Method::Put {
            return get_ignore_case(body.as_object()?, "active").and_then(as_active_flag);
        }
        set_by_operations(body, "active")
            .into_iter()
            .filter_map(as_active_flag)
            .next_back()
    }

    /// The `userName` a PATCH body's operations set, if any. The last operation wins.
    fn patch_user_name_in_body(body: &Value) -> Option<String> {
        set_by_operations(body, "userName")
            .into_iter()
            .filter_map(Value::as_str)
            .next_back()
            .map(str::to_string)
    }

    fn read_from_tree(body: &str) -> Option<RequestBody> {
        let tree = parse_body(body)?;
        Some(RequestBody {
            put_active: active_in_body(Method::Put, &tree),
            patch_active: active_in_body(Method::Patch, &tree),
            user_name: tree
                .as_object()
                .and_then(|o| get_ignore_case(o, "userName"))
                .and_then(Value::as_str)
                .map(str::to_string),
            patch_user_name: patch_user_name_in_body(&tree),
        })
    }

    /// `request_body` reads what the tree says, and refuses what the tree refuses: over the
    /// shapes IdPs send, case and duplicate members, odd JSON, and deterministic mutations.
    #[test]
    fn a_body_reads_as_its_tree_does() {
        let seeds = [
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":false}]}"#,
            r#"{"Operations":[{"op":"replace","value":{"active":false,"Active":"TRUE"}},{"op":"remove","path":"active"}]}"#,
            r#"{"Operations":[{"op":"add","path":"ACTIVE","value":"False"},{"OP":"replace","op":"add","path":"x","value":true}]}"#,
            r#"{"userName":"rita@corp.example","active":false,"USERNAME":"other","name":{"givenName":"R"}}"#,
            r#"{"active":true,"active":"false","Operations":{"op":"replace"},"operations":[]}"#,
            r#""{\"Operations\":[{\"op\":\"replace\",\"path\":\"active\",\"value\":false}]}""#,
            r#""not json""#,
            r#"[{"active":false}]"#,
            r#"{"userN\u0061me":"esc@x","big":1e400,"s":"\ud800"}"#,
            r#"{"Operations":[1,"x",null,{"op":"replace","path":"active","value":{"active":false}}]}"#,
            "  {\"userName\": 5, \"emails\": [{\"value\": \"a@x\", \"primary\": true}]}  ",
            // The smaller of two keys equal ignoring case comes first, where it still wins.
            r#"{"USERNAME":"first","userName":"second","Active":false,"active":true}"#,
            r#"{"Operations":[{"PATH":"active","path":"x","Op":"add","op":"remove","value":true}]}"#,
            // Numbers the tree refuses (out of range) and takes.
            r#"{"active":false,"n":1e400,"userName":"big"}"#,
            r#"{"Operations":[{"op":"replace","value":{"active":false,"n":-0.5e-400}}]}"#,
            // Escapes in a value read, and in one skipped (a lone surrogate the tree refuses).
            r#"{"userName":"rita\u0040corp.example","active":false}"#,
            r#"{"active":false,"note":"\ud800"}"#,
            // A rename by PATCH, both shapes, and one that sets it twice.
            r#"{"Operations":[{"op":"replace","path":"userName","value":"new@x"}]}"#,
            r#"{"Operations":[{"op":"replace","value":{"userName":"b@x","USERNAME":"c@x","active":true}},{"op":"add","path":"UserName","value":"d@x"},{"op":"remove","path":"userName"}]}"#,
            // Paths qualified with the core schema's URN (RFC 7644 §3.10), in any case.
            r#"{"Operations":[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:active","value":false}]}"#,
            r#"{"Operations":[{"op":"Replace","path":"URN:IETF:params:scim:schemas:core:2.0:user:userName","value":"q@x"},{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:name","value":"x"}]}"#,
        ];
        let alphabet = "{}[]:,\"\\ 0123456789-.etrufalsnAO/\u{1}é";
        let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
        let (mut read, mut plain, mut quoted, mut total) = (0, 0, 0, 0);
        // The serde reader alone (what `request_body` falls back to), on every body, also
        // those the fast path reads.
        let by_serde = |body: &str| match serde_json::from_str::<Outer>(crate::model::trim(body)) {
            Ok(Outer::Read(facts)) => Some(facts),
            Ok(Outer::Text(inner)) => serde_json::from_str::<Facts>(inner.trim())
                .ok()
                .map(|facts| facts.0),
            Err(_) => None,
        };
        for seed in seeds {
            for body in mutations(seed, alphabet, 600, 2, &mut rng) {
                let got = request_body(&body);
                assert_eq!(got, read_from_tree(&body), "{body}");
                assert_eq!(by_serde(&body), got, "serde: {body}");
                total += 1;
                read += usize::from(got.is_some());
                plain += usize::from(plain_body(Scan::plain(&body)).is_some());
                // Logged as a JSON string (nginx `escape=json`) and read in its escaped form,
                // it reads as the text `Picked::text` gives after unescaping.
                let logged = serde_json::to_string(&body).expect("a string serializes");
                let raw = &logged[1..logged.len() - 1];
                let trimmed = crate::model::trim(&body);
                let as_text = if trimmed.is_empty() || trimmed == "-" {
                    None
                } else {
                    request_body(trimmed)
                };
                assert_eq!(request_body_escaped(raw), as_text, "{raw}");
                quoted += usize::from(plain_body(Scan::quoted(raw)).is_some());
            }
        }
        // The escaped form's fast path answers for much of what the plain one does (it
        // leaves also newlines and tabs between tokens, and non-ASCII escapes, to the rest).
        assert!(
            quoted * 2 > plain,
            "the quoted scan read {quoted} of {plain}"
        );
        assert!(read * 4 > total, "{read} of {total} bodies were JSON");
        // The fast path answers for many (the seeds are full of what it leaves to serde:
        // numbers, escapes, duplicates, string bodies), and for every shape IdPs send.
        assert!(plain * 5 > read, "the fast path read {plain} of {read}");
        for common in [
            seeds[0],
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#,
            r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"rita@corp.example","name":{"givenName":"Rita"},"emails":[{"value":"rita@corp.example","primary":true}],"active":false}"#,
            r#"{"userName":"sam@corp.example","active":true,"password":"Init-1"}"#,
            r#"{"Operations":[{"op":"add","path":"members","value":[{"value":"u-1"}]}]}"#,
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"userName","value":"rita.o@corp.example"}]}"#,
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"userName":"thomas@corp.example"}}]}"#,
        ] {
            assert!(plain_body(Scan::plain(common)).is_some(), "{common}");
            assert_eq!(
                plain_body(Scan::plain(common)),
                read_from_tree(common),
                "{common}"
            );
            let logged = serde_json::to_string(common).expect("a string serializes");
            let raw = &logged[1..logged.len() - 1];
            assert_eq!(
                plain_body(Scan::quoted(raw)),
                read_from_tree(common),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_path_names_its_resource_as_segments_split_on_slashes_would() {
        fn by_splitting(path: &str) -> Option<Resource<'_>> {
            let path = path.split(['?', '#']).next().unwrap_or(path);
            let mut segments = path.split('/').filter(|s| !s.is_empty());
            while let Some(segment) = segments.next() {
                let id = segments.clone().next();
                if segment.eq_ignore_ascii_case("Users") {
                    return Some(Resource::Users(id));
                }
                if segment.eq_ignore_ascii_case("Groups") {
                    return Some(Resource::Groups(id));
                }
            }
            None
        }
        for path in [
            "",
            "/",
            "Users",
            "/scim/v2/Users/u-1",
            "//scim//v2//USERS//u-1//x",
            "/scim/v2/Users/",
            "/scim/v2/Groups?x=/Users/1",
            "/a/groups#/Users/2",
            "/scim/v2/Usersx/1",
            "/scim/v2/Users/.search",
            "/api/v1/orders/7",
            "/Users?filter=userName%20eq%20%22a%22",
            "/Groups",
            "Groups/g-1/members",
            "/scim/v2/Groupsx/g-1",
            "/scim/v2/Usr/u-1",
            "/scim/v2/Users/u-1?attributes=id",
            "/x/Users#frag",
            "/x/Users/#frag",
            "//",
            "/sçim/v2/Users/ü-1/x",
            "/sçim/v2/Users/ü",
            "/Users/%C3%BC",
            "/Users/a?b",
            "Users#",
            "/Groups//",
            "/x/Users/?y",
            "/USERS/ü/x?y#z",
            "?/Users/1",
            "/v2/Groups#x/Users/1",
        ] {
            assert_eq!(resource_of(path), by_splitting(path), "{path}");
        }
    }

    #[test]
    fn the_four_leaver_shapes_are_disables() {
        let entra = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":false}]}"#;
        let entra_string = r#"{"Operations":[{"op":"Replace","path":"active","value":"False"}]}"#;
        let okta = r#"{"Operations":[{"op":"replace","value":{"active":false}}]}"#;
        let put = r#"{"userName":"rita@corp.example","active":false}"#;
        assert_eq!(
            kind("PATCH", "/scim/v2/Users/u-1", entra),
            Some(WriteKind::Disable)
        );
        assert_eq!(
            kind("PATCH", "/scim/v2/Users/u-1", entra_string),
            Some(WriteKind::Disable)
        );
        assert_eq!(
            kind("PATCH", "/scim/v2/Users/u-1", okta),
            Some(WriteKind::Disable)
        );
        assert_eq!(
            kind("PUT", "/scim/v2/Users/u-1", put),
            Some(WriteKind::Disable)
        );
        assert_eq!(
            kind("DELETE", "/scim/v2/Users/u-1", ""),
            Some(WriteKind::DeleteUser)
        );
        // The attribute named with its schema's URN (RFC 7644 §3.10), as some clients send it.
        let qualified = r#"{"Operations":[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:active","value":false}]}"#;
        assert_eq!(
            kind("PATCH", "/scim/v2/Users/u-1", qualified),
            Some(WriteKind::Disable)
        );
        let other_schema =
            r#"{"Operations":[{"op":"replace","path":"urn:example:User:active","value":false}]}"#;
        assert_eq!(
            kind("PATCH", "/scim/v2/Users/u-1", other_schema),
            Some(WriteKind::Update)
        );
    }

    #[test]
    fn a_body_logged_as_a_json_string_is_understood() {
        let logged =
            r#""{\"Operations\":[{\"op\":\"REPLACE\",\"path\":\"active\",\"value\":false}]}""#;
        assert_eq!(
            kind("PATCH", "/Users/u-1", logged),
            Some(WriteKind::Disable)
        );
    }

    #[test]
    fn reads_searches_and_non_scim_traffic_are_not_writes() {
        assert_eq!(kind("GET", "/scim/v2/Users/u-1", ""), None);
        assert_eq!(kind("POST", "/scim/v2/Users/.search", ""), None);
        assert_eq!(kind("POST", "/api/v1/orders", ""), None);
        assert_eq!(
            kind("POST", "/scim/v2/Users", ""),
            Some(WriteKind::CreateUser)
        );
        assert_eq!(
            kind("PATCH", "/scim/v2/Groups/g-1", ""),
            Some(WriteKind::Update)
        );
        assert_eq!(
            kind("PATCH", "/scim/v2/Users/u-1", ""),
            Some(WriteKind::UnknownUpdate)
        );
        assert_eq!(
            kind("PATCH", "/scim/v2/Users/u-1", r#"{"Operations":[]}"#),
            Some(WriteKind::Update)
        );
    }

    #[test]
    fn user_name_comes_from_the_body_or_an_encoded_filter() {
        // A PATCH renaming a user; the same body on a group names no user.
        let rename =
            request_body(r#"{"Operations":[{"op":"replace","path":"userName","value":"b@x"}]}"#);
        assert_eq!(
            user_name_of(
                "/scim/v2/Users/u-1",
                resource_of("/scim/v2/Users/u-1"),
                rename.as_ref()
            )
            .as_deref(),
            Some("b@x")
        );
        assert_eq!(
            user_name_of(
                "/scim/v2/Groups/g-1",
                resource_of("/scim/v2/Groups/g-1"),
                rename.as_ref()
            ),
            None
        );
        let q = "/scim/v2/Users?filter=userName%20eq%20%22rita%40corp.example%22&startIndex=1";
        assert_eq!(
            user_name_of(q, resource_of(q), None).as_deref(),
            Some("rita@corp.example")
        );
        let body = request_body(r#"{"userName":"sam@corp.example"}"#);
        assert_eq!(
            user_name_of("/Users", resource_of("/Users"), body.as_ref()).as_deref(),
            Some("sam@corp.example")
        );
    }

    #[test]
    fn scim_error_bodies_with_string_or_number_status_give_a_detail() {
        let a = parse_body(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"userName taken"}"#).unwrap();
        let b = parse_body(r#"{"status":409,"detail":"userName taken"}"#).unwrap();
        assert_eq!(
            error_detail(&a).as_deref(),
            Some("uniqueness: userName taken")
        );
        assert_eq!(error_detail(&b).as_deref(), Some("userName taken"));
    }

    #[test]
    fn created_id_prefers_location_then_body() {
        let body = parse_body(r#"{"id":"u-9"}"#);
        assert_eq!(
            created_id(Some("https://app/scim/v2/Users/u-8"), body.as_ref()).as_deref(),
            Some("u-8")
        );
        assert_eq!(created_id(None, body.as_ref()).as_deref(), Some("u-9"));
    }

    /// The shapes IdPs send a membership change in (formats.md §0.3, §1c, §2c), each id once.
    #[test]
    fn a_group_write_names_the_members_it_changes() {
        let members =
            |body: &str| -> Vec<String> { group_members(body).into_iter().map(|m| m.id).collect() };
        let changes = |body: &str| -> Vec<(String, MemberChange)> {
            (group_members(body).into_iter())
                .map(|m| (m.id, m.change))
                .collect()
        };
        // Entra: `Add`/`Remove` with a `members` path and a list of `{"$ref", "value"}`.
        assert_eq!(
            members(
                r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"u-1"},{"$ref":null,"value":"u-2"}]}]}"#
            ),
            ["u-1", "u-2"]
        );
        // Okta: a remove by filter, an add by list, in one body; ids repeated count once.
        assert_eq!(
            members(
                r#"{"Operations":[{"op":"remove","path":"members[value eq \"ji-1\"]"},{"op":"add","path":"members","value":[{"value":"ji-2","display":"ben"},{"value":"ji-1"}]}]}"#
            ),
            ["ji-1", "ji-2"]
        );
        // A filter naming several members, in any case and spacing; `display` is not `value`.
        assert_eq!(
            members(
                r#"{"Operations":[{"op":"remove","path":" Members [ Value EQ \"a\" or displayValue eq \"x\" or value eq \"b\"]"}]}"#
            ),
            ["a", "b"]
        );
        // Replace of the whole list; a path-less value object; a PUT of the group.
        assert_eq!(
            members(
                r#"{"Operations":[{"op":"replace","path":"members","value":[{"value":"c"}]},{"op":"replace","value":{"members":[{"value":"d"}],"displayName":"Eng"}}]}"#
            ),
            ["c", "d"]
        );
        assert_eq!(
            members(
                r#"{"displayName":"Eng","MEMBERS":[{"value":"e"},{"value":""},"f",{"value":7}]}"#
            ),
            ["e"]
        );
        // Named with the Group schema's URN (RFC 7644 §3.10).
        assert_eq!(
            members(
                r#"{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:core:2.0:Group:members","value":[{"value":"u-3"}]}]}"#
            ),
            ["u-3"]
        );
        // A body logged as a JSON string (nginx `escape=json`).
        assert_eq!(
            members(
                r#""{\"Operations\":[{\"op\":\"add\",\"path\":\"members\",\"value\":[{\"value\":\"g\"}]}]}""#
            ),
            ["g"]
        );
        // What each operation does to its members; one added and removed in one request is
        // set; an unknown `op` changes nothing.
        assert_eq!(
            changes(
                r#"{"Operations":[{"op":"Remove","path":"members[value eq \"a\"]"},{"op":"add","path":"members","value":[{"value":"b"},{"value":"a"}]},{"op":"replace","path":"members","value":[{"value":"c"}]},{"op":"copy","path":"members","value":[{"value":"d"}]}]}"#
            ),
            [
                ("a".to_string(), MemberChange::Set),
                ("b".to_string(), MemberChange::Add),
                ("c".to_string(), MemberChange::Set),
            ]
        );
        assert_eq!(
            changes(r#"{"displayName":"Eng","members":[{"value":"e"}]}"#),
            [("e".to_string(), MemberChange::Set)]
        );
        // Nothing about members, another attribute's values, or not JSON: none.
        for body in [
            r#"{"Operations":[{"op":"replace","path":"displayName","value":"Eng"}]}"#,
            r#"{"Operations":[{"op":"add","path":"emails","value":[{"value":"a@b"}]}]}"#,
            r#"{"Operations":[{"op":"remove","path":"members[display eq \"x\"]"}]}"#,
            "members",
            "",
        ] {
            assert!(members(body).is_empty(), "{body}");
        }
        // Spelled with escapes, `members` is still read.
        assert_eq!(members(r#"{"\u006dembers":[{"value":"h"}]}"#), ["h"]);
        assert!(!may_name_members(r#"{"displayName":"Eng"}"#));
        assert!(may_name_members(r#"{\"Members\":[]}"#));
        assert!(may_name_members(r#"{\"\\u006dembers\":[]}"#));
    }

    #[test]
    fn percent_decoding_leaves_malformed_escapes() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("u-00é12"), "u-00é12");
    }
}
