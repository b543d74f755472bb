//! One joined operation → its outcome, cause and hint (design.md "Definitions", clarifications
//! 1–4).

use crate::join::{JoinMethod, Joined};
use crate::model::{Cause, IdpStatus, Method, Outcome, Stage, WriteKind};
use crate::time::Ts;
use serde::Serialize;

/// One gateway attempt of an operation, as the API and the report show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub time: Ts,
    pub method: Method,
    pub path: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
}

/// A judged operation: one row of the `operations` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    /// The shared ID, or the IdP's own ID of the operation.
    pub correlation_id: Option<String>,
    pub join_method: JoinMethod,
    pub stage: Stage,
    pub app: Option<String>,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    /// The IdP's action (the latest record's).
    pub action: Option<String>,
    /// Index of the IdP source in the config.
    #[serde(skip)]
    pub idp_source: Option<u16>,
    /// The operation's time: its earliest IdP record (else its first attempt).
    pub time: Ts,
    pub idp_time: Option<Ts>,
    pub idp_status: Option<IdpStatus>,
    pub idp_error: Option<String>,
    pub first_attempt_time: Option<Ts>,
    pub last_attempt_time: Option<Ts>,
    pub attempts: Vec<Attempt>,
    /// The last attempt's status.
    pub http_status: Option<u16>,
    pub method: Option<Method>,
    pub path: Option<String>,
    pub outcome: Outcome,
    pub cause: Option<Cause>,
    /// Milliseconds from the operation's time to its first attempt (negative when the gateway
    /// logged first).
    pub lag_ms: Option<i64>,
    pub disagreement: bool,
    pub high_risk: bool,
    /// The SCIM resource id of the user in the target (IdP's target id or the gateway path's).
    pub resource_id: Option<String>,
    /// Groups the IdP named for the user (for the high-risk policy).
    #[serde(skip)]
    pub groups: Vec<String>,
    /// The IdP's explicit trigger time, if its record carried one.
    #[serde(skip)]
    pub trigger_time: Option<Ts>,
}

