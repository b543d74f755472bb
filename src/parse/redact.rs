//! Secrets never leave the parser: `Authorization` values, bearer/basic credentials, SCIM
//! `password` and token-like query parameters are replaced before a record exists, so no later
//! stage (report, Parquet, metrics, pages) can leak them.

use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

static CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|basic|token|ssws|sharedaccesssignature)\s+[A-Za-z0-9._~+/=:%-]{4,}")
        .expect("static regex")
});

static SECRET_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)("?\b(?:password|passwd|pwd|secret|client_secret|access_token|refresh_token|id_token|api[_-]?key|authorization)\b"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s,&;}]+)"#,
    )
    .expect("static regex")
});

/// Query parameter names whose values are credentials.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "password",
        "secret",
        "signature",
        "apikey",
        "api_key",
        "key",
        "code",
        "sig",
        "auth",
    ]
    .iter()
    .any(|needle| name.contains(needle))
}

/// Replaces credentials in free text (an IdP error message, a principal, a header value).
pub fn scrub(text: &str) -> Cow<'_, str> {
    let quick = text
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b'=' | b':' | b' '));
    if !quick {
        return Cow::Borrowed(text);
    }
    let first = CREDENTIAL.replace_all(text, |caps: &regex::Captures<'_>| {
        format!("{} {REDACTED}", &caps[1])
    });
    match SECRET_PAIR.replace_all(&first, |caps: &regex::Captures<'_>| {
        format!("{}{REDACTED}", &caps[1])
    }) {
        Cow::Borrowed(_) => first,
        Cow::Owned(owned) => Cow::Owned(owned),
    }
}

/// Redacts credential-looking query parameters in a request path (`?access_token=…`).
pub fn redact_path(path: &str) -> Cow<'_, str> {
    let Some((base, query)) = path.split_once('?') else {
        return Cow::Borrowed(path);
    };
    if !query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        is_secret_param(name)
    }) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    out.push_str(base);
    out.push('?');
    for (index, pair) in query.split('&').enumerate() {
        if index > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_password_values_are_replaced() {
        let text = r#"401 from target: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0 rejected; body {"password":"Hunter2!","userName":"a"}"#;
        let scrubbed = scrub(text);
        assert!(!scrubbed.contains("eyJhbGciOiJIUzI1NiJ9"), "{scrubbed}");
        assert!(!scrubbed.contains("Hunter2!"), "{scrubbed}");
        assert!(scrubbed.contains(r#""userName":"a""#));
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(scrub("rate limit exceeded"), Cow::Borrowed(_)));
        assert!(matches!(scrub("nospaces"), Cow::Borrowed(_)));
    }

    #[test]
    fn token_query_parameters_are_redacted_and_others_kept() {
        assert_eq!(
            redact_path("/scim/v2/Users?access_token=abc123&count=10"),
            "/scim/v2/Users?access_token=[REDACTED]&count=10"
        );
        assert_eq!(
            redact_path("/scim/v2/Users?count=10"),
            "/scim/v2/Users?count=10"
        );
    }
}
