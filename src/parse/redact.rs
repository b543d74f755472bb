//! Secrets never leave the parser: `Authorization` values, bearer/basic credentials, SCIM
//! `password` and token-like query parameters are replaced before a record exists, so no later
//! stage (report, Parquet, metrics, pages) can leak them.

use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// An authorization scheme and its credential (`Bearer eyJ…`, `SSWS 00a…`); or the word
/// `token` before something long enough to be one (`SCIM token: 9f8e…`), which leaves
/// "token expired" readable.
static CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(bearer|basic|ssws|sharedaccesssignature)\s+[A-Za-z0-9._~+/=:%-]{4,}|\b(token)\b\s*[:=]?\s*[A-Za-z0-9._~+/=%-]{16,}",
    )
    .expect("static regex")
});

/// A JSON Web Token wherever it stands: a header and a payload, each base64url JSON (`eyJ`).
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?")
        .expect("static regex")
});

static SECRET_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(\\?"?\b(?:password|passwd|pwd|secret|client_secret|(?:[a-z]+_)?token|jwt|session_?id|sid|cookie|private_key|api[_-]?key|authorization)\b\\?"?\s*[:=]\s*)(\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\]|\\.)*"|[^\s,&;}]+)"#,
    )
    .expect("static regex")
});

/// Query parameter names whose values are credentials: any holding one of these words, or
/// one of the short names that are whole words only (`pin` is in "mapping", `otp` in
/// "footprint").
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "pass",
        "pwd",
        "secret",
        "signature",
        "apikey",
        "api_key",
        "key",
        "code",
        "sig",
        "auth",
        "bearer",
        "refresh",
        "jwt",
        "session",
        "assertion",
        "credential",
        "cookie",
        // SAML's signed assertions and artifacts (`SAMLResponse`, `SAMLRequest`, `SAMLart`):
        // a response is a bearer credential until it expires (QA helper-54).
        "saml",
    ]
    .iter()
    .any(|needle| name.contains(needle))
        || ["sid", "pw", "pin", "otp"].contains(&name.as_str())
}

/// Whether a query value holds a credential whatever its parameter's name (`q=Bearer%20…`):
/// decoded, it holds a word a credential follows and [`scrub`] would change it. Most values
/// hold none of the words and cost one pass.
fn is_secret_value(value: &str) -> bool {
    let holds = |word: &str| {
        value
            .as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    };
    if !["bearer", "basic", "ssws", "token", "eyj", "sharedaccess"]
        .iter()
        .any(|word| holds(word))
    {
        return false;
    }
    let decoded = super::scim::percent_decode(value);
    matches!(scrub(&decoded), Cow::Owned(_))
}

/// Replaces credentials in free text (an IdP error message, a principal, a header value).
pub fn scrub(text: &str) -> Cow<'_, str> {
    // Every credential form holds one of these (a JWT its `eyJ`); IDs and logins, nearly
    // never: one word-at-a-time pass (a substring search built per call cost 2% of a replay).
    if !crate::swar::has_any_of(text.as_bytes(), [b'=', b':', b' ', b'J']) {
        return Cow::Borrowed(text);
    }
    let first = CREDENTIAL.replace_all(text, |caps: &regex::Captures<'_>| {
        let word = caps.get(1).or(caps.get(2)).map_or("", |m| m.as_str());
        format!("{word} {REDACTED}")
    });
    let second = match SECRET_PAIR.replace_all(&first, |caps: &regex::Captures<'_>| {
        format!("{}{REDACTED}", &caps[1])
    }) {
        Cow::Borrowed(_) => first,
        Cow::Owned(owned) => Cow::Owned(owned),
    };
    match JWT.replace_all(&second, REDACTED) {
        Cow::Borrowed(_) => second,
        Cow::Owned(owned) => Cow::Owned(owned),
    }
}

/// A correlation ID that holds a credential (a client put `Bearer …` in X-Correlation-ID; a
/// bare JWT) as a stand-in that keeps it apart from other IDs and joins with itself:
/// `[REDACTED:` and 12 hex digits of its SHA-256 `]`. Any other ID as it is.
pub fn correlation_id(id: &str) -> Cow<'_, str> {
    // A credential in an ID has a scheme's space, a pair's `=` or `:`, or a JWT's dots; IDs
    // (UUIDs, ULIDs, hex, base62) have none, and skip the regexes (`J` alone, which `scrub`
    // looks for, is in half of all ULIDs).
    if !crate::swar::has_any_of(id.as_bytes(), [b'=', b':', b' ', b'.']) {
        return Cow::Borrowed(id);
    }
    match scrub(id) {
        Cow::Borrowed(_) => Cow::Borrowed(id),
        Cow::Owned(_) => {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(id.as_bytes());
            let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            Cow::Owned(format!("[REDACTED:{hex}]"))
        }
    }
}

