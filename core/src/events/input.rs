//! What a target delivers: the whole event, a constant, a part of the event
//! picked by a JSON path, or a template filled from parts of the event (a
//! target's `Input`, `InputPath` and `InputTransformer`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::invalid;
use crate::error::{field_in, DomainError};

/// Longest `Input` or `InputTemplate`, characters.
pub const INPUT_MAX: usize = 8192;
/// Longest JSON path (`InputPath`, a path of `InputPathsMap`,
/// `PartitionKeyPath`), characters.
pub const PATH_MAX: usize = 256;
/// Largest input a template may make, bytes (a template can name the
/// whole event many times): past it the delivery fails.
pub const RENDER_MAX: usize = 256 * 1024;
/// Most entries of an `InputPathsMap`.
pub const PATHS_MAX: usize = 100;
/// Longest key of an `InputPathsMap`.
pub const PATH_KEY_MAX: usize = 256;

/// One step of a path: an object's key or an array's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// `.key` or `['key']`.
    Key(String),
    /// `[n]`.
    Index(usize),
}

/// A JSON path as targets take them: `$` then `.key`, `['key']` or `[n]`
/// steps (no wildcards, filters or slices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonPath {
    /// As given.
    pub text: String,
    /// The steps from the root.
    pub steps: Vec<Step>,
}

