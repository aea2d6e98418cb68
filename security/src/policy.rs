//! IAM-style identity policies: the language Sluice's users already write
//! for AWS.
//!
//! ```json
//! {
//!   "Version": "2012-10-17",
//!   "Statement": [
//!     {"Effect": "Allow", "Action": ["sqs:*"], "Resource": "arn:aws:sqs:*:*:orders-*"},
//!     {"Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": "*"}
//!   ]
//! }
//! ```
//!
//! A statement has an `Effect` (`Allow` or `Deny`), an `Action` or
//! `NotAction`, and a `Resource` or `NotResource`, each one pattern or a
//! list. Patterns take `*` (any run of characters) and `?` (any one);
//! actions match without regard to case, resources with. Evaluation is
//! IAM's: an explicit `Deny` in any policy wins, then any `Allow`, and
//! anything not allowed is denied.
//!
//! What Sluice does not evaluate is refused rather than ignored, so a
//! policy never grants more than it says: `Condition`, `Principal` and
//! `NotPrincipal` (identity policies name no principal) are errors.

use serde_json::Value;

/// Largest policy document, in bytes (IAM's limit for a managed policy).
pub const DOCUMENT_BYTES_MAX: usize = 6144;
/// Most statements in a policy.
pub const STATEMENTS_MAX: usize = 100;

/// A statement's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Grants.
    Allow,
    /// Refuses, over any grant.
    Deny,
}

/// The outcome of evaluating policies for one action on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Some statement allows it and none denies it.
    Allow,
    /// A statement denies it.
    ExplicitDeny,
    /// No statement allows it.
    ImplicitDeny,
}

/// A policy document that did not parse: the JSON path of the offending
/// part and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {rule}")]
pub struct PolicyError {
    /// Where, e.g. `Statement[1].Action[0]`.
    pub path: String,
    /// What it must be.
    pub rule: String,
}