/// Redacts credential-looking query parameters in a request path (`?access_token=…`, and
/// after a `#`, where implicit-grant tokens ride), any value that decodes to a credential,
/// path parameters (`;jsessionid=…`), the user and password of an absolute URI
/// (`https://user:pass@host/…`), and a JSON Web Token wherever it stands in the path.
pub fn redact_path(path: &str) -> Cow<'_, str> {
    // Nearly every path has none of these: one search for each before any copy.
    let jwt = path.contains("eyJ") && JWT.is_match(path);
    let session = path.contains(';');
    // Only an absolute URI (not `/…`, what nearly every log has) can hold a user and password.
    let userinfo = !path.starts_with('/') && path.contains("://") && USERINFO.is_match(path);
    if !jwt && !session && !userinfo {
        return redact_query(path);
    }
    let mut path = if jwt {
        JWT.replace_all(path, REDACTED).into_owned()
    } else {
        path.to_string()
    };
    if session {
        path = PATH_PARAM
            .replace_all(&path, |caps: &regex::Captures<'_>| {
                format!("{}{REDACTED}", &caps[1])
            })
            .into_owned();
    }
    if userinfo {
        path = USERINFO
            .replace(&path, |caps: &regex::Captures<'_>| {
                format!("{}{REDACTED}@", &caps[1])
            })
            .into_owned();
    }
    Cow::Owned(redact_query(&path).into_owned())
}

/// `;jsessionid=…` and the like: a path parameter whose name says it is a session or secret.
static PATH_PARAM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(;[a-z_]*(?:session|sid|token|secret|auth)[a-z_]*=)[^;/?&#]+")
        .expect("static regex")
});

/// The user (and password) of an absolute URI, as a proxy logs a request's absolute form.
static USERINFO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@").expect("static regex"));