impl JsonPath {
    /// Reads a path; the error names `field`.
    pub fn parse(field: &str, text: &str) -> Result<JsonPath, DomainError> {
        let bad = |why: &str| {
            invalid(
                field,
                format!("{text:?} is not a JSON path of the form $.a.b[0]: {why}"),
            )
        };
        if text.chars().count() > PATH_MAX {
            return Err(invalid(
                field,
                format!("must be at most {PATH_MAX} characters"),
            ));
        }
        let mut rest = text
            .strip_prefix('$')
            .ok_or_else(|| bad("it must start with $"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let key = &r[..end];
                if key.is_empty() || key == "*" {
                    return Err(bad("a step needs a key name"));
                }
                steps.push(Step::Key(key.into()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix("['") {
                let end = r.find("']").ok_or_else(|| bad("['key'] is not closed"))?;
                steps.push(Step::Key(r[..end].into()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| bad("[n] is not closed"))?;
                let n = r[..end]
                    .parse::<usize>()
                    .map_err(|_| bad("an index is a whole number"))?;
                steps.push(Step::Index(n));
                rest = &r[end + 1..];
            } else {
                return Err(bad("steps are .key, ['key'] or [n]"));
            }
        }
        Ok(JsonPath {
            text: text.into(),
            steps,
        })
    }

    /// The value the path names in `v`, if any.
    pub fn find<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        self.steps.iter().try_fold(v, |v, step| match step {
            Step::Key(k) => v.get(k.as_str()),
            Step::Index(i) => v.get(*i),
        })
    }
}

/// What a target delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// The whole event (the default).
    Event,
    /// `Input`: this JSON text, whatever the event.
    Constant(String),
    /// `InputPath`: the part of the event the path names, as JSON.
    Path(JsonPath),
    /// `InputTransformer`: the template with each `<key>` replaced by the
    /// part of the event its path names.
    Transformer {
        /// `InputPathsMap`.
        paths: BTreeMap<String, JsonPath>,
        /// `InputTemplate`.
        template: String,
    },
}

/// What a template may name besides its own paths.
pub struct Reserved<'a> {
    /// `<aws.events.rule-name>`.
    pub rule_name: &'a str,
    /// `<aws.events.rule-arn>`.
    pub rule_arn: &'a str,
    /// `<aws.events.event.ingestion-time>`.
    pub ingestion_time: &'a str,
}

impl Input {
    /// Validates a target's input settings (at most one kind); `prefix`
    /// names the target in errors.
    pub fn new(
        prefix: &str,
        input: &str,
        input_path: &str,
        paths: &BTreeMap<String, String>,
        template: &str,
    ) -> Result<Input, DomainError> {
        let f = |name: &str| field_in(prefix, name);
        let given = [
            !input.is_empty(),
            !input_path.is_empty(),
            !template.is_empty() || !paths.is_empty(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(invalid(
                f("input"),
                "input, input_path and input_transformer exclude each other",
            ));
        }
        if !input.is_empty() {
            if input.chars().count() > INPUT_MAX {
                return Err(invalid(
                    f("input"),
                    format!("must be at most {INPUT_MAX} characters"),
                ));
            }
            serde_json::from_str::<Value>(input)
                .map_err(|e| invalid(f("input"), format!("must be valid JSON: {e}")))?;
            return Ok(Input::Constant(input.into()));
        }
        if !input_path.is_empty() {
            return Ok(Input::Path(JsonPath::parse(&f("input_path"), input_path)?));
        }
        if !given[2] {
            return Ok(Input::Event);
        }
        if template.is_empty() || template.chars().count() > INPUT_MAX {
            return Err(invalid(
                f("input_transformer.input_template"),
                format!("must be 1-{INPUT_MAX} characters"),
            ));
        }
        if paths.len() > PATHS_MAX {
            return Err(invalid(
                f("input_transformer.input_paths_map"),
                format!("has {} entries; at most {PATHS_MAX}", paths.len()),
            ));
        }
        let mut compiled = BTreeMap::new();
        for (key, path) in paths {
            let field = f(&format!("input_transformer.input_paths_map.{key}"));
            if !crate::names::is_valid(key, PATH_KEY_MAX, "_-") {
                return Err(invalid(
                    field,
                    format!(
                        "a key must be 1-{PATH_KEY_MAX} characters of A-Z, a-z, 0-9, '_' and '-'"
                    ),
                ));
            }
            compiled.insert(key.clone(), JsonPath::parse(&field, path)?);
        }
        Ok(Input::Transformer {
            paths: compiled,
            template: template.into(),
        })
    }

    /// The text delivered for `event` (its JSON text `event_text`); a
    /// template that would make more than [`RENDER_MAX`] bytes fails.
    pub fn render(
        &self,
        event: &Value,
        event_text: &str,
        reserved: &Reserved<'_>,
    ) -> Result<String, DomainError> {
        match self {
            Input::Event => Ok(event_text.to_string()),
            Input::Constant(text) => Ok(text.clone()),
            Input::Path(p) => Ok(p.find(event).unwrap_or(&Value::Null).to_string()),
            Input::Transformer { paths, template } => fill(template, RENDER_MAX, |key| match key {
                "aws.events.rule-name" => Some(Value::from(reserved.rule_name)),
                "aws.events.rule-arn" => Some(Value::from(reserved.rule_arn)),
                "aws.events.event.ingestion-time" => Some(Value::from(reserved.ingestion_time)),
                "aws.events.event.json" => Some(event.clone()),
                "aws.events.event" => {
                    let mut e = event.clone();
                    if let Some(o) = e.as_object_mut() {
                        o.remove("detail");
                    }
                    Some(e)
                }
                _ => Some(paths.get(key)?.find(event).cloned().unwrap_or(Value::Null)),
            }),
        }
    }
}

/// Replaces each `<key>` of `template` that `value` knows. Inside a JSON
/// string (after an unescaped `"`) a string goes in as its escaped
/// characters and anything else as its JSON text; outside, every value goes
/// in as JSON (a string with its quotes). Other `<...>` text stays. Fails
/// once the text passes `max` bytes.
fn fill(
    template: &str,
    max: usize,
    value: impl Fn(&str) -> Option<Value>,
) -> Result<String, DomainError> {
    let mut out = String::with_capacity(template.len());
    let mut in_string = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '<' {
            if let Some(end) = rest.find('>') {
                if let Some(v) = value(&rest[1..end]) {
                    match (&v, in_string) {
                        (Value::String(s), true) => {
                            let quoted = Value::from(s.as_str()).to_string();
                            out.push_str(&quoted[1..quoted.len() - 1]);
                        }
                        (Value::Null, true) => {}
                        (other, true) => {
                            let text = other.to_string();
                            let quoted = Value::from(text).to_string();
                            out.push_str(&quoted[1..quoted.len() - 1]);
                        }
                        (other, false) => out.push_str(&other.to_string()),
                    }
                    if out.len() > max {
                        return Err(DomainError::limit(
                            "LimitExceededException",
                            format!("the input template makes more than {max} bytes of this event"),
                        ));
                    }
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        if c == '\\' && in_string {
            // An escaped character, the quote included, is copied as is.
            let n = rest.chars().take(2).map(char::len_utf8).sum::<usize>();
            out.push_str(&rest[..n]);
            rest = &rest[n..];
            continue;
        }
        if c == '"' {
            in_string = !in_string;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        serde_json::json!({
            "id": "e1",
            "source": "app",
            "detail": {"instance": "i-1", "state": "running", "n": 3, "tags": ["a", "b"], "q": "say \"hi\""}
        })
    }

    fn reserved() -> Reserved<'static> {
        Reserved {
            rule_name: "r1",
            rule_arn: "arn:aws:events:us-east-1:000000000000:rule/r1",
            ingestion_time: "2026-12-07T00:00:00Z",
        }
    }

    fn transform(paths: &[(&str, &str)], template: &str) -> String {
        let paths = paths
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let input = Input::new("", "", "", &paths, template).unwrap();
        let e = event();
        input.render(&e, &e.to_string(), &reserved()).unwrap()
    }

    #[test]
    fn a_path_picks_keys_and_indexes() {
        let e = event();
        let find = |p: &str| JsonPath::parse("p", p).unwrap().find(&e).cloned();
        assert_eq!(find("$.detail.state"), Some(Value::from("running")));
        assert_eq!(find("$.detail.tags[1]"), Some(Value::from("b")));
        assert_eq!(find("$['detail']['n']"), Some(Value::from(3)));
        assert_eq!(find("$.detail.missing"), None);
        assert_eq!(find("$"), Some(e.clone()));
        for bad in ["detail", "$.", "$.a[x]", "$[0", "$.*", "$..a"] {
            let err = JsonPath::parse("input_path", bad).unwrap_err();
            assert!(err.message.contains("input_path"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_template_fills_strings_inside_quotes_and_json_outside() {
        assert_eq!(
            transform(
                &[
                    ("instance", "$.detail.instance"),
                    ("state", "$.detail.state")
                ],
                "\"instance <instance> is in state <state>\""
            ),
            "\"instance i-1 is in state running\""
        );
        assert_eq!(
            transform(
                &[
                    ("n", "$.detail.n"),
                    ("tags", "$.detail.tags"),
                    ("state", "$.detail.state")
                ],
                "{\"count\": <n>, \"tags\": <tags>, \"s\": <state>}"
            ),
            "{\"count\": 3, \"tags\": [\"a\",\"b\"], \"s\": \"running\"}"
        );
        // A quote inside a value stays escaped; a missing path is null
        // outside quotes and nothing inside.
        assert_eq!(
            transform(
                &[("q", "$.detail.q"), ("m", "$.detail.missing")],
                "{\"q\": \"<q>\", \"m\": <m>, \"e\": \"<m>\"}"
            ),
            "{\"q\": \"say \\\"hi\\\"\", \"m\": null, \"e\": \"\"}"
        );
        // Unknown placeholders and escaped quotes are left alone.
        assert_eq!(
            transform(&[], "\"a \\\"<b>\\\" <aws.events.rule-name>\""),
            "\"a \\\"<b>\\\" r1\""
        );
        let whole = transform(
            &[],
            "{\"e\": <aws.events.event>, \"j\": <aws.events.event.json>}",
        );
        let v: Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(v["e"].get("detail"), None);
        assert_eq!(v["j"], event());
    }

    #[test]
    fn a_template_that_grows_past_its_bound_fails() {
        let paths = BTreeMap::from([("all".to_string(), "$".to_string())]);
        let template = "<all>".repeat(INPUT_MAX / 5);
        let input = Input::new("", "", "", &paths, &template).unwrap();
        let big = serde_json::json!({"detail": {"x": "y".repeat(100_000)}});
        let e = input
            .render(&big, &big.to_string(), &reserved())
            .unwrap_err();
        assert_eq!(e.code, "LimitExceededException");
        // A long path is refused as EventBridge refuses it.
        let e = JsonPath::parse("input_path", &format!("$.{}", "a".repeat(PATH_MAX))).unwrap_err();
        assert!(e.message.contains("256"), "{e}");
    }

    #[test]
    fn input_settings_are_checked() {
        let none = BTreeMap::new();
        assert_eq!(Input::new("t", "", "", &none, "").unwrap(), Input::Event);
        let e = Input::new("targets[0]", "{bad", "", &none, "").unwrap_err();
        assert!(e.message.contains("targets[0].input"), "{e}");
        let e = Input::new("t", "{}", "$.a", &none, "").unwrap_err();
        assert!(e.message.contains("exclude"), "{e}");
        let paths = BTreeMap::from([("a b".to_string(), "$.a".to_string())]);
        let e = Input::new("t", "", "", &paths, "<a b>").unwrap_err();
        assert!(e.message.contains("input_paths_map"), "{e}");
        let paths = BTreeMap::from([("a".to_string(), "$.a".to_string())]);
        let e = Input::new("t", "", "", &paths, "").unwrap_err();
        assert!(e.message.contains("input_template"), "{e}");
    }
}
