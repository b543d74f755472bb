//! Parser behaviour per role and format.

use super::*;
use crate::config::{AppsConfig, SourceConfig};
use crate::model::WriteKind;
use std::collections::BTreeMap;

fn source(role: Role, format: &str, fields: &[(&str, &str)]) -> SourceConfig {
    SourceConfig {
        name: "s".into(),
        role,
        format: format.into(),
        paths: vec![],
        pattern: None,
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    crate::config::FieldSource::One(v.to_string()),
                )
            })
            .collect(),
        stages: BTreeMap::new(),
        causes: BTreeMap::new(),
        status: BTreeMap::new(),
        app: None,
        time_format: TimeFormat::Auto,
        max_line_bytes: 1024,
    }
}

fn idp_parser() -> LineParser {
    let config = source(
        Role::Idp,
        "json",
        &[
            ("time", "/ts"),
            ("correlation_id", "/cid"),
            ("action", "/action"),
            ("app", "/app"),
            ("user_login", "/user"),
            ("status", "/result"),
            ("error", "/error"),
        ],
    );
    resolve_source(&config, &AppsConfig::default()).unwrap()
}

fn parse(parser: &LineParser, line: &str) -> Result<Record, ParseError> {
    parser.parse(line.as_bytes(), 0, 1)
}

