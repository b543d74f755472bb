//! The high-risk leaver policy: which leavers must be disabled fast, and how fast.

use crate::config::SloConfig;
use glob::{MatchOptions, Pattern};

const CASE_INSENSITIVE: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

#[derive(Debug, Clone)]
struct Rule {
    apps: Vec<Pattern>,
    users: Vec<Pattern>,
    groups: Vec<Pattern>,
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

impl Policy {
    /// Builds the policy from validated config (patterns were checked by `validate`).
    pub fn from_config(slo: &SloConfig) -> Policy {
        let compile = |patterns: &[String]| -> Vec<Pattern> {
            patterns
                .iter()
                .filter_map(|p| Pattern::new(p).ok())
                .collect()
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

    /// `(high_risk, deadline_secs)`: the first matching policy, else the standard deadline.
    pub fn decide(&self, subject: Subject<'_>) -> (bool, u64) {
        let matches = |patterns: &[Pattern], value: Option<&str>| {
            value.is_some_and(|v| patterns.iter().any(|p| p.matches_with(v, CASE_INSENSITIVE)))
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