fn err(path: impl Into<String>, rule: impl Into<String>) -> PolicyError {
    PolicyError {
        path: path.into(),
        rule: rule.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    /// Matches what one of the patterns matches.
    Any(Vec<String>),
    /// Matches what none of the patterns matches.
    None(Vec<String>),
}

impl Match {
    fn matches(&self, value: &str, fold_case: bool) -> bool {
        let hit = |ps: &[String]| ps.iter().any(|p| wildcard(p, value, fold_case));
        match self {
            Match::Any(ps) => hit(ps),
            Match::None(ps) => !hit(ps),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    action: Match,
    resource: Match,
}

/// A parsed, validated policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// Matches `value` against `pattern` with `*` and `?`.
pub fn wildcard(pattern: &str, value: &str, fold_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let eq = |a: char, b: char| {
        if fold_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut vi) = (0, 0);
    // Where the last `*` was, and the value position it now stands for.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], v[vi]))) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn strings(
    path: &str,
    v: &Value,
    check: impl Fn(&str, &str) -> Result<(), PolicyError>,
) -> Result<Vec<String>, PolicyError> {
    let list: Vec<(String, &Value)> = match v {
        Value::String(_) => vec![(path.to_string(), v)],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("{path}[{i}]"), x))
            .collect(),
        _ => return Err(err(path, "must be a string or a non-empty list of strings")),
    };
    list.into_iter()
        .map(|(p, x)| {
            let s = x.as_str().ok_or_else(|| err(&p, "must be a string"))?;
            check(&p, s)?;
            Ok(s.to_string())
        })
        .collect()
}

fn check_action(path: &str, a: &str) -> Result<(), PolicyError> {
    if a == "*" {
        return Ok(());
    }
    let rule = "must be \"*\" or SERVICE:ACTION (e.g. sqs:SendMessage, sqs:*, sluice:AddLearner)";
    let (service, action) = a.split_once(':').ok_or_else(|| err(path, rule))?;
    let service_ok = !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*');
    let action_ok = !action.is_empty()
        && action
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?');
    if service_ok && action_ok {
        Ok(())
    } else {
        Err(err(path, rule))
    }
}

fn check_resource(path: &str, r: &str) -> Result<(), PolicyError> {
    if r == "*" {
        return Ok(());
    }
    if r.starts_with("arn:") && r.splitn(6, ':').count() == 6 && r.len() <= 2048 {
        return Ok(());
    }
    Err(err(
        path,
        "must be \"*\" or an ARN, arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, with wildcards allowed",
    ))
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(document: &str) -> Result<Policy, PolicyError> {
        if document.len() > DOCUMENT_BYTES_MAX {
            return Err(err(
                "policy",
                format!(
                    "must be at most {DOCUMENT_BYTES_MAX} bytes, got {}",
                    document.len()
                ),
            ));
        }
        let root: Value = serde_json::from_str(document)
            .map_err(|e| err("policy", format!("must be a JSON object: {e}")))?;
        let obj = root
            .as_object()
            .ok_or_else(|| err("policy", "must be a JSON object"))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(err(key, "is not a policy element (Version, Id, Statement)"));
            }
        }
        if let Some(v) = obj.get("Version") {
            if !matches!(v.as_str(), Some("2012-10-17" | "2008-10-17")) {
                return Err(err("Version", "must be \"2012-10-17\" or \"2008-10-17\""));
            }
        }
        let raw: Vec<(String, &Value)> = match obj.get("Statement") {
            Some(s @ Value::Object(_)) => vec![("Statement".into(), s)],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("Statement[{i}]"), s))
                .collect(),
            _ => {
                return Err(err(
                    "Statement",
                    "must be a statement object or a non-empty list of them",
                ))
            }
        };
        if raw.len() > STATEMENTS_MAX {
            return Err(err(
                "Statement",
                format!("must hold at most {STATEMENTS_MAX} statements"),
            ));
        }
        let statements = raw
            .into_iter()
            .map(|(path, s)| Self::statement(&path, s))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    fn statement(path: &str, s: &Value) -> Result<Statement, PolicyError> {
        let obj = s
            .as_object()
            .ok_or_else(|| err(path, "must be a JSON object"))?;
        for key in obj.keys() {
            let rule = match key.as_str() {
                "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" => continue,
                "Condition" => "is not supported: Sluice evaluates no conditions, and a policy must not grant more than it says",
                "Principal" | "NotPrincipal" => "is not allowed in an identity policy (it applies to the principals it is attached to)",
                _ => "is not a statement element (Sid, Effect, Action, NotAction, Resource, NotResource)",
            };
            return Err(err(format!("{path}.{key}"), rule));
        }
        if let Some(sid) = obj.get("Sid") {
            let ok = sid
                .as_str()
                .is_some_and(|s| s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric()));
            if !ok {
                return Err(err(
                    format!("{path}.Sid"),
                    "must be at most 128 letters and digits",
                ));
            }
        }
        let effect = match obj.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            _ => {
                return Err(err(
                    format!("{path}.Effect"),
                    "must be \"Allow\" or \"Deny\"",
                ))
            }
        };
        let action = match (obj.get("Action"), obj.get("NotAction")) {
            (Some(a), None) => Match::Any(strings(&format!("{path}.Action"), a, check_action)?),
            (None, Some(a)) => Match::None(strings(&format!("{path}.NotAction"), a, check_action)?),
            _ => return Err(err(path, "must have exactly one of Action and NotAction")),
        };
        let resource = match (obj.get("Resource"), obj.get("NotResource")) {
            (Some(r), None) => Match::Any(strings(&format!("{path}.Resource"), r, check_resource)?),
            (None, Some(r)) => {
                Match::None(strings(&format!("{path}.NotResource"), r, check_resource)?)
            }
            _ => {
                return Err(err(
                    path,
                    "must have exactly one of Resource and NotResource",
                ))
            }
        };
        Ok(Statement {
            effect,
            action,
            resource,
        })
    }

    /// What this policy says of `action` on `resource`: `Some(Deny)` if a
    /// statement denies it, else `Some(Allow)` if one allows it.
    pub fn effect(&self, action: &str, resource: &str) -> Option<Effect> {
        let mut allowed = false;
        for s in &self.statements {
            if s.action.matches(action, true) && s.resource.matches(resource, false) {
                match s.effect {
                    Effect::Deny => return Some(Effect::Deny),
                    Effect::Allow => allowed = true,
                }
            }
        }
        allowed.then_some(Effect::Allow)
    }
}

