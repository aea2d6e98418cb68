//! The event-pattern case table (`event_cases.json`): each case is a
//! pattern, an event and what the EventBridge documentation says of them
//! (match, no match, or an invalid pattern), with the section it comes from.

use serde::Deserialize;

use super::case_table::{check_all, Run};
use super::EventPattern;

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    pattern: Option<serde_json::Value>,
    #[serde(default)]
    pattern_text: Option<String>,
    #[serde(default)]
    event: serde_json::Value,
    expect: String,
    #[serde(default)]
    error_contains: Option<String>,
    source: String,
}

#[test]
fn every_event_pattern_case_behaves_as_eventbridge_documents() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("event_cases.json")).expect("event_cases.json is valid");
    check_all(&cases, 150, |c| {
        assert!(!c.source.is_empty(), "{}: no source", c.name);
        let text = match (&c.pattern_text, &c.pattern) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => p.to_string(),
            (None, None) => panic!("{}: no pattern", c.name),
        };
        Run {
            name: &c.name,
            outcome: EventPattern::parse(&text).map(|p| p.matches(&c.event)),
            expect: &c.expect,
            error_contains: c.error_contains.as_deref(),
        }
    });
}
