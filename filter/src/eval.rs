//! Evaluating a compiled policy against a message.

use std::cell::OnceCell;

use serde_json::Value;

use super::policy::{Condition, Dialect, Object, Rule};
use super::{Attributes, FilterPolicy, Scope};

/// A message as filters see it: its attributes and its body (parsed as JSON
/// once, the first time a body-scoped policy looks at it).
pub struct Message<'a> {
    attributes: Attributes<'a>,
    body: &'a str,
    parsed: OnceCell<Option<Value>>,
}

impl<'a> Message<'a> {
    /// A message with these attributes and body.
    pub fn new(attributes: Attributes<'a>, body: &'a str) -> Self {
        Message {
            attributes,
            body,
            parsed: OnceCell::new(),
        }
    }

    fn json(&self) -> Option<&Value> {
        self.parsed
            .get_or_init(|| serde_json::from_str::<Value>(self.body).ok())
            .as_ref()
    }
}

/// A leaf value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf<'v> {
    Str(&'v str),
    Num(i64),
    Null,
    Bool(bool),
    /// A number out of range: present, but matched only by `exists` and
    /// `anything-but`.
    Other,
}

fn leaf(v: &Value, d: Dialect) -> Leaf<'_> {
    match v {
        Value::String(s) => Leaf::Str(s),
        Value::Number(n) => n
            .as_f64()
            .and_then(|x| d.numbers().fixed(x))
            .map_or(Leaf::Other, Leaf::Num),
        Value::Null => Leaf::Null,
        Value::Bool(b) => Leaf::Bool(*b),
        _ => Leaf::Other,
    }
}

pub(super) fn matches(policy: &FilterPolicy, message: &Message<'_>) -> bool {
    match policy.scope {
        // As in SNS, a message without attributes matches no
        // attribute-scoped policy, not even `"exists": false`.
        Scope::MessageAttributes if message.attributes.is_empty() => false,
        Scope::MessageAttributes => object_attributes(&policy.root, message),
        // A body that is not a JSON object matches no policy.
        Scope::MessageBody => match message.json() {
            Some(v @ Value::Object(_)) => {
                object_body(&policy.root, Some(v), Dialect::Sns(Scope::MessageBody))
            }
            _ => false,
        },
    }
}

fn object_attributes(o: &Object, m: &Message<'_>) -> bool {
    o.fields.iter().all(|(key, rule)| match rule {
        Rule::Conditions(conds) => with_attribute_leaves(m, key, |leaves| {
            any_condition(conds, leaves, Dialect::Sns(Scope::MessageAttributes))
        }),
        // Rejected by the parser for this scope.
        Rule::Nested(_) => false,
    }) && o
        .any_of
        .iter()
        .all(|group| group.iter().any(|b| object_attributes(b, m)))
}

/// Calls `f` with the values of attribute `key`, `None` when the message has
/// no such attribute (binary attributes take no part in filtering).
fn with_attribute_leaves(
    m: &Message<'_>,
    key: &str,
    f: impl FnOnce(Option<&[Leaf<'_>]>) -> bool,
) -> bool {
    let Some(a) = m.attributes.get(key) else {
        return f(None);
    };
    let Some(value) = a.value else {
        return f(None);
    };
    let base = a.data_type.split('.').next().unwrap_or("");
    if a.data_type == "String.Array" {
        // A JSON array; a bare JSON value counts as a one-element array.
        if let Ok(parsed) = serde_json::from_str::<Value>(value) {
            let mut leaves = Vec::new();
            flatten(&parsed, &mut leaves, Dialect::Sns(Scope::MessageAttributes));
            return f(Some(&leaves));
        }
        return f(Some(&[Leaf::Str(value)]));
    }
    match base {
        "String" => f(Some(&[Leaf::Str(value)])),
        "Number" => f(Some(&[value
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|x| Dialect::Sns(Scope::MessageAttributes).numbers().fixed(x))
            .map_or(Leaf::Other, Leaf::Num)])),
        _ => f(None),
    }
}

/// Evaluates `o` at one JSON object of a body or event (`None`: the object
/// is absent). Keys under an array are evaluated element by element, so
/// every key of an object in an array must be satisfied by the same element.
pub(super) fn object_body(o: &Object, node: Option<&Value>, d: Dialect) -> bool {
    o.fields.iter().all(|(key, rule)| {
        let children = node.map(|n| lookup(n, key)).unwrap_or_default();
        match rule {
            Rule::Conditions(conds) => {
                let mut leaves = Vec::new();
                for c in &children {
                    flatten(c, &mut leaves, d);
                }
                let present = !children.is_empty();
                any_condition(conds, present.then_some(&leaves[..]), d)
            }
            Rule::Nested(inner) => {
                let mut objects = Vec::new();
                for c in children {
                    objects_of(c, &mut objects);
                }
                if objects.is_empty() {
                    object_body(inner, None, d)
                } else {
                    objects.into_iter().any(|c| object_body(inner, Some(c), d))
                }
            }
        }
    }) && o
        .any_of
        .iter()
        .all(|group| group.iter().any(|b| object_body(b, node, d)))
}

/// The values at `key` of an object; a key with dots that the object does
/// not have is read as a path (`"a.b"` finds `{"a": {"b": ..}}`).
fn lookup<'v>(node: &'v Value, key: &str) -> Vec<&'v Value> {
    if let Some(v) = node.get(key) {
        return vec![v];
    }
    let Some((first, rest)) = key.split_once('.') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(child) = node.get(first) {
        let mut objects = Vec::new();
        objects_of(child, &mut objects);
        for o in objects {
            out.extend(lookup(o, rest));
        }
    }
    out
}