/// The query and fragment part of [`redact_path`]: `name=value` pairs after the first `?` or
/// `#`, separated by `&`, `?` or `#`, each kept as it is unless its name or its value says
/// it is a credential.
fn redact_query(path: &str) -> Cow<'_, str> {
    let Some(start) = memchr::memchr2(b'?', b'#', path.as_bytes()) else {
        return Cow::Borrowed(path);
    };
    // A name may be percent-encoded as well (`%74oken=`).
    let secret = |pair: &str| match pair.split_once('=') {
        Some((name, value)) => {
            (if name.contains('%') {
                is_secret_param(&super::scim::percent_decode(name))
            } else {
                is_secret_param(name)
            }) || is_secret_value(value)
        }
        None => false,
    };
    let rest = &path[start + 1..];
    if !rest.split(['&', '?', '#']).any(secret) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    out.push_str(&path[..=start]);
    let mut tail = rest;
    loop {
        let end = tail.find(['&', '?', '#']).unwrap_or(tail.len());
        let pair = &tail[..end];
        match pair.split_once('=') {
            Some((name, _)) if secret(pair) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
        let Some(separator) = tail[end..].chars().next() else {
            break;
        };
        out.push(separator);
        tail = &tail[end + 1..];
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A credential in a correlation ID (QA helper-14: `Bearer CIDSECRET777` reached pages,
    /// `/api/v1/alerts` and replay's samples): a stand-in that still tells IDs apart.
    #[test]
    fn a_correlation_id_holding_a_credential_is_a_stand_in() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlX2hlcmU";
        let mut seen = std::collections::BTreeSet::new();
        for id in [
            "Bearer CIDSECRET777",
            "Bearer CIDSECRET778",
            "authorization=Bearer abcd1234",
            "access_token=abcdef0123456789",
            jwt,
        ] {
            let stand_in = correlation_id(id);
            assert!(
                stand_in.starts_with("[REDACTED:") && stand_in.len() == 23,
                "{id} -> {stand_in}"
            );
            assert_eq!(
                correlation_id(id),
                stand_in,
                "the same ID, the same stand-in"
            );
            seen.insert(stand_in.into_owned());
        }
        assert_eq!(seen.len(), 5);
        for id in [
            "5f0c6f2e-8e0b-4b7a-9d1e-1c2b3a4d5e6f",
            "1-67891233-abcdef012345678912345678",
            "k4",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        ] {
            assert_eq!(correlation_id(id), id);
        }
    }

    #[test]
    fn bearer_tokens_and_password_values_are_replaced() {
        let text = r#"401 from target: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0 rejected; body {"password":"Hunter2!","userName":"a"}"#;
        let scrubbed = scrub(text);
        assert!(!scrubbed.contains("eyJhbGciOiJIUzI1NiJ9"), "{scrubbed}");
        assert!(!scrubbed.contains("Hunter2!"), "{scrubbed}");
        assert!(scrubbed.contains(r#""userName":"a""#));
    }

    /// What the QA pass found getting through: a token after `token:`, a JSON `bearer_token`,
    /// a bare JWT, and `jwt`, `sessionid`, `sid` parameters; while "token expired", an
    /// unrelated `side=` parameter and SCIM's own parameters stay as they are.
    #[test]
    fn tokens_in_error_text_and_session_parameters_are_replaced() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlX2hlcmU";
        for text in [
            format!("SCIM token: {jwt} rejected"),
            "SCIM token: 9f8e7d6c5b4a39281706f5e4d3c2b1a0 rejected".to_string(),
            format!(r#"{{"bearer_token":"{jwt}"}}"#),
            format!("upstream said no to {jwt}"),
            format!("session_id={jwt}"),
        ] {
            let scrubbed = scrub(&text);
            assert!(
                !scrubbed.contains("eyJ") && !scrubbed.contains("9f8e7d6c"),
                "{text} -> {scrubbed}"
            );
            assert!(scrubbed.contains(REDACTED), "{scrubbed}");
        }
        // JSON quoted inside a message (a parse error's detail quoting a line).
        let quoted = scrub(r#"bad body "{\"client_secret\":\"hunter2-s3cret\",\"a\":1}""#);
        assert!(
            !quoted.contains("hunter2") && quoted.contains(r#"\"a\":1"#),
            "{quoted}"
        );
        assert_eq!(
            scrub("SCIM token expired or revoked"),
            "SCIM token expired or revoked"
        );
        assert_eq!(
            redact_path("/scim/v2/Users?jwt=abc&sessionid=def&sid=ghi&side=left&count=10"),
            "/scim/v2/Users?jwt=[REDACTED]&sessionid=[REDACTED]&sid=[REDACTED]&side=left&count=10"
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlX2hlcmU";
        for path in [
            format!("/scim/v2/Users/u7/{jwt}"),
            format!("/scim/v2/Users?state={jwt}&count=1"),
            "/app;jsessionid=0123456789ABCDEF/scim/v2/Users".to_string(),
            "/scim/v2/Users?pwd=hunter2".to_string(),
        ] {
            let redacted = redact_path(&path);
            assert!(
                !redacted.contains("eyJ")
                    && !redacted.contains("0123456789ABCDEF")
                    && !redacted.contains("hunter2")
                    && redacted.contains(REDACTED),
                "{path} -> {redacted}"
            );
        }
        assert_eq!(
            redact_path("/scim/v2/Users?filter=userName%20eq%20%22a%22&startIndex=1&attributes=id"),
            "/scim/v2/Users?filter=userName%20eq%20%22a%22&startIndex=1&attributes=id"
        );
    }

    /// What the audit QA pass found in the Parquet `path` column: credentials in an absolute
    /// URI, short or unusual parameter names, a bearer token percent-encoded in any value, and
    /// a token after `#`; while SCIM's own parameters and look-alike names stay as they are.
    #[test]
    fn userinfo_short_names_encoded_values_and_fragments_are_redacted() {
        for (path, want) in [
            (
                "https://scim:SEKRETU1@scim.example/scim/v2/Users",
                "https://[REDACTED]@scim.example/scim/v2/Users",
            ),
            (
                "/scim/v2/Users?pw=S1&count=1",
                "/scim/v2/Users?pw=[REDACTED]&count=1",
            ),
            ("/Users?pass=S2", "/Users?pass=[REDACTED]"),
            ("/Users?Passphrase=S3", "/Users?Passphrase=[REDACTED]"),
            (
                "/Users?bearer=S4&refresh=S5",
                "/Users?bearer=[REDACTED]&refresh=[REDACTED]",
            ),
            (
                "/Users?pin=1234&otp=987654",
                "/Users?pin=[REDACTED]&otp=[REDACTED]",
            ),
            (
                "/Users?q=Bearer%20SEKRETU8abcdef&count=2",
                "/Users?q=[REDACTED]&count=2",
            ),
            ("/Users?q=Bearer+SEKRETU9abcdef", "/Users?q=[REDACTED]"),
            (
                "/scim/v2/Users/u99#access_token=SEKRET10&state=x",
                "/scim/v2/Users/u99#access_token=[REDACTED]&state=x",
            ),
            (
                "/Users?count=1#id_token=SEKRET11",
                "/Users?count=1#id_token=[REDACTED]",
            ),
            // The HTTP QA pass: an encoded name, and a second `?`.
            ("/Users?%74oken=SEKRET12", "/Users?%74oken=[REDACTED]"),
            (
                "/Users?a=1?access_token=SEKRET13",
                "/Users?a=1?access_token=[REDACTED]",
            ),
        ] {
            assert_eq!(redact_path(path), want, "{path}");
        }
        for kept in [
            "/scim/v2/Users?filter=userName%20eq%20%22bearer.bob%40corp.example%22",
            "/scim/v2/Groups?mapping=1&shipping=2&footprint=3&opinion=4",
            "/scim/v2/Users#section",
            "https://scim.example/scim/v2/Users?count=1",
            "/scim/v2/Users/alice@corp.example",
        ] {
            assert!(matches!(redact_path(kept), Cow::Borrowed(_)), "{kept}");
        }
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
        assert_eq!(
            redact_path("/sso/acs?SAMLResponse=PHNhbWxwOlJlc3BvbnNl&RelayState=%2Fhome"),
            "/sso/acs?SAMLResponse=[REDACTED]&RelayState=%2Fhome"
        );
        assert_eq!(
            redact_path("/sso?SAMLart=AAQAAMFbLinlXaCM&x=1"),
            "/sso?SAMLart=[REDACTED]&x=1"
        );
    }
}
