//! The filter-policy case table (`cases.json`): each case is a policy, a
//! message and what AWS documents for it (match, no match, or an invalid
//! policy), with the documentation section it comes from.

use std::collections::BTreeMap;

use serde::Deserialize;

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
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let scope = Scope::parse(&c.scope).unwrap_or_else(|| panic!("{}: bad scope", c.name));
        let text = policy_text(c);
        let outcome = match FilterPolicy::parse(&text, scope) {
            Err(e) => {
                if c.expect != "invalid" {
                    failures.push(format!("{}: rejected ({e}), expected {}", c.name, c.expect));
                } else if let Some(word) = &c.error_contains {
                    if !e.0.to_lowercase().contains(&word.to_lowercase()) {
                        failures.push(format!("{}: error {e:?} does not name {word:?}", c.name));
                    }
                }
                continue;
            }
            Ok(p) => {
                let attrs = c
                    .attributes
                    .iter()
                    .map(|(k, a)| {
                        let binary = a.data_type.starts_with("Binary");
                        (
                            k.as_str(),
                            AttributeRef {
                                data_type: &a.data_type,
                                value: (!binary).then_some(a.value.as_str()),
                            },
                        )
                    })
                    .collect();
                let m = Message::new(attrs, &c.body);
                if p.matches(&m) {
                    "match"
                } else {
                    "no-match"
                }
            }
        };
        if outcome != c.expect {
            failures.push(format!("{}: got {outcome}, expected {}", c.name, c.expect));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
