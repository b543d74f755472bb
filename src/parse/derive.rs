//! Vendor logic that pointers cannot express, applied to the picked fields.

use super::{scim, Field, Picked};
use crate::config::Role;
use crate::model::Method;

/// The CloudTrail `eventSource` of IAM Identity Center's SCIM endpoint.
pub const IDENTITY_CENTER_SCIM: &str = "identitystore-scim.amazonaws.com";

/// AWS IAM Identity Center SCIM events in CloudTrail (formats.md §3). Returns false for events
/// of other services (the line is then not a record).
///
/// Gateway role: `eventName` + `requestParameters.id` become the request (`PatchUser` →
/// `PATCH /Users/{id}`), and `errorCode` the status (`ThrottlingException` → 429; no error →
/// the method's success code). IdP role: `PatchUser`/`PutUser` whose body sets `active` false
/// become `DisableUser` (a leaver), true `EnableUser`; `errorCode` means failure.
pub fn cloudtrail(picked: &mut Picked<'_>, role: Role) -> bool {
    if picked
        .text(Field::EventSource)
        .is_some_and(|s| s != IDENTITY_CENTER_SCIM)
    {
        return false;
    }
    let event = match role {
        Role::Gateway => picked.text(Field::Event),
        _ => picked.text(Field::Action),
    }
    .unwrap_or("")
    .to_string();
    let id = picked.text(Field::TargetId).map(str::to_string);
    let error_code = picked.text(Field::ErrorCode).map(str::to_string);
    let (method, resource) = match event.as_str() {
        "CreateUser" => (Method::Post, "Users"),
        "PutUser" => (Method::Put, "Users"),
        "PatchUser" => (Method::Patch, "Users"),
        "DeleteUser" => (Method::Delete, "Users"),
        "GetUser" | "ListUsers" => (Method::Get, "Users"),
        "CreateGroup" => (Method::Post, "Groups"),
        "PatchGroup" => (Method::Patch, "Groups"),
        "DeleteGroup" => (Method::Delete, "Groups"),
        "GetGroup" | "ListGroups" => (Method::Get, "Groups"),
        _ => (Method::Get, ""),
    };
    match role {
        Role::Gateway => {
            let path = match (&id, method) {
                (Some(id), m) if m != Method::Post => format!("/scim/v2/{resource}/{id}"),
                _ if resource.is_empty() => format!("/scim/v2/{event}"),
                _ => format!("/scim/v2/{resource}"),
            };
            let status = match error_code.as_deref() {
                None => match method {
                    Method::Post => 201,
                    Method::Delete => 204,
                    _ => 200,
                },
                Some(code) => status_of_error(code),
            };
            picked.replace_static(Field::Method, method.as_str());
            picked.replace(Field::Path, Some(path));
            picked.replace(Field::Status, Some(status.to_string()));
        }
        _ => {
            let body = picked.body();
            let active = body.as_ref().and_then(|b| b.active(method));
            let action = match (event.as_str(), active) {
                ("PatchUser" | "PutUser", Some(false)) => "DisableUser".to_string(),
                ("PatchUser" | "PutUser", Some(true)) => "EnableUser".to_string(),
                _ => event.clone(),
            };
            picked.replace(Field::Action, Some(action));
            let status = if error_code.is_some() {
                "failure"
            } else {
                "success"
            };
            picked.replace_static(Field::Status, status);
            if picked.text(Field::UserLogin).is_none() {
                let login = body
                    .as_ref()
                    .and_then(|b| scim::user_name_of("", None, Some(b)))
                    .filter(|n| n != "HIDDEN_DUE_TO_SECURITY_REASONS");
                picked.replace(Field::UserLogin, login);
            }
            if let Some(code) = error_code {
                if picked.text(Field::Error).is_none() {
                    picked.replace(Field::Error, Some(code));
                }
            }
        }
    }
    true
}

/// HTTP status of IAM Identity Center's documented SCIM errors.
fn status_of_error(code: &str) -> u16 {
    match code {
        "ValidationException" => 400,
        "UnauthorizedException" => 401,
        "AccessDeniedException" => 403,
        "ResourceNotFoundException" => 404,
        "ConflictException" => 409,
        "ThrottlingException" => 429,
        "InternalServerException" => 500,
        "ServiceUnavailableException" => 503,
        _ => 400,
    }
}
