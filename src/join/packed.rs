//! A pending gateway write, packed: while a write waits out its join window it is bytes in one
//! allocation (about 80 for a typical SCIM PATCH) instead of a 216-byte record owning up to
//! seven strings. Packed when it enters a bucket, unpacked once when the bucket settles.
//!
//! Layout: a presence byte, then the fixed fields (time, status, method, origin; duration and
//! write kind when present), then the strings in field order, each as a LEB128 length and
//! its UTF-8 bytes. Only this module reads or writes it; checkpoints hold the record itself.
//! A group write's member ids are not packed: only writes joined by a correlation ID are, and
//! that ID, not the members, names their operation.
//!
//! A bucket's key and all its pending writes share one allocation, [`PackedBucket`]: the key
//! (a LEB128 length and its bytes), then each write as a LEB128 length and its packed bytes.
//! A write whose correlation ID is the key's (`c:` and the ID) leaves it out, which halves a
//! typical write; the low bit of its length says so (`length << 1 | 1`).

use crate::model::{GatewayRecord, Method, Origin, WriteKind};
use crate::time::Ts;

const CORRELATION_ID: u8 = 1;
const DURATION: u8 = 1 << 1;
const APP: u8 = 1 << 2;
const PRINCIPAL: u8 = 1 << 3;
const USER_NAME: u8 = 1 << 4;
const RESOURCE_ID: u8 = 1 << 5;
const WRITE: u8 = 1 << 6;
const ERROR_DETAIL: u8 = 1 << 7;

const WRITES: [WriteKind; 6] = [
    WriteKind::CreateUser,
    WriteKind::DeleteUser,
    WriteKind::Disable,
    WriteKind::Enable,
    WriteKind::Update,
    WriteKind::UnknownUpdate,
];

/// A [`GatewayRecord`] packed into one allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedGateway(Box<[u8]>);

impl std::fmt::Debug for PackedGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.unpack().fmt(f)
    }
}

impl PackedGateway {
    pub fn pack(record: &GatewayRecord) -> PackedGateway {
        let mut out = Vec::new();
        pack_into(record, true, &mut out);
        PackedGateway(out.into_boxed_slice())
    }

    pub fn unpack(&self) -> GatewayRecord {
        unpack_from(&self.0, true)
    }
}

