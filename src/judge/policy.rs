//! The high-risk leaver policy: which leavers must be disabled fast, and how fast.

use crate::config::SloConfig;
use crate::swar::eq_ignore_ascii_case;
use glob::{MatchOptions, Pattern};

const CASE_INSENSITIVE: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

/// A compiled pattern: plain ASCII text (the common case: an app's name) is compared without
/// running the glob matcher.
#[derive(Debug, Clone)]
enum Matcher {
    Literal(String),
    /// ASCII text and `*` only (`*admin*@corp.example`): the parts between the stars.
    Stars(Vec<String>),
    Glob(Pattern),
}

impl Matcher {
    fn new(pattern: &str) -> Option<Matcher> {
        let glob = Pattern::new(pattern).ok()?;
        if !pattern.is_ascii() || pattern.contains(['?', '[', ']']) {
            Some(Matcher::Glob(glob))
        } else if pattern.contains('*') {
            // Folded once here, so matching folds only the value's side.
            Some(Matcher::Stars(
                pattern.split('*').map(str::to_ascii_lowercase).collect(),
            ))
        } else {
            Some(Matcher::Literal(pattern.to_string()))
        }
    }

    /// Case-insensitive for ASCII letters, exact otherwise: as `glob` compares.
    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Literal(text) => eq_ignore_ascii_case(text.as_bytes(), value.as_bytes()),
            Matcher::Stars(parts) => stars_match(parts, value.as_bytes()),
            Matcher::Glob(pattern) => pattern.matches_with(value, CASE_INSENSITIVE),
        }
    }
}

/// `parts` are the pattern split at its stars (so at least two): the first must start the
/// value, the last end it, the ones between appear in order. Leftmost matching of each middle
/// part is optimal, so no backtracking is needed. Parts are ASCII, so byte offsets never split
/// a character of the value.
fn stars_match(parts: &[String], value: &[u8]) -> bool {
    let (first, rest) = parts.split_first().expect("split yields a part");
    let (last, middle) = rest.split_last().expect("a star yields two parts");
    let (first, last) = (first.as_bytes(), last.as_bytes());
    if value.len() < first.len() + last.len()
        || !eq_ignore_ascii_case(&value[..first.len()], first)
        || !eq_ignore_ascii_case(&value[value.len() - last.len()..], last)
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for part in middle {
        match find_folded(rest, part.as_bytes()) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Where `part` (ASCII, already lowercase) first appears in `value`, ignoring ASCII case: a
/// scan for its first byte, the rest compared only there (this runs for every operation's
/// login against patterns like `*admin*`).
fn find_folded(value: &[u8], part: &[u8]) -> Option<usize> {
    let Some((&head, tail)) = part.split_first() else {
        return Some(0);
    };
    let last_start = value.len().checked_sub(part.len())?;
    (0..=last_start).find(|&at| {
        value[at].to_ascii_lowercase() == head
            && value[at + 1..at + part.len()].eq_ignore_ascii_case(tail)
    })
}

#[derive(Debug, Clone)]
struct Rule {
    apps: Vec<Matcher>,
    users: Vec<Matcher>,
    groups: Vec<Matcher>,
    deadline_secs: u64,
}

/// Decides a leaver's risk and deadline.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    standard_deadline_secs: u64,
}

/// Who a decision is about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub app: Option<&'a str>,
    pub user_login: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub groups: &'a [String],
}

/// A [`Subject`] kept: what a decision saw, to decide again with a changed policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decided {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Decided {
    pub fn of(subject: Subject<'_>) -> Decided {
        Decided {
            app: subject.app.map(str::to_string),
            user_login: subject.user_login.map(str::to_string),
            user_id: subject.user_id.map(str::to_string),
            groups: subject.groups.to_vec(),
        }
    }
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            app: self.app.as_deref(),
            user_login: self.user_login.as_deref(),
            user_id: self.user_id.as_deref(),
            groups: &self.groups,
        }
    }
}

impl Policy {
    /// Builds the policy from validated config (patterns were checked by `validate`).
    pub fn from_config(slo: &SloConfig) -> Policy {
        let compile = |patterns: &[String]| -> Vec<Matcher> {
            patterns.iter().filter_map(|p| Matcher::new(p)).collect()
        };
        Policy {
            rules: slo
                .high_risk
                .iter()
                .map(|p| Rule {
                    apps: compile(&p.apps),
                    users: compile(&p.users),
                    groups: compile(&p.groups),
                    deadline_secs: p.disable_within_secs,
                })
                .collect(),
            standard_deadline_secs: slo.standard_disable_within_secs,
        }
    }

