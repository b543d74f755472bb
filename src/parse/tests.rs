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
        stale_after_secs: None,
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
    // A lone surrogate in a field read, which serde_json refuses: read as null, the ID was
    // lost with no parse error (QA helper-54). Paired, it is a character; in a field not
    // read, it does not matter.
    for field in ["cid", "user"] {
        let line =
            format!(r#"{{"ts":"2026-07-01T10:00:00Z","action":"create","{field}":"x\ud800"}}"#);
        assert_eq!(reason(line.as_bytes()), Reason::InvalidJson, "{line}");
    }
    let paired =
        r#"{"ts":"2026-07-01T10:00:00Z","action":"create","cid":"x\ud83d\ude00","other":"\udc00"}"#;
    let Ok(Record::Idp(idp)) = parse(&parser, paired) else {
        panic!("{paired}")
    };
    assert_eq!(idp.correlation_id.as_deref(), Some("x\u{1f600}"));
}

/// A whole batch on one line (Event Hub's `records`, a Graph page's `value`, a CloudTrail S3
/// file's `Records`) is one bad line that says what it is and how to unwrap it, not "no time
/// field".
#[test]
fn a_batch_of_records_on_one_line_says_so() {
    let parser = idp_parser();
    for (line, key) in [
        (
            r#"{"records":[{"ts":"2026-07-01T08:00:00Z","action":"create"}]}"#,
            "records",
        ),
        (r#"{ "value" : [ ]}"#, "value"),
        (
            r#"{"Records":[{"eventTime":"2026-07-01T08:00:00Z"}]}"#,
            "Records",
        ),
    ] {
        let error = parser.parse(line.as_bytes(), 0, 1).unwrap_err();
        assert_eq!(error.reason, Reason::MissingField, "{line}");
        assert!(
            error.detail.contains(&format!("a \"{key}\" array"))
                && error.detail.contains(&format!("jq -c '.{key}[]'")),
            "{}",
            error.detail
        );
    }
    let error = parser.parse(br#"{"action":"create"}"#, 0, 1).unwrap_err();
    assert_eq!(error.detail, "no time field");
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
    // A client that sent no request line: nginx logs "-" and 400. A request that is not an
    // operation, not a bad line.
    let probe = r#"198.51.100.9 - - [03/Mar/2025:10:41:12 +0000] "-" 400 0 "-" "-""#;
    let Ok(Record::Gateway(gw)) = parse(&parser, probe) else {
        panic!("{:?}", parse(&parser, probe))
    };
    assert_eq!((gw.method, gw.write, gw.status), (Method::Other, None, 400));
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
    // `paths` written below `[source.fields]` (TOML makes it a field): said so, with where it
    // belongs.
    let (key, message) = resolve_source(
        &source(Role::Idp, "json", &[("time", "/t"), ("paths", "/p")]),
        &apps,
    )
    .err()
    .unwrap();
    assert_eq!(key, "fields.paths");
    assert!(
        message.starts_with("an idp source has no field \"paths\"")
            && message.contains("write it above [source.fields]"),
        "{message}"
    );
    assert_eq!(
        err(source(Role::Idp, "json", &[("time", "/t")])),
        "fields.action"
    );
    assert_eq!(err(source(Role::Idp, "nginx_json", &[])), "format");
    // A trigger source maps leaver events, and may map joiner ones (enabled again); never
    // mover ones, and never joiner ones alone.
    let trigger = |stage: &str| {
        let mut config = source(Role::Trigger, "json", &[("time", "/t"), ("event", "/e")]);
        config.stages.insert(stage.into(), vec!["x".into()]);
        config
    };
    assert_eq!(err(trigger("mover")), "stages.mover");
    assert_eq!(err(trigger("joiner")), "stages.leaver");
    assert!(resolve_source(&trigger("leaver"), &apps).is_ok());
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

fn preset(role: Role, format: &str) -> LineParser {
    resolve_source(&source(role, format, &[]), &AppsConfig::default()).unwrap()
}

#[test]
fn okta_lifecycle_events_are_triggers_and_rate_limit_events_are_notes() {
    let okta = preset(Role::Idp, "okta");
    let deactivate = r#"{"published":"2026-07-01T10:00:00.000Z","eventType":"user.lifecycle.deactivate","outcome":{"result":"SUCCESS"},"target":[{"id":"00u1","type":"User","alternateId":"rita@corp.example"}],"transaction":{"id":"T1"}}"#;
    let Ok(Record::Trigger(trigger)) = parse(&okta, deactivate) else {
        panic!()
    };
    assert_eq!(trigger.app, None, "a user-level event covers every app");
    assert_eq!(trigger.user_login.as_deref(), Some("rita@corp.example"));
    let unassign = r#"{"published":"2026-07-01T10:00:00.000Z","eventType":"application.user_membership.remove","outcome":{"result":"SUCCESS"},"target":[{"id":"0ua1","type":"AppUser","alternateId":"rita@corp.example"},{"id":"0oa1","type":"AppInstance","alternateId":"Acme"}],"transaction":{"id":"T2"}}"#;
    let Ok(Record::Trigger(trigger)) = parse(&okta, unassign) else {
        panic!()
    };
    assert_eq!(trigger.app.as_deref(), Some("Acme"));
    let limited = r#"{"published":"2026-07-01T10:00:00.000Z","eventType":"application.integration.rate_limit_exceeded","outcome":{"result":"FAILURE"},"target":[],"transaction":{"id":"T3"}}"#;
    let Ok(Record::Note(note)) = parse(&okta, limited) else {
        panic!()
    };
    assert_eq!(note.cause, crate::model::Cause::RateLimited);
    assert_eq!(note.operation_id.as_deref(), Some("T3"));
}

#[test]
fn a_lifecycle_event_that_failed_at_the_source_starts_no_clock() {
    let okta = preset(Role::Idp, "okta");
    let failed = r#"{"published":"2026-07-01T10:00:00.000Z","eventType":"user.lifecycle.deactivate","outcome":{"result":"FAILURE","reason":"INSUFFICIENT_PERMISSIONS"},"target":[{"id":"00u1","type":"User","alternateId":"rita@corp.example"}],"transaction":{"id":"T1"}}"#;
    assert!(matches!(parse(&okta, failed), Ok(Record::Ignored(_))));
    // In the IdP stream a reactivation is a return, and a failed one did not happen either.
    let reactivated = failed.replace("user.lifecycle.deactivate", "user.lifecycle.reactivate");
    assert!(matches!(parse(&okta, &reactivated), Ok(Record::Ignored(_))));
    let reactivated = reactivated.replace("FAILURE", "SUCCESS");
    let Ok(Record::Trigger(trigger)) = parse(&okta, &reactivated) else {
        panic!()
    };
    assert!(trigger.returns);
    // A generic trigger source that maps a status reads it with the generic words.
    let mut hr = source(
        Role::Trigger,
        "json",
        &[
            ("time", "/at"),
            ("user_login", "/email"),
            ("event", "/event"),
            ("status", "/state"),
        ],
    );
    hr.stages.insert("leaver".into(), vec!["terminated".into()]);
    let hr = resolve_source(&hr, &AppsConfig::default()).unwrap();
    let line = |state: &str| {
        format!(
            r#"{{"at":"2026-07-01T10:00:00Z","email":"rita@corp.example","event":"terminated","state":"{state}"}}"#
        )
    };
    assert!(matches!(
        parse(&hr, &line("failed")),
        Ok(Record::Ignored(_))
    ));
    assert!(matches!(parse(&hr, &line("ok")), Ok(Record::Trigger(_))));
}

#[test]
fn okta_and_entra_read_as_trigger_sources_of_their_own() {
    let okta = preset(Role::Trigger, "okta");
    let deactivate = r#"{"published":"2026-07-01T10:00:00.000Z","eventType":"user.lifecycle.deactivate","outcome":{"result":"SUCCESS"},"target":[{"id":"00u1","type":"User","alternateId":"rita@corp.example"}]}"#;
    let Ok(Record::Trigger(trigger)) = parse(&okta, deactivate) else {
        panic!()
    };
    assert_eq!(trigger.app, None);
    assert_eq!(trigger.user_id.as_deref(), Some("00u1"));
    assert_eq!(trigger.user_login.as_deref(), Some("rita@corp.example"));
    assert_eq!(trigger.event, "user.lifecycle.deactivate");
    assert!(!trigger.returns);
    // A real unassignment names the User, the AppUser and the AppInstance: the pair it opens
    // is the app's login, the one the app's operations name.
    let unassign = r#"{"published":"2026-07-01T10:00:00.000Z","eventType":"application.user_membership.remove","outcome":{"result":"SUCCESS"},"target":[{"id":"00u1","type":"User","alternateId":"rita@corp.example"},{"id":"0ua1","type":"AppUser","alternateId":"rodun"},{"id":"0oa1","type":"AppInstance","alternateId":"Acme"}]}"#;
    let Ok(Record::Trigger(trigger)) = parse(&okta, unassign) else {
        panic!()
    };
    assert_eq!(trigger.app.as_deref(), Some("Acme"));
    assert_eq!(trigger.user_login.as_deref(), Some("rodun"));
    assert_eq!(trigger.user_id.as_deref(), Some("00u1"));
    for (event, returns) in [
        ("user.lifecycle.reactivate", true),
        ("user.lifecycle.unsuspend", true),
        ("application.user_membership.add", true),
        ("user.lifecycle.suspend", false),
    ] {
        let line = deactivate.replace("user.lifecycle.deactivate", event);
        let Ok(Record::Trigger(trigger)) = parse(&okta, &line) else {
            panic!("{event}")
        };
        assert_eq!(trigger.returns, returns, "{event}");
    }
    let push = r#"{"published":"2026-07-01T10:00:00.000Z","eventType":"application.provision.user.push","outcome":{"result":"SUCCESS"},"target":[]}"#;
    assert!(matches!(parse(&okta, push), Ok(Record::Ignored(_))));

    let entra = preset(Role::Trigger, "entra");
    let graph = r#"{"id":"Directory_1","category":"UserManagement","correlationId":"da15","result":"success","resultReason":"","activityDisplayName":"Disable account","activityDateTime":"2026-07-01T08:51:10.1234567Z","loggedByService":"Core Directory","operationType":"Update","initiatedBy":{"user":{"id":"adm-1","userPrincipalName":"it-admin@corp.example"}},"targetResources":[{"id":"src-7","displayName":"Ada Lo","type":"User","userPrincipalName":"ada@corp.example","modifiedProperties":[]}],"additionalDetails":[]}"#;
    let monitor = r#"{"time":"2026-07-01T08:51:11.0000000Z","operationName":"Disable account","category":"AuditLogs","correlationId":"da15","properties":{"id":"Directory_1","category":"UserManagement","result":"success","activityDisplayName":"Disable account","activityDateTime":"2026-07-01T08:51:10.1234567Z","initiatedBy":{"user":{"id":"adm-1","userPrincipalName":"it-admin@corp.example"}},"targetResources":[{"id":"src-7","type":"User","userPrincipalName":"ada@corp.example"}]}}"#;
    for line in [graph, monitor] {
        let Ok(Record::Trigger(trigger)) = parse(&entra, line) else {
            panic!("{line}")
        };
        assert_eq!(trigger.app, None, "one disable covers every app");
        assert_eq!(
            trigger.user_id.as_deref(),
            Some("src-7"),
            "not the admin's id"
        );
        assert_eq!(trigger.user_login.as_deref(), Some("ada@corp.example"));
        assert_eq!(trigger.time.to_string(), "2026-07-01T08:51:10.123456Z");
    }
    let failed = graph.replace(r#""result":"success""#, r#""result":"failure""#);
    assert!(matches!(parse(&entra, &failed), Ok(Record::Ignored(_))));
    let update = graph.replace("Disable account", "Update user");
    assert!(matches!(parse(&entra, &update), Ok(Record::Ignored(_))));
    for (event, returns) in [
        ("Delete user", false),
        ("Enable account", true),
        ("Restore user", true),
    ] {
        let line = monitor.replace("Disable account", event);
        let Ok(Record::Trigger(trigger)) = parse(&entra, &line) else {
            panic!("{event}")
        };
        assert_eq!(trigger.returns, returns, "{event}");
    }
    // The IdP-role `entra` is still the provisioning log: an audit line has no action.
    let err = parse(&preset(Role::Idp, "entra"), graph).unwrap_err();
    assert_eq!(err.reason, Reason::MissingField);
}

#[test]
fn cloudtrail_as_the_idp_side_turns_an_active_false_patch_into_a_leaver() {
    let trail = preset(Role::Idp, "cloudtrail");
    let patch = r#"{"eventTime":"2026-07-01T09:30:01Z","eventSource":"identitystore-scim.amazonaws.com","eventName":"PatchUser","requestParameters":{"id":"u-1","httpBody":{"Operations":[{"op":"REPLACE","path":"active","value":"false"}]}},"requestID":"r-1"}"#;
    let Ok(Record::Idp(idp)) = parse(&trail, patch) else {
        panic!()
    };
    assert_eq!(idp.action, "DisableUser");
    assert_eq!(idp.stage, Stage::Leaver);
    assert_eq!(idp.status, Some(IdpStatus::Success));
    assert_eq!(idp.target_id.as_deref(), Some("u-1"));
    let failed = r#"{"eventTime":"2026-07-01T09:30:01Z","eventSource":"identitystore-scim.amazonaws.com","eventName":"CreateUser","errorCode":"ConflictException","errorMessage":"Duplicate UserName","requestParameters":{"httpBody":{"userName":"HIDDEN_DUE_TO_SECURITY_REASONS"}}}"#;
    let Ok(Record::Idp(idp)) = parse(&trail, failed) else {
        panic!()
    };
    assert_eq!(idp.stage, Stage::Joiner);
    assert_eq!(idp.status, Some(IdpStatus::Failure));
    assert_eq!(idp.user_login, None, "masked PII is no login");
    let other = r#"{"eventTime":"2026-07-01T09:30:01Z","eventSource":"sts.amazonaws.com","eventName":"AssumeRole"}"#;
    assert!(matches!(parse(&trail, other), Ok(Record::Ignored(_))));
}

#[test]
fn entra_reads_graph_and_azure_monitor_shapes_alike() {
    let entra = preset(Role::Idp, "entra");
    let graph = r#"{"activityDateTime":"2026-07-01T09:00:00Z","changeId":"c1","provisioningAction":"disable","provisioningStatusInfo":{"status":"warning"},"targetIdentity":{"id":"u-1"},"servicePrincipal":{"displayName":"Acme"}}"#;
    let monitor = r#"{"time":"2026-07-01T09:00:00.1234567Z","correlationId":"c1","properties":{"activityDateTime":"2026-07-01T09:00:00Z","changeId":"c1","provisioningAction":"disable","provisioningStatusInfo":{"Status":"success"},"targetIdentity":{"Id":"u-1"},"servicePrincipal":{"Name":"Acme"}}}"#;
    for line in [graph, monitor] {
        let Ok(Record::Idp(idp)) = parse(&entra, line) else {
            panic!("{line}")
        };
        assert_eq!(idp.stage, Stage::Leaver);
        assert_eq!(
            idp.status,
            Some(IdpStatus::Success),
            "warning is a success claim"
        );
        assert_eq!(idp.operation_id.as_deref(), Some("c1"));
        assert_eq!(idp.target_id.as_deref(), Some("u-1"));
        assert_eq!(idp.app.as_deref(), Some("Acme"));
        assert_eq!(
            idp.time.to_string(),
            "2026-07-01T09:00:00Z",
            "the activity time wins over the envelope's"
        );
    }
}

#[test]
fn envoy_response_code_zero_means_no_response() {
    let envoy = preset(Role::Gateway, "envoy");
    let line = r#"[2026-07-01T09:20:01.000Z] "PATCH /scim/v2/Users/u-5 HTTP/1.1" 0 UT 120 0 30000 - "10.0.0.5" "ua" "9c1e0a52-3333" "acme.example" "10.0.1.7:8080""#;
    let Ok(Record::Gateway(gw)) = parse(&envoy, line) else {
        panic!()
    };
    assert_eq!(gw.status, 0);
    assert_eq!(
        crate::model::Cause::from_http_status(gw.status),
        Some(crate::model::Cause::Timeout)
    );
    assert_eq!(
        gw.correlation_id, None,
        "Envoy's generated x-request-id is not a shared ID"
    );
    assert_eq!(gw.duration_ms, Some(30000.0));
}

/// Fields appended to Envoy's default format (`"%RESP(LOCATION)%"`, say) no longer make every
/// line `no_match`; the default fields are read as before.
#[test]
fn envoy_lines_with_fields_appended_still_match() {
    let envoy = preset(Role::Gateway, "envoy");
    let line = r#"[2026-07-01T09:20:01.000Z] "POST /scim/v2/Users HTTP/1.1" 201 - 120 300 45 44 "10.0.0.5" "ua" "9c1e0a52-3333" "acme.example" "10.0.1.7:8080" "https://acme.example/scim/v2/Users/u-9" "x""#;
    let Ok(Record::Gateway(gw)) = parse(&envoy, line) else {
        panic!("{:?}", parse(&envoy, line))
    };
    assert_eq!((gw.status, gw.path.as_str()), (201, "/scim/v2/Users"));
    assert_eq!(gw.app.as_deref(), Some("acme.example"));
}

/// Envoy does not escape the client's headers: quotes in them leave the line readable, and the
/// request line, status, duration and authority are read as they were logged.
#[test]
fn envoy_lines_with_quotes_in_the_client_s_headers_are_read() {
    let envoy = preset(Role::Gateway, "envoy");
    let head =
        r#"[2026-07-01T09:20:01.000Z] "PATCH /scim/v2/Users/u-5 HTTP/1.1" 200 - 120 300 45 44 "#;
    for tail in [
        r#""10.0.0.5" "curl "quoted" 8.0" "9c1e0a52-3333" "acme.example" "10.0.1.7:8080""#,
        r#""10.0.0.5, "x"" "ua" "id "with" quotes" "acme.example" "10.0.1.7:8080""#,
        r#""10.0.0.5" "ua"" "" "acme.example" "-""#,
        r#""10.0.0.5" "curl "quoted" 8.0" "9c1e0a52-3333" "acme.example" "10.0.1.7:8080" "https://acme.example/x" "y""#,
    ] {
        let line = format!("{head}{tail}");
        let Ok(Record::Gateway(gw)) = parse(&envoy, &line) else {
            panic!("{line}: {:?}", parse(&envoy, &line))
        };
        assert_eq!(
            (gw.method, gw.path.as_str(), gw.status),
            (crate::model::Method::Patch, "/scim/v2/Users/u-5", 200),
            "{line}"
        );
        assert_eq!(gw.duration_ms, Some(45.0), "{line}");
        assert_eq!(gw.app.as_deref(), Some("acme.example"), "{line}");
    }
    // The slower pattern reads the same captures, in the same order, as the strict one.
    let names = |p: &str| {
        regex::Regex::new(p)
            .unwrap()
            .capture_names()
            .map(|n| n.map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(crate::parse::presets::ENVOY_PATTERN),
        names(crate::parse::presets::ENVOY_UNESCAPED_PATTERN)
    );
    // `" "` written into a header moves which of the client's headers is read as the
    // authority (with the strict pattern as well): the line is read, the app is not to be
    // trusted further than the client's `Host`.
    let line =
        format!(r#"{head}"10.0.0.5" "a" "b" "9c1e0a52-3333" "acme.example" "10.0.1.7:8080""#);
    let Ok(Record::Gateway(gw)) = parse(&envoy, &line) else {
        panic!("{:?}", parse(&envoy, &line))
    };
    assert_eq!((gw.path.as_str(), gw.status), ("/scim/v2/Users/u-5", 200));
    assert_eq!(gw.app.as_deref(), Some("9c1e0a52-3333"));
}

#[test]
fn decimals_read_exactly_as_the_full_parser_reads_them() {
    let full = |text: &str| text.parse::<f64>().ok().map(f64::to_bits);
    let mut texts: Vec<String> = [
        "",
        "0",
        "00",
        "0.0",
        "200",
        "200.0",
        "0.139",
        "1.",
        ".5",
        ".",
        "1.2.3",
        "1e3",
        "-1",
        "+1",
        " 1",
        "1 ",
        "inf",
        "NaN",
        "0x10",
        "123456789012345",
        "1234567890123456",
        "99999999999999.9",
        "9999999999999.99",
        "0.000000000000001",
        "0.0000000000000001",
        "4503599627370497",
        "9007199254740993",
        "0.1",
        "0.2",
        "0.3",
        "2.675",
        "1.005",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every split of many digit strings into whole and fraction, from a fixed generator.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 17) as usize + 1;
        let digits: String = (0..len)
            .map(|i| char::from(b'0' + ((seed >> (i * 3 % 60)) % 10) as u8))
            .collect();
        let dot = ((seed >> 40) as usize) % (len + 2);
        texts.push(match dot {
            d if d < len => format!("{}.{}", &digits[..d], &digits[d..]),
            d if d == len => format!("{digits}."),
            _ => digits,
        });
    }
    for text in &texts {
        assert_eq!(
            parse_decimal(text).map(f64::to_bits),
            full(text),
            "{text:?}"
        );
    }
}

#[test]
fn the_first_number_of_a_list_is_read_as_splitting_finds_it() {
    let by_splitting = |text: &str| {
        let first = text.split([',', ':', ' ']).find(|s| !s.trim().is_empty())?;
        let value = parse_decimal(crate::model::trim(first))?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    for text in [
        "0.090",
        "0.139, 0.002",
        ", 0.5",
        ": 1",
        "1:2",
        " 7 ",
        "",
        " ",
        "-",
        "-1",
        "abc",
        "\u{a0}",
        "\u{a0}1\u{a0}",
        "\t3\t",
        "1e3",
        "inf",
        "NaN",
        "0.1 , 2",
    ] {
        assert_eq!(
            first_number(text).map(f64::to_bits),
            by_splitting(text).map(f64::to_bits),
            "{text:?}"
        );
    }
}

#[test]
fn texts_made_for_a_line_are_its_own_line_after_line() {
    let parser = idp_parser();
    for n in 0..50 {
        // Escaped strings are unescaped into texts of the line's own.
        let line = format!(
            r#"{{"ts":"2026-07-01T10:00:00Z","cid":"c-{n}","action":"create","app":"a\u0070p{n}","user":"u\t{n}@corp.example","result":"success","error":"e\"{n}"}}"#
        );
        let Record::Idp(idp) = parse(&parser, &line).unwrap() else {
            panic!("{line}")
        };
        assert_eq!(idp.app.as_deref(), Some(format!("app{n}").as_str()));
        assert_eq!(
            idp.user_login.as_deref(),
            Some(format!("u\t{n}@corp.example").as_str())
        );
        assert_eq!(idp.error.as_deref(), Some(format!("e\"{n}").as_str()));
    }
}

/// A source's reading is the same for the same stages, however listed, and differs when an
/// action moves: a restart reads what is pending again only when it does; and it reads as
/// the parser does.
#[test]
fn the_stages_reading_changes_only_with_the_stages() {
    let mark = |stages: &[(&str, &[&str])]| {
        let mut config = source(Role::Idp, "json", &[("time", "/ts"), ("action", "/a")]);
        for (stage, actions) in stages {
            let actions = actions.iter().map(|a| a.to_string()).collect();
            config.stages.insert(stage.to_string(), actions);
        }
        resolve_source(&config, &AppsConfig::default())
            .unwrap()
            .reading()
    };
    assert_eq!(mark(&[]), mark(&[]));
    let moved = mark(&[("mover", &["update", "suspend"])]);
    assert_ne!(mark(&[]), moved);
    assert_eq!(moved, mark(&[("mover", &["Suspend", "update"])]));
    assert_ne!(mark(&[("trigger", &["terminated"])]), mark(&[]));
    let parser = idp_parser();
    for action in ["Deactivate", "update", "create", "suspend", "nothing"] {
        assert_eq!(
            parser.reading().classify(action),
            match parser.stage_of(action) {
                Some(stage) => Classified::Stage(stage),
                None => Classified::Other,
            },
            "{action}"
        );
    }
}