#[test]
fn generic_idp_json_maps_action_to_stage_and_status_to_a_claim() {
    let parser = idp_parser();
    let record = parse(&parser, r#"{"ts":"2026-07-01T10:00:00Z","cid":"c-1","action":"Deactivate","app":"github","user":"rita@corp.example","result":"SUCCESS"}"#).unwrap();
    let Record::Idp(idp) = record else {
        panic!("{record:?}")
    };
    assert_eq!(idp.stage, Stage::Leaver);
    assert_eq!(idp.status, Some(IdpStatus::Success));
    assert_eq!(idp.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(idp.user_login.as_deref(), Some("rita@corp.example"));
}

#[test]
fn unmapped_actions_are_ignored_but_keep_their_time() {
    let record = parse(
        &idp_parser(),
        r#"{"ts":"2026-07-01T10:00:00Z","action":"import"}"#,
    )
    .unwrap();
    assert!(matches!(record, Record::Ignored(_)));
}

#[test]
fn a_dash_or_empty_correlation_id_is_absent() {
    let parser = idp_parser();
    for cid in ["-", ""] {
        let line = format!(r#"{{"ts":"2026-07-01T10:00:00Z","cid":"{cid}","action":"create"}}"#);
        let Ok(Record::Idp(idp)) = parse(&parser, &line) else {
            panic!()
        };
        assert_eq!(idp.correlation_id, None);
    }
}

#[test]
fn each_kind_of_bad_line_gets_its_reason() {
    let parser = idp_parser();
    let reason = |line: &[u8]| parser.parse(line, 0, 1).unwrap_err().reason;
    assert_eq!(reason(b"{\"ts\":"), Reason::InvalidJson);
    assert_eq!(reason(b"\xff\xfe garbage"), Reason::InvalidUtf8);
    assert_eq!(reason(b"[1,2,3]"), Reason::InvalidJson);
    assert_eq!(reason(br#"{"action":"create"}"#), Reason::MissingField);
    assert_eq!(
        reason(br#"{"ts":"soon","action":"create"}"#),
        Reason::BadTime
    );
    assert_eq!(reason(&vec![b' '; 2000]), Reason::LineTooLong);
}

#[test]
fn idp_error_text_is_scrubbed_of_credentials() {
    let line = r#"{"ts":"2026-07-01T10:00:00Z","action":"create","result":"failure","error":"401 with Authorization: Bearer abcdef123456"}"#;
    let Ok(Record::Idp(idp)) = parse(&idp_parser(), line) else {
        panic!()
    };
    let error = idp.error.unwrap();
    assert!(!error.contains("abcdef123456"), "{error}");
}

#[test]
fn nginx_combined_lines_become_gateway_records() {
    let parser = resolve_source(
        &source(Role::Gateway, "nginx_combined", &[]),
        &AppsConfig::default(),
    )
    .unwrap();
    let line = r#"203.0.113.7 - scim-client [03/Mar/2025:10:41:11 +0000] "DELETE /scim/v2/Users/u-7731 HTTP/1.1" 204 0 "-" "Okta SCIM Client 1.0.0""#;
    let Ok(Record::Gateway(gw)) = parse(&parser, line) else {
        panic!()
    };
    assert_eq!(gw.method, Method::Delete);
    assert_eq!(gw.status, 204);
    assert_eq!(gw.write, Some(WriteKind::DeleteUser));
    assert_eq!(gw.resource_id.as_deref(), Some("u-7731"));
    assert_eq!(gw.principal.as_deref(), Some("scim-client"));
    assert_eq!(gw.time.to_string(), "2025-03-03T10:41:11Z");
}

#[test]
fn nginx_json_with_a_logged_body_detects_a_disable() {
    let parser = resolve_source(
        &source(Role::Gateway, "nginx_json", &[]),
        &AppsConfig::default(),
    )
    .unwrap();
    let line = r#"{"time":"2025-03-03T10:41:11+00:00","request_id":"9f2c4e1ab7d34c0e8a51f0b6d2e9a1c3","xrid":"-","method":"PATCH","uri":"/scim/v2/Users/u-7731","status":200,"request_time":0.143,"request_body":"{\"Operations\":[{\"op\":\"Replace\",\"path\":\"active\",\"value\":false}],\"password\":\"x\"}"}"#;
    let Ok(Record::Gateway(gw)) = parse(&parser, line) else {
        panic!()
    };
    assert_eq!(gw.write, Some(WriteKind::Disable));
    assert_eq!(
        gw.correlation_id, None,
        "nginx's own request_id is not a shared ID"
    );
    assert_eq!(gw.duration_ms, Some(143.0));
}

#[test]
fn regex_sources_map_captures_named_after_fields() {
    let mut config = source(Role::Gateway, "regex", &[]);
    config.pattern = Some(
        r"^(?P<time>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d+) (?P<correlation_id>\S+)$"
            .into(),
    );
    let parser = resolve_source(&config, &AppsConfig::default()).unwrap();
    let Ok(Record::Gateway(gw)) = parse(&parser, "2026-07-01T10:00:00Z POST /Users 201 c-9") else {
        panic!()
    };
    assert_eq!(gw.correlation_id.as_deref(), Some("c-9"));
    assert_eq!(gw.write, Some(WriteKind::CreateUser));
    assert_eq!(parse(&parser, "nope").unwrap_err().reason, Reason::NoMatch);
}

#[test]
fn config_mistakes_name_the_field() {
    let apps = AppsConfig::default();
    let err = |config: SourceConfig| resolve_source(&config, &apps).err().unwrap().0;
    assert_eq!(
        err(source(Role::Idp, "json", &[("time", "published")])),
        "fields.time"
    );
    assert_eq!(
        err(source(
            Role::Idp,
            "json",
            &[("time", "/t"), ("method", "/m")]
        )),
        "fields.method"
    );
    assert_eq!(err(source(Role::Idp, "jsn", &[])), "format");
    assert_eq!(
        err(source(Role::Idp, "json", &[("time", "/t")])),
        "fields.action"
    );
    assert_eq!(err(source(Role::Idp, "nginx_json", &[])), "format");
}

#[test]
fn app_aliases_canonicalise_names() {
    let mut apps = AppsConfig::default();
    apps.aliases
        .insert("aws-prod".into(), vec!["AWS Production".into()]);
    let parser = resolve_source(
        &source(
            Role::Idp,
            "json",
            &[("time", "/ts"), ("action", "/a"), ("app", "/app")],
        ),
        &apps,
    )
    .unwrap();
    let Ok(Record::Idp(idp)) = parse(
        &parser,
        r#"{"ts":1751364000,"a":"create","app":"aws production"}"#,
    ) else {
        panic!()
    };
    assert_eq!(idp.app.as_deref(), Some("aws-prod"));
    assert_eq!(idp.time.to_string(), "2025-07-01T10:00:00Z");
}
