//! Understanding a SCIM request from what a gateway logged: which resource, which kind of
//! write (RFC 7644 §3.3–3.6), which userName, and the SCIM error the target answered (§3.12).
//!
//! The four leaver shapes seen on the wire (formats.md §0.3, §6): PATCH with `path: active` and
//! `false` or `"False"` (Entra), PATCH without path and `value.active: false` (Okta OIN), PUT of
//! the whole user with `active: false` (Okta AIW), and DELETE. `op` is matched ignoring case
//! (Entra sends `Replace`, CloudTrail `REPLACE`).

use crate::model::{Method, WriteKind};
use serde_json::Value;

/// The SCIM resource a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// `/Users` or `/Users/{id}`.
    Users(Option<&'a str>),
    /// `/Groups` or `/Groups/{id}`.
    Groups(Option<&'a str>),
}

/// Finds the `Users`/`Groups` segment of a path (any base, any case) and the id after it.
pub fn resource_of(path: &str) -> Option<Resource<'_>> {
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

/// Parses a logged body: a JSON object, or a JSON string holding one (nginx `escape=json`
/// logs `$request_body` as a string).
pub fn parse_body(body: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    match value {
        Value::String(inner) => serde_json::from_str(inner.trim()).ok(),
        other => Some(other),
    }
}

fn as_active_flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn get_ignore_case<'v>(object: &'v serde_json::Map<String, Value>, key: &str) -> Option<&'v Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// The value a PATCH or PUT body gives `active`, if it sets it. The last operation wins.
pub fn active_in_body(method: Method, body: &Value) -> Option<bool> {
    let object = body.as_object()?;
    if method == Method::Put {
        return get_ignore_case(object, "active").and_then(as_active_flag);
    }
    let operations = get_ignore_case(object, "Operations")?.as_array()?;
    let mut active = None;
    for operation in operations {
        let Some(operation) = operation.as_object() else {
            continue;
        };
        let op = get_ignore_case(operation, "op")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !op.eq_ignore_ascii_case("replace") && !op.eq_ignore_ascii_case("add") {
            continue;
        }
        let value = get_ignore_case(operation, "value");
        match get_ignore_case(operation, "path").and_then(Value::as_str) {
            Some(path) if path.eq_ignore_ascii_case("active") => {
                if let Some(flag) = value.and_then(as_active_flag) {
                    active = Some(flag);
                }
            }
            Some(_) => {}
            None => {
                if let Some(flag) = value
                    .and_then(Value::as_object)
                    .and_then(|v| get_ignore_case(v, "active"))
                    .and_then(as_active_flag)
                {
                    active = Some(flag);
                }
            }
        }
    }
    active
}

/// What a request does, if it is a SCIM write. Reads, searches (`POST /Users/.search`) and
/// non-SCIM traffic are `None`.
pub fn classify_write(method: Method, path: &str, body: Option<&Value>) -> Option<WriteKind> {
    if !method.is_write() {
        return None;
    }
    match resource_of(path)? {
        Resource::Users(id) => match (method, id) {
            (Method::Post, None) => Some(WriteKind::CreateUser),
            (Method::Post, Some(id)) if id.starts_with('.') => None,
            (Method::Delete, Some(_)) => Some(WriteKind::DeleteUser),
            (Method::Patch | Method::Put, Some(_)) => match body {
                None => Some(WriteKind::UnknownUpdate),
                Some(body) => match active_in_body(method, body) {
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

/// `userName` from a body (POST/PUT), else from a `filter=userName eq "…"` query.
pub fn user_name_of(path: &str, body: Option<&Value>) -> Option<String> {
    if let Some(name) = body
        .and_then(Value::as_object)
        .and_then(|o| get_ignore_case(o, "userName"))
        .and_then(Value::as_str)
    {
        return Some(name.to_string());
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

    fn kind(method: &str, path: &str, body: &str) -> Option<WriteKind> {
        let body = parse_body(body);
        classify_write(Method::parse(method), path, body.as_ref())
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
        let q = "/scim/v2/Users?filter=userName%20eq%20%22rita%40corp.example%22&startIndex=1";
        assert_eq!(user_name_of(q, None).as_deref(), Some("rita@corp.example"));
        let body = parse_body(r#"{"userName":"sam@corp.example"}"#);
        assert_eq!(
            user_name_of("/Users", body.as_ref()).as_deref(),
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

    #[test]
    fn percent_decoding_leaves_malformed_escapes() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