/// Appends `record`, packed, to `out`; without its correlation ID unless `with_cid`.
fn pack_into(record: &GatewayRecord, with_cid: bool, out: &mut Vec<u8>) {
    let correlation_id = record.correlation_id.as_deref().filter(|_| with_cid);
    let strings = [
        correlation_id,
        Some(record.path.as_str()),
        record.app.as_deref(),
        record.principal.as_deref(),
        record.user_name.as_deref(),
        record.resource_id.as_deref(),
        record.error_detail.as_deref(),
    ];
    let text: usize = strings.iter().flatten().map(|s| s.len() + 5).sum();
    out.reserve_exact(1 + 8 + 2 + 1 + 14 + 9 + text);
    let mut presence = 0;
    for (present, flag) in [
        (correlation_id.is_some(), CORRELATION_ID),
        (record.duration_ms.is_some(), DURATION),
        (record.app.is_some(), APP),
        (record.principal.is_some(), PRINCIPAL),
        (record.user_name.is_some(), USER_NAME),
        (record.resource_id.is_some(), RESOURCE_ID),
        (record.write.is_some(), WRITE),
        (record.error_detail.is_some(), ERROR_DETAIL),
    ] {
        if present {
            presence |= flag;
        }
    }
    out.push(presence);
    out.extend_from_slice(&record.time.0.to_le_bytes());
    out.extend_from_slice(&record.status.to_le_bytes());
    out.push(method_code(record.method));
    out.extend_from_slice(&record.origin.source.to_le_bytes());
    out.extend_from_slice(&record.origin.file.to_le_bytes());
    put_varint(out, record.origin.line);
    if let Some(duration) = record.duration_ms {
        out.extend_from_slice(&duration.to_bits().to_le_bytes());
    }
    if let Some(write) = record.write {
        out.push(write_code(write));
    }
    for text in strings.into_iter().flatten() {
        put_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
}

/// Reads one record [`pack_into`] wrote; unless `whole`, only what judging reads of an
/// attempt (see [`PackedBucket::attempts`]), passing over the rest without copying it.
fn unpack_from(bytes: &[u8], whole: bool) -> GatewayRecord {
    let mut input = Reader(bytes);
    let presence = input.byte();
    let has = |flag: u8| presence & flag != 0;
    let time = Ts(i64::from_le_bytes(input.array()));
    let status = u16::from_le_bytes(input.array());
    let method = Method::ALL[input.byte() as usize];
    let origin = Origin {
        source: u16::from_le_bytes(input.array()),
        file: u32::from_le_bytes(input.array()),
        line: input.varint(),
    };
    let duration_ms = has(DURATION).then(|| f64::from_bits(u64::from_le_bytes(input.array())));
    let write = has(WRITE).then(|| WRITES[input.byte() as usize]);
    let correlation_id = input.fact(has(CORRELATION_ID), whole);
    let path = input.text();
    let app = input.fact(has(APP), whole);
    let principal = input.fact(has(PRINCIPAL), whole);
    let user_name = input.fact(has(USER_NAME), whole);
    let resource_id = input.fact(has(RESOURCE_ID), whole);
    let error_detail = has(ERROR_DETAIL).then(|| input.text());
    GatewayRecord {
        time,
        correlation_id,
        method,
        path,
        status,
        duration_ms,
        app,
        principal,
        user_name,
        resource_id,
        write,
        error_detail,
        members: Box::default(),
        origin,
    }
}

/// A pending bucket's key and gateway writes, packed into one allocation (see the module).
#[derive(Clone, PartialEq, Eq)]
pub struct PackedBucket(Box<[u8]>);

impl std::fmt::Debug for PackedBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBucket")
            .field("key", &self.key())
            .field("writes", &self.writes().collect::<Vec<_>>())
            .finish()
    }
}

impl PackedBucket {
    pub fn new(key: &str) -> PackedBucket {
        // Exact, so `into_boxed_slice` has no spare room to give back with a `realloc`.
        let mut out = Vec::with_capacity(varint_len(key.len() as u64) + key.len());
        put_varint(&mut out, key.len() as u64);
        out.extend_from_slice(key.as_bytes());
        PackedBucket(out.into_boxed_slice())
    }

    /// The key's bytes, then the writes' bytes.
    fn split(&self) -> (&[u8], &[u8]) {
        let mut input = Reader(&self.0);
        let len = input.varint() as usize;
        input.0.split_at(len)
    }

    /// The whole allocation: key, then writes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn key_bytes(&self) -> &[u8] {
        self.split().0
    }

    pub fn key(&self) -> &str {
        // Packed from a `&str`, so always valid UTF-8.
        crate::swar::text_of(self.key_bytes()).unwrap_or_default()
    }

    /// The correlation ID a write in this bucket may leave out: the key's, if it has one.
    fn key_cid(&self) -> Option<&[u8]> {
        self.key_bytes().strip_prefix(b"c:")
    }

    pub fn push(&mut self, record: &GatewayRecord) {
        self.push_via(record, &mut Vec::new());
    }

    /// [`PackedBucket::push`], packing in `write` first: a buffer the caller keeps, so a
    /// write costs no allocation of its own.
    pub fn push_via(&mut self, record: &GatewayRecord, write: &mut Vec<u8>) {
        let implied = self
            .key_cid()
            .is_some_and(|cid| record.correlation_id.as_deref().map(str::as_bytes) == Some(cid));
        write.clear();
        pack_into(record, !implied, write);
        let header = ((write.len() as u64) << 1) | u64::from(implied);
        let header_len = varint_len(header);
        let mut out = std::mem::take(&mut self.0).into_vec();
        out.reserve_exact(header_len + write.len());
        put_varint(&mut out, header);
        out.extend_from_slice(write);
        self.0 = out.into_boxed_slice();
    }

    /// The writes, unpacked, in the order they were pushed.
    pub fn writes(&self) -> impl Iterator<Item = GatewayRecord> + '_ {
        self.unpacked(true)
    }

    /// The writes as attempts of an operation its IdP records already describe: judging reads
    /// only their time, method, path, status, duration, error detail, write kind and origin,
    /// so their correlation ID, app, principal, user name and resource id are left `None`
    /// rather than copied out to be dropped.
    pub fn attempts(&self) -> impl Iterator<Item = GatewayRecord> + '_ {
        self.unpacked(false)
    }

    fn unpacked(&self, whole: bool) -> impl Iterator<Item = GatewayRecord> + '_ {
        let cid = if whole {
            self.key().strip_prefix("c:")
        } else {
            None
        };
        let mut rest = Reader(self.split().1);
        std::iter::from_fn(move || {
            if rest.0.is_empty() {
                return None;
            }
            let header = rest.varint();
            let (bytes, after) = rest.0.split_at((header >> 1) as usize);
            rest.0 = after;
            let mut record = unpack_from(bytes, whole);
            if header & 1 == 1 {
                record.correlation_id = cid.map(str::to_owned);
            }
            Some(record)
        })
    }
}