/// Evaluates `policies` together, as IAM does: explicit deny, then allow,
/// then implicit deny.
pub fn decide<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    action: &str,
    resource: &str,
) -> Decision {
    let mut allowed = false;
    for p in policies {
        match p.effect(action, resource) {
            Some(Effect::Deny) => return Decision::ExplicitDeny,
            Some(Effect::Allow) => allowed = true,
            None => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_iam_does() {
        for (p, v, fold, want) in [
            ("*", "", false, true),
            ("*", "anything", false, true),
            ("sqs:*", "sqs:SendMessage", true, true),
            ("sqs:Send*", "sqs:sendmessage", true, true),
            ("sqs:Send*", "sqs:sendmessage", false, false),
            ("sqs:?etQueueUrl", "sqs:GetQueueUrl", true, true),
            ("sqs:?etQueueUrl", "sqs:GGetQueueUrl", true, false),
            (
                "arn:aws:sqs:*:*:orders-*",
                "arn:aws:sqs:us-east-1:1:orders-eu",
                false,
                true,
            ),
            (
                "arn:aws:sqs:*:*:orders-*",
                "arn:aws:sqs:us-east-1:1:Orders-eu",
                false,
                false,
            ),
            ("a*b*c", "aXbYbZc", false, true),
            ("a*b*c", "aXbYbZ", false, false),
            ("**", "x", false, true),
            ("abc", "abcd", false, false),
        ] {
            assert_eq!(wildcard(p, v, fold), want, "{p} vs {v}");
        }
    }

    #[test]
    fn malformed_policies_name_the_element_and_the_rule() {
        for (doc, path, needle) in [
            ("[]", "policy", "JSON object"),
            ("{\"Statement\": []}", "Statement", "non-empty"),
            ("{\"Version\": \"2020\", \"Statement\": {}}", "Version", "2012-10-17"),
            ("{\"Statement\": {\"Effect\": \"allow\", \"Action\": \"*\", \"Resource\": \"*\"}}", "Statement.Effect", "\"Allow\""),
            ("{\"Statement\": [{\"Effect\": \"Allow\", \"Resource\": \"*\"}]}", "Statement[0]", "Action and NotAction"),
            ("{\"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"*\"}]}", "Statement[0]", "Resource and NotResource"),
            ("{\"Statement\": [{\"Effect\": \"Allow\", \"Action\": [\"sqs:Send\", \"SendMessage\"], \"Resource\": \"*\"}]}", "Statement[0].Action[1]", "SERVICE:ACTION"),
            ("{\"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"orders\"}]}", "Statement[0].Resource", "an ARN"),
            ("{\"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\", \"Condition\": {}}]}", "Statement[0].Condition", "not supported"),
            ("{\"Statement\": [{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"*\", \"Resource\": \"*\"}]}", "Statement[0].Principal", "identity policy"),
            ("{\"Statement\": {\"Effect\": \"Allow\", \"Action\": [], \"Resource\": \"*\"}}", "Statement.Action", "non-empty list"),
            ("{\"Statment\": {}}", "Statment", "not a policy element"),
        ] {
            let e = Policy::parse(doc).unwrap_err();
            assert_eq!(e.path, path, "{doc}: {e}");
            assert!(e.rule.contains(needle), "{doc}: {e}");
        }
        let huge = format!(
            "{{\"Statement\": {{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"arn:aws:sqs:x:y:{}\"}}}}",
            "z".repeat(DOCUMENT_BYTES_MAX)
        );
        assert!(Policy::parse(&huge)
            .unwrap_err()
            .rule
            .contains("6144 bytes"));
    }

    #[test]
    fn explicit_deny_wins_and_nothing_is_allowed_by_default() {
        let allow = Policy::parse(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}}"#,
        )
        .unwrap();
        let deny = Policy::parse(
            r#"{"Statement": [{"Effect": "Deny", "NotAction": ["sqs:Get*", "sqs:List*"], "Resource": "arn:aws:sqs:*:*:prod-*"}]}"#,
        )
        .unwrap();
        let q = "arn:aws:sqs:us-east-1:000000000000:prod-orders";
        assert_eq!(decide([&allow], "sqs:SendMessage", q), Decision::Allow);
        assert_eq!(
            decide([&allow, &deny], "sqs:SendMessage", q),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide([&allow, &deny], "sqs:GetQueueUrl", q),
            Decision::Allow
        );
        assert_eq!(
            decide([&allow, &deny], "sns:Publish", "arn:aws:sns:us-east-1:0:t"),
            Decision::ImplicitDeny
        );
        assert_eq!(decide([], "sqs:SendMessage", q), Decision::ImplicitDeny);
        let not_resource = Policy::parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:sqs:*:*:secret"}}"#,
        )
        .unwrap();
        assert_eq!(
            decide([&not_resource], "sqs:SendMessage", q),
            Decision::Allow
        );
        assert_eq!(
            decide([&not_resource], "sqs:SendMessage", "arn:aws:sqs:r:a:secret"),
            Decision::ImplicitDeny
        );
    }
}