    /// Whether a rule names groups: then a leaver's decision needs its groups.
    pub fn uses_groups(&self) -> bool {
        self.rules.iter().any(|rule| !rule.groups.is_empty())
    }

    /// `(high_risk, deadline_secs)`: the first matching policy, else the standard deadline.
    pub fn decide(&self, subject: Subject<'_>) -> (bool, u64) {
        let matches = |patterns: &[Matcher], value: Option<&str>| {
            value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
        };
        for rule in &self.rules {
            let hit = matches(&rule.apps, subject.app)
                || matches(&rule.users, subject.user_login)
                || matches(&rule.users, subject.user_id)
                || subject
                    .groups
                    .iter()
                    .any(|g| matches(&rule.groups, Some(g)));
            if hit {
                return (true, rule.deadline_secs);
            }
        }
        (false, self.standard_deadline_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HighRiskPolicy;

    fn policy() -> Policy {
        let mut slo = SloConfig::default();
        slo.high_risk.push(HighRiskPolicy {
            apps: vec!["aws-prod".into(), "github*".into()],
            users: vec!["admin-*@corp.example".into()],
            groups: vec!["Domain Admins".into()],
            disable_within_secs: 900,
        });
        Policy::from_config(&slo)
    }

    #[test]
    fn fast_matchers_agree_with_glob() {
        let patterns = [
            "aws-prod",
            "*admin*@corp.example",
            "admin-*",
            "*",
            "**",
            "a*b*c",
            "*ops",
            "x*y",
            "Domain Admins",
            "github*",
            "*a*a*",
            "ab*ba",
            "*ADMIN*@Corp.Example",
            "*aa*aa*",
            "*a*b*a*",
            "x*y*z",
        ];
        let long = format!("{}Admin{}@corp.example", "x".repeat(200), "ü".repeat(40));
        let long_miss = format!("{}adm{}@corp.example", "x".repeat(200), "in".repeat(40));
        let values = [
            "aws-prod",
            "AWS-Prod",
            "aws-prod2",
            "superadmin@corp.example",
            "ADMIN@CORP.EXAMPLE",
            "admin-rita",
            "admin",
            "",
            "abc",
            "aXbYc",
            "acb",
            "devops",
            "xy",
            "x",
            "domain admins",
            "GitHub-Enterprise",
            "aa",
            "a",
            "aba",
            "aXaYa",
            "abba",
            "aba",
            "ábc",
            "Kadmin@corp.example",
            "\u{212A}admin@corp.example",
            "aaa",
            "aaaa",
            "ABA",
            "Ä-aDmIn-ä@corp.example",
            "xyz",
            "xzy",
            &long,
            &long_miss,
        ];
        for pattern in patterns {
            let fast = Matcher::new(pattern).unwrap();
            assert!(!matches!(fast, Matcher::Glob(_)), "{pattern}");
            let glob = Pattern::new(pattern).unwrap();
            for value in values {
                assert_eq!(
                    fast.matches(value),
                    glob.matches_with(value, CASE_INSENSITIVE),
                    "{pattern} vs {value}"
                );
            }
        }
    }

    #[test]
    fn apps_users_and_groups_each_make_a_leaver_high_risk() {
        let p = policy();
        assert_eq!(
            p.decide(Subject {
                app: Some("GitHub-Enterprise"),
                ..Subject::default()
            }),
            (true, 900)
        );
        assert_eq!(
            p.decide(Subject {
                app: Some("slack"),
                user_login: Some("ADMIN-rita@corp.example"),
                ..Subject::default()
            }),
            (true, 900)
        );
        let groups = vec!["domain admins".to_string()];
        assert_eq!(
            p.decide(Subject {
                app: Some("slack"),
                groups: &groups,
                ..Subject::default()
            }),
            (true, 900)
        );
    }

    #[test]
    fn everyone_else_gets_the_standard_deadline() {
        assert_eq!(
            policy().decide(Subject {
                app: Some("slack"),
                user_login: Some("rita@corp.example"),
                ..Subject::default()
            }),
            (false, 86_400)
        );
    }
}