/// A bucket's writes, serialized as a sequence of records (a checkpoint's form), unpacked one
/// at a time.
pub struct Writes<'a>(pub &'a PackedBucket);

impl serde::Serialize for Writes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.writes())
    }
}

/// A method's index in [`Method::ALL`]: a match, so a new method cannot be left out.
fn method_code(method: Method) -> u8 {
    match method {
        Method::Get => 0,
        Method::Post => 1,
        Method::Put => 2,
        Method::Patch => 3,
        Method::Delete => 4,
        Method::Other => 5,
    }
}

/// A write kind's index in [`WRITES`], likewise.
fn write_code(write: WriteKind) -> u8 {
    match write {
        WriteKind::CreateUser => 0,
        WriteKind::DeleteUser => 1,
        WriteKind::Disable => 2,
        WriteKind::Enable => 3,
        WriteKind::Update => 4,
        WriteKind::UnknownUpdate => 5,
    }
}

/// The bytes [`put_varint`] writes for `value`.
fn varint_len(value: u64) -> usize {
    (64 - value.leading_zeros()).div_ceil(7).max(1) as usize
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads what [`PackedGateway::pack`] wrote; the bytes never come from outside the process.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().expect("packed record is complete");
        self.0 = rest;
        *first
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }

    fn varint(&mut self) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.byte();
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }

    /// A text that is there if `present`: read if `wanted`, else passed over.
    fn fact(&mut self, present: bool, wanted: bool) -> Option<String> {
        if !present {
            return None;
        }
        if wanted {
            return Some(self.text());
        }
        let len = self.varint() as usize;
        self.0 = &self.0[len..];
        None
    }

    fn text(&mut self) -> String {
        let len = self.varint() as usize;
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        // Packed from a `&str`, so always valid UTF-8 (and checked, never trusted).
        match crate::swar::text_of(head) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(head).into_owned(),
        }
    }
}