fn flatten<'v>(v: &'v Value, out: &mut Vec<Leaf<'v>>, d: Dialect) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out, d)),
        // An object is not a leaf: present, but no condition reads it.
        Value::Object(_) => {}
        other => out.push(leaf(other, d)),
    }
}

fn objects_of<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::Object(_) => out.push(v),
        Value::Array(items) => items.iter().for_each(|i| objects_of(i, out)),
        _ => {}
    }
}

/// True when any condition holds for the key's leaves; `None`: the key is
/// missing.
fn any_condition(conds: &[Condition], leaves: Option<&[Leaf<'_>]>, d: Dialect) -> bool {
    conds.iter().any(|c| condition(c, leaves, d))
}

fn condition(c: &Condition, leaves: Option<&[Leaf<'_>]>, d: Dialect) -> bool {
    let Some(leaves) = leaves else {
        return matches!(c, Condition::Exists(false));
    };
    let any = |f: &dyn Fn(&Leaf<'_>) -> bool| leaves.iter().any(f);
    let any_str = |f: &dyn Fn(&str) -> bool| {
        leaves.iter().any(|l| match l {
            Leaf::Str(s) => f(s),
            _ => false,
        })
    };
    match c {
        // In SNS only a non-null, non-empty leaf exists; in an event
        // pattern any leaf does (an object alone is not a leaf).
        Condition::Exists(want) => {
            let exists = leaves
                .iter()
                .any(|l| d == Dialect::Event || !matches!(l, Leaf::Null | Leaf::Str("")));
            exists == *want
        }
        Condition::Exact(s) => any_str(&|v| v == s),
        Condition::Number(n) => any(&|l| *l == Leaf::Num(*n)),
        Condition::Null => any(&|l| *l == Leaf::Null),
        Condition::Bool(b) => any(&|l| *l == Leaf::Bool(*b)),
        Condition::Prefix(p) => any_str(&|v| v.starts_with(p.as_str())),
        Condition::Suffix(p) => any_str(&|v| v.ends_with(p.as_str())),
        Condition::EqualsIgnoreCase(p) => any_str(&|v| eq_ignore_case(v, p)),
        Condition::AnythingBut { strings, numbers } => any(&|l| match l {
            Leaf::Str(s) => !strings.iter().any(|x| x == s),
            Leaf::Num(n) => !numbers.contains(n),
            Leaf::Null | Leaf::Bool(_) | Leaf::Other => true,
        }),
        Condition::AnythingButPrefix(p) => any_str(&|v| !v.starts_with(p.as_str())),
        Condition::AnythingButSuffix(p) => any_str(&|v| !v.ends_with(p.as_str())),
        Condition::AnythingButIgnoreCase(list) => {
            any_str(&|v| !list.iter().any(|x| eq_ignore_case(v, x)))
        }
        Condition::Numeric { lower, upper } => any(&|l| match l {
            Leaf::Num(n) => {
                lower.is_none_or(|(b, incl)| if incl { *n >= b } else { *n > b })
                    && upper.is_none_or(|(b, incl)| if incl { *n <= b } else { *n < b })
            }
            _ => false,
        }),
        Condition::Cidr(net) => any_str(&|v| net.contains(v)),
        Condition::Wildcard(w) => any_str(&|v| w.matches(v)),
        Condition::AnythingButWildcard(list) => any_str(&|v| !list.iter().any(|w| w.matches(v))),
        Condition::PrefixIgnoreCase(p) => any_str(&|v| v.to_lowercase().starts_with(p.as_str())),
        Condition::SuffixIgnoreCase(p) => any_str(&|v| v.to_lowercase().ends_with(p.as_str())),
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}
