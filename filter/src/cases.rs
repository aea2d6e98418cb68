//! The filter-policy case table (`cases.json`): each case is a policy, a
//! message and what AWS documents for it (match, no match, or an invalid
//! policy), with the documentation section it comes from.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::case_table::{check_all, Run};
use super::{AttributeRef, FilterPolicy, Message, Scope};

#[derive(Deserialize)]
struct Case {
    name: String,
    scope: String,
    #[serde(default)]
    policy: Option<serde_json::Value>,
    #[serde(default)]
    policy_text: Option<String>,
    #[serde(default)]
    policy_generate: Option<Generate>,
    #[serde(default)]
    attributes: BTreeMap<String, Attr>,
    #[serde(default)]
    body: String,
    expect: String,
    #[serde(default)]
    error_contains: Option<String>,
}

#[derive(Deserialize)]
struct Attr {
    #[serde(rename = "Type")]
    data_type: String,
    #[serde(rename = "Value")]
    value: String,
}

#[derive(Deserialize)]
struct Generate {
    kind: String,
    bytes: usize,
}

fn policy_text(c: &Case) -> String {
    if let Some(t) = &c.policy_text {
        return t.clone();
    }
    if let Some(g) = &c.policy_generate {
        assert_eq!(g.kind, "size", "{}: unknown generator", c.name);
        // A valid policy padded with a long string value to the size.
        let pad = g.bytes.saturating_sub(20);
        return format!("{{\"k\": [\"{}\"]}}", "x".repeat(pad));
    }
    c.policy
        .as_ref()
        .unwrap_or_else(|| panic!("{}: no policy", c.name))
        .to_string()
}

#[test]
fn every_case_behaves_as_aws_documents() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("cases.json")).expect("cases.json is valid");
    check_all(&cases, 60, |c| {
        let scope = Scope::parse(&c.scope).unwrap_or_else(|| panic!("{}: bad scope", c.name));
        let outcome = FilterPolicy::parse(&policy_text(c), scope).map(|p| {
            let attrs = c
                .attributes
                .iter()
                .map(|(k, a)| {
                    let binary = a.data_type.starts_with("Binary");
                    let value = (!binary).then_some(a.value.as_str());
                    let data_type = &a.data_type;
                    (k.as_str(), AttributeRef { data_type, value })
                })
                .collect();
            p.matches(&Message::new(attrs, &c.body))
        });
        Run {
            name: &c.name,
            outcome,
            expect: &c.expect,
            error_contains: c.error_contains.as_deref(),
        }
    });
}