impl serde::Serialize for PackedGateway {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.unpack().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for PackedGateway {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        GatewayRecord::deserialize(deserializer).map(|record| PackedGateway::pack(&record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> GatewayRecord {
        GatewayRecord {
            time: Ts(1_782_892_800_123_456),
            correlation_id: Some("9b1c-ÄÖ-é".into()),
            method: Method::Patch,
            path: "/scim/v2/Users/2819c223?x=[redacted]".into(),
            status: 429,
            duration_ms: Some(12.345),
            app: Some("Workday".into()),
            principal: Some("svc-okta".into()),
            user_name: Some("bjensen@example.com".into()),
            resource_id: Some("2819c223".into()),
            write: Some(WriteKind::Disable),
            error_detail: Some("tooMany: slow down 🐢".into()),
            members: Box::default(),
            origin: Origin {
                source: 3,
                file: 70_000,
                line: u64::MAX,
            },
        }
    }

    #[test]
    fn varint_len_counts_the_bytes_put_varint_writes() {
        let mut values = vec![0, u64::MAX];
        for bits in 1..64 {
            values.extend([(1u64 << bits) - 1, 1u64 << bits]);
        }
        for value in values {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(varint_len(value), out.len(), "{value}");
            assert_eq!(Reader(&out).varint(), value);
        }
    }

    #[test]
    fn every_field_survives_packing() {
        let full = record();
        assert_eq!(PackedGateway::pack(&full).unpack(), full);
        let bare = GatewayRecord {
            correlation_id: None,
            path: String::new(),
            duration_ms: None,
            app: None,
            principal: None,
            user_name: None,
            resource_id: None,
            write: None,
            error_detail: None,
            members: Box::default(),
            method: Method::Other,
            status: 0,
            time: Ts(i64::MIN),
            origin: Origin::default(),
        };
        assert_eq!(PackedGateway::pack(&bare).unpack(), bare);
        for method in Method::ALL {
            for write in WRITES.map(Some).into_iter().chain([None]) {
                let one = GatewayRecord {
                    method,
                    write,
                    app: None,
                    duration_ms: Some(f64::NAN),
                    ..record()
                };
                let back = PackedGateway::pack(&one).unpack();
                assert!(back.duration_ms.is_some_and(f64::is_nan));
                assert_eq!((back.method, back.write, back.app), (method, write, None));
            }
        }
    }

    #[test]
    fn a_bucket_holds_its_key_and_writes_with_and_without_the_keys_id() {
        let mut bucket = PackedBucket::new("c:9b1c-ÄÖ-é");
        assert_eq!(bucket.key(), "c:9b1c-ÄÖ-é");
        assert_eq!(bucket.writes().count(), 0);
        let same = record();
        let other = GatewayRecord {
            correlation_id: Some("another".into()),
            ..record()
        };
        let none = GatewayRecord {
            correlation_id: None,
            ..record()
        };
        for write in [&same, &other, &none] {
            bucket.push(write);
        }
        assert_eq!(bucket.key(), "c:9b1c-ÄÖ-é");
        let back: Vec<GatewayRecord> = bucket.writes().collect();
        assert_eq!(back, vec![same.clone(), other.clone(), none.clone()]);
        // As attempts: the same but for the facts an operation's IdP records give.
        let as_attempt = |r: &GatewayRecord| GatewayRecord {
            correlation_id: None,
            app: None,
            principal: None,
            user_name: None,
            resource_id: None,
            ..r.clone()
        };
        let attempts: Vec<GatewayRecord> = bucket.attempts().collect();
        assert_eq!(attempts, [&same, &other, &none].map(as_attempt).to_vec());
        // The key's own ID is not stored twice.
        let alone = PackedBucket::new("c:9b1c-ÄÖ-é").0.len();
        let mut one = PackedBucket::new("c:9b1c-ÄÖ-é");
        one.push(&same);
        let mut elsewhere = PackedBucket::new("o:9b1c-ÄÖ-é");
        elsewhere.push(&same);
        assert_eq!(
            elsewhere.0.len() - one.0.len(),
            same.correlation_id.as_ref().map_or(0, |c| c.len() + 1)
        );
        assert!(one.0.len() > alone);
        // The checkpoint form: the records themselves.
        let json = serde_json::to_string(&Writes(&one)).unwrap();
        assert_eq!(json, serde_json::to_string(&[&same]).unwrap());
    }

    #[test]
    fn a_typical_write_packs_small() {
        let write = GatewayRecord {
            principal: None,
            user_name: None,
            error_detail: None,
            duration_ms: None,
            correlation_id: Some("never-0000001".into()),
            path: "/scim/v2/Users/u-123456".into(),
            app: Some("wiki".into()),
            resource_id: Some("u-123456".into()),
            origin: Origin {
                source: 1,
                file: 0,
                line: 123_456,
            },
            ..record()
        };
        let packed = PackedGateway::pack(&write);
        assert!(packed.0.len() <= 80, "{} bytes", packed.0.len());
        // Through a checkpoint (JSON) and back: the record's own form.
        let json = serde_json::to_string(&packed).unwrap();
        assert_eq!(json, serde_json::to_string(&write).unwrap());
        let back: PackedGateway = serde_json::from_str(&json).unwrap();
        assert_eq!(back, packed);
    }
}