impl Operation {
    /// The cause's remediation hint.
    pub fn hint(&self) -> Option<&'static str> {
        self.cause.map(Cause::hint)
    }

    /// The cause alerts and metrics count: [`Operation::cause`], and for an unattributed
    /// write refused with 401/403 that refusal (a token another client holds, perhaps a
    /// leaked one), which the report's `causes` leave out (clarification 1).
    pub fn alert_cause(&self) -> Option<Cause> {
        if self.outcome != Outcome::Unattributed {
            return self.cause;
        }
        self.http_status
            .and_then(Cause::from_http_status)
            .filter(|c| matches!(c, Cause::Unauthorized | Cause::Forbidden))
    }
    /// Time of the first 2xx attempt, if any.
    pub fn first_success(&self) -> Option<Ts> {
        self.attempts
            .iter()
            .find(|a| (200..300).contains(&a.status))
            .map(|a| a.time)
    }
    /// Who the user is in outputs: the login (email) when known, else the id.
    pub fn user(&self) -> Option<&str> {
        self.user_login.as_deref().or(self.user_id.as_deref())
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Judges a joined operation. `high_risk` is decided by the caller's policy.
pub fn judge(joined: Joined) -> Operation {
    let Joined {
        correlation_id,
        join_method,
        idp,
        attempts: mut records,
        notes,
    } = joined;
    // What the gateway itself says of the request, for writes no IdP record claims.
    let gateway_facts = records.last_mut().filter(|_| idp.is_empty()).map(|a| {
        (
            a.write.map(WriteKind::stage),
            a.app.take(),
            a.resource_id.take(),
            a.user_name.take(),
        )
    });
    // A fresh, exact Vec: `collect` would reuse the records' allocation (in-place
    // iteration), and every operation the daemon keeps for the API would hold it.
    let mut attempts: Vec<Attempt> = Vec::with_capacity(records.len());
    attempts.extend(records.drain(..).map(|a| Attempt {
        time: a.time,
        method: a.method,
        path: a.path,
        status: a.status,
        duration_ms: a.duration_ms,
        error_detail: a.error_detail,
    }));
    let last = attempts.last();
    let first_attempt_time = attempts.first().map(|a| a.time);

    if idp.is_empty() {
        // A gateway SCIM write no IdP record claims: unattributed (clarification 5).
        let attempt = last.expect("unattributed writes carry their one attempt");
        let (stage, app, resource_id, user_name) = gateway_facts.unwrap_or_default();
        return Operation {
            correlation_id,
            join_method,
            // Gateway-only records take their stage from the request (design.md "Stage").
            stage: stage.unwrap_or(Stage::Mover),
            app,
            user_id: None,
            user_login: user_name,
            action: None,
            idp_source: None,
            time: attempt.time,
            idp_time: None,
            idp_status: None,
            idp_error: None,
            first_attempt_time,
            last_attempt_time: Some(attempt.time),
            http_status: Some(attempt.status),
            method: Some(attempt.method),
            path: Some(attempt.path.clone()),
            outcome: Outcome::Unattributed,
            cause: None,
            lag_ms: None,
            disagreement: false,
            high_risk: false,
            resource_id,
            groups: Vec::new(),
            trigger_time: None,
            attempts,
        };
    }

    // The IdP's word is its latest record; the operation's time its earliest (clar. 2).
    let earliest = &idp[0];
    let latest = idp.last().expect("non-empty");
    let idp_status = latest.status;
    let (outcome, cause) = match last {
        Some(attempt) if is_success(attempt.status) => (Outcome::Succeeded, None),
        Some(attempt) => (Outcome::Failed, Cause::from_http_status(attempt.status)),
        None => match idp_status {
            // No attempt reached the gateway: the IdP's own note or error text may still say
            // what the target answered (SaaS targets often have no gateway of ours in front).
            Some(IdpStatus::Failure) => {
                let quoted = idp
                    .iter()
                    .rev()
                    .find_map(|r| r.error.as_deref().and_then(cause_in_text));
                (
                    Outcome::Failed,
                    Some(notes.first().copied().or(quoted).unwrap_or(Cause::IdpError)),
                )
            }
            Some(IdpStatus::Skipped) => (Outcome::Skipped, None),
            _ => (Outcome::Unconfirmed, Some(Cause::Unconfirmed)),
        },
    };
    // A disagreement needs a claim and an answer that contradict (clarification 3).
    let disagreement = match (idp_status, last) {
        (Some(IdpStatus::Success), Some(a)) => !is_success(a.status),
        (Some(IdpStatus::Failure), Some(a)) => is_success(a.status),
        _ => false,
    };
    let (stage, time, source) = (earliest.stage, earliest.time, latest.origin.source);
    let trigger_time = idp.iter().filter_map(|r| r.trigger_time).min();
    // The user's id in a target's path, where no IdP record names the target.
    let path_id = || {
        attempts
            .iter()
            .find_map(|a| match crate::parse::scim::resource_of(&a.path) {
                Some(crate::parse::scim::Resource::Users(Some(id))) => Some(id.to_string()),
                _ => None,
            })
    };
    // The records are ours and dropped here: their fields are moved out, not copied. Each
    // field comes from the latest record that has it.
    let mut idp = idp;
    let mut pick = |f: fn(&mut crate::model::IdpRecord) -> &mut Option<String>| {
        idp.iter_mut().rev().find_map(|r| f(r).take())
    };
    let app = pick(|r| &mut r.app);
    let user_id = pick(|r| &mut r.user_id);
    let user_login = pick(|r| &mut r.user_login);
    let idp_error = pick(|r| &mut r.error);
    let target_id = pick(|r| &mut r.target_id);
    let groups = idp
        .iter_mut()
        .rev()
        .find(|r| !r.groups.is_empty())
        .map(|r| std::mem::take(&mut r.groups))
        .unwrap_or_default();
    let action = idp.last_mut().map(|r| std::mem::take(&mut r.action));
    Operation {
        correlation_id,
        join_method,
        stage,
        app,
        user_id,
        user_login,
        action,
        idp_source: Some(source),
        time,
        idp_time: Some(time),
        idp_status,
        idp_error,
        first_attempt_time,
        last_attempt_time: last.map(|a| a.time),
        http_status: last.map(|a| a.status),
        method: last.map(|a| a.method),
        path: last.map(|a| a.path.clone()),
        outcome,
        cause,
        lag_ms: first_attempt_time.map(|t| t.0.saturating_sub(time.0).div_euclid(1000)),
        disagreement,
        high_risk: false,
        resource_id: target_id.or_else(path_id),
        groups,
        trigger_time,
        attempts,
    }
}

/// The cause an IdP's error text quotes: "…HTTP status code 409…" (Entra), "…: 503" (Okta),
/// "rate limit". `None` when the text names no status.
pub fn cause_in_text(text: &str) -> Option<Cause> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("rate limit")
        || lower.contains("too many requests")
        || lower.contains("throttl")
    {
        return Some(Cause::RateLimited);
    }
    for marker in ["status code ", "status ", "http ", "answered ", ": "] {
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            if digits.len() == 3 {
                if let Ok(status) = digits.parse::<u16>() {
                    if (400..600).contains(&status) {
                        return Cause::from_http_status(status);
                    }
                }
            }
            rest = after;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::cause_in_text;
    use crate::model::Cause;

    #[test]
    fn idp_error_texts_that_quote_a_status_give_its_cause() {
        let entra =
            "SCIM endpoint returned an error response with the HTTP status code 409 (Conflict)";
        assert_eq!(cause_in_text(entra), Some(Cause::Conflict));
        assert_eq!(
            cause_in_text("Error while deactivating user: 503"),
            Some(Cause::ServerError)
        );
        assert_eq!(
            cause_in_text("Request rate limit exceeded"),
            Some(Cause::RateLimited)
        );
        assert_eq!(
            cause_in_text("attribute mapping error: manager is required"),
            None
        );
        assert_eq!(cause_in_text("retried 4 times"), None);
    }
}
