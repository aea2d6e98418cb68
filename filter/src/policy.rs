//! Parsing and validating a filter policy.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    FilterPolicy, PolicyError, Scope, COMBINATIONS_MAX, DECIMALS, EVENT_DECIMALS, EVENT_NUMBER_MAX,
    EVENT_PATTERN_CHARS_MAX, KEYS_MAX, NUMBER_MAX, POLICY_BYTES_MAX,
};

/// Which language a text is read in: an SNS filter policy for one scope, or
/// an EventBridge event pattern. They share their grammar; EventBridge adds
/// `wildcard`, case-insensitive `prefix` and `suffix`, and wider numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// An SNS filter policy.
    Sns(Scope),
    /// An EventBridge event pattern.
    Event,
}

impl Dialect {
    /// Nested objects and `null` are allowed (everything but attributes).
    fn nests(self) -> bool {
        self != Dialect::Sns(Scope::MessageAttributes)
    }

    fn noun(self) -> &'static str {
        match self {
            Dialect::Sns(_) => "a filter policy",
            Dialect::Event => "an event pattern",
        }
    }

    /// How numbers are compared.
    pub(crate) fn numbers(self) -> Numbers {
        match self {
            Dialect::Sns(_) => Numbers {
                max: NUMBER_MAX,
                scale: 10f64.powi(DECIMALS as i32),
            },
            Dialect::Event => Numbers {
                max: EVENT_NUMBER_MAX,
                scale: 10f64.powi(EVENT_DECIMALS as i32),
            },
        }
    }

    fn operators(self) -> &'static [&'static str] {
        match self {
            Dialect::Sns(_) => &OPERATORS[..7],
            Dialect::Event => &OPERATORS,
        }
    }
}

/// The range and precision of numbers: compared as fixed point, the value
/// times `scale`, so that comparisons are exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Numbers {
    /// Largest magnitude.
    pub(crate) max: f64,
    /// 10 to the number of decimal places compared.
    pub(crate) scale: f64,
}

impl Numbers {
    /// Reads a number to fixed point, or `None` when it is out of range.
    pub(crate) fn fixed(self, x: f64) -> Option<i64> {
        if !x.is_finite() || x.abs() > self.max {
            return None;
        }
        Some((x * self.scale).round() as i64)
    }
}

/// One level of a policy: every field must match, and from each `$or` group
/// at least one branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Keys in name order with what their values must be.
    pub fields: Vec<(String, Rule)>,
    /// `$or` groups: each is a list of alternative objects at this level.
    pub any_of: Vec<Vec<Object>>,
}

/// What a key requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// A leaf key: any of the conditions.
    Conditions(Vec<Condition>),
    /// A nested property of the body (scope `MessageBody`).
    Nested(Object),
}

/// One condition on a leaf value. Numbers are fixed point: the value times
/// 10^[`super::DECIMALS`] (10^[`super::EVENT_DECIMALS`] in an event
/// pattern), so that comparisons are exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Equal to this string.
    Exact(String),
    /// Numerically equal.
    Number(i64),
    /// The JSON `null` (body scope).
    Null,
    /// A JSON boolean.
    Bool(bool),
    /// `{"prefix": s}`.
    Prefix(String),
    /// `{"suffix": s}`.
    Suffix(String),
    /// `{"equals-ignore-case": s}`.
    EqualsIgnoreCase(String),
    /// `{"anything-but": [..]}`: present and none of these strings or numbers.
    AnythingBut {
        /// Strings excluded.
        strings: Vec<String>,
        /// Numbers excluded.
        numbers: Vec<i64>,
    },
    /// `{"anything-but": {"prefix": s}}`.
    AnythingButPrefix(String),
    /// `{"anything-but": {"suffix": s}}`.
    AnythingButSuffix(String),
    /// `{"anything-but": {"equals-ignore-case": [..]}}`.
    AnythingButIgnoreCase(Vec<String>),
    /// `{"numeric": [..]}`: within the bounds, each `(value, inclusive)`.
    Numeric {
        /// Lower bound.
        lower: Option<(i64, bool)>,
        /// Upper bound.
        upper: Option<(i64, bool)>,
    },
    /// `{"exists": b}`.
    Exists(bool),
    /// `{"cidr": "a.b.c.d/n"}`: an IP address inside the block.
    Cidr(Cidr),
    /// `{"wildcard": "a*b"}` (event patterns).
    Wildcard(Wildcard),
    /// `{"anything-but": {"wildcard": ..}}`: a string matching none of these
    /// (event patterns).
    AnythingButWildcard(Vec<Wildcard>),
    /// `{"prefix": {"equals-ignore-case": s}}`, `s` in lower case (event
    /// patterns).
    PrefixIgnoreCase(String),
    /// `{"suffix": {"equals-ignore-case": s}}`, `s` in lower case (event
    /// patterns).
    SuffixIgnoreCase(String),
}

/// A wildcard value: literal pieces with `*` between them, each `*`
/// standing for any run of characters, none included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wildcard {
    /// The literal text between the stars; one piece means no star.
    pub pieces: Vec<String>,
}

impl Wildcard {
    /// Reads EventBridge's wildcard syntax: `*` any run of characters, `\*`
    /// a star, `\\` a backslash; two stars in a row and a backslash before
    /// anything else are refused.
    fn parse(text: &str) -> Result<Wildcard, String> {
        let mut pieces = vec![String::new()];
        let mut chars = text.chars();
        let mut after_star = false;
        while let Some(c) = chars.next() {
            match c {
                '*' if after_star => {
                    return Err("consecutive wildcard characters are not allowed".into())
                }
                '*' => {
                    pieces.push(String::new());
                    after_star = true;
                    continue;
                }
                '\\' => match chars.next() {
                    Some(e @ ('*' | '\\')) => pieces.last_mut().expect("one piece").push(e),
                    _ => return Err("a backslash may escape only a star or a backslash".into()),
                },
                other => pieces.last_mut().expect("one piece").push(other),
            }
            after_star = false;
        }
        Ok(Wildcard { pieces })
    }

    /// True when `value` matches: the first piece starts it, the last ends
    /// it, and the others follow in order between them. Taking each middle
    /// piece at its first place is enough (a later place never leaves more
    /// room), so this is linear in the value.
    pub fn matches(&self, value: &str) -> bool {
        let (first, rest) = self.pieces.split_first().expect("one piece");
        let Some((last, middle)) = rest.split_last() else {
            return value == first;
        };
        if value.len() < first.len() + last.len()
            || !value.starts_with(first.as_str())
            || !value.ends_with(last.as_str())
        {
            return false;
        }
        let mut between = &value[first.len()..value.len() - last.len()];
        for piece in middle {
            match between.find(piece.as_str()) {
                Some(at) => between = &between[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// An IP address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// The network address as a number.
    pub network: u128,
    /// Prefix length in bits.
    pub bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let ip: std::net::IpAddr = addr.parse().ok()?;
        let (v6, n, width) = match ip {
            std::net::IpAddr::V4(v4) => (false, u128::from(u32::from(v4)), 32u8),
            std::net::IpAddr::V6(v6) => (true, u128::from(v6), 128u8),
        };
        let bits = match bits {
            None => width,
            Some(b) if !b.is_empty() && b.chars().all(|c| c.is_ascii_digit()) => {
                b.parse::<u8>().ok().filter(|b| *b <= width)?
            }
            Some(_) => return None,
        };
        Some(Cidr {
            v6,
            network: n & Self::mask(width, bits),
            bits,
        })
    }

    fn mask(width: u8, bits: u8) -> u128 {
        let all: u128 = if width == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        if bits == 0 {
            0
        } else {
            all & !((1u128 << (width - bits)).wrapping_sub(1)) & all
        }
    }

    /// True when `ip` lies in the block.
    pub fn contains(&self, ip: &str) -> bool {
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) if !self.v6 => {
                u128::from(u32::from(v4)) & Self::mask(32, self.bits) == self.network
            }
            Ok(std::net::IpAddr::V6(v6)) if self.v6 => {
                u128::from(v6) & Self::mask(128, self.bits) == self.network
            }
            _ => false,
        }
    }
}

fn err(msg: impl Into<String>) -> PolicyError {
    PolicyError(msg.into())
}

fn number(v: &Value, what: &str, d: Dialect) -> Result<i64, PolicyError> {
    let x = v
        .as_f64()
        .ok_or_else(|| err(format!("{what}: a numeric value must be a number, got {v}")))?;
    let n = d.numbers();
    n.fixed(x).ok_or_else(|| {
        err(format!(
            "{what}: numbers must be from -{max} to {max}, got {x}",
            max = n.max
        ))
    })
}

pub(super) fn parse(text: &str, scope: Scope) -> Result<FilterPolicy, PolicyError> {
    if text.len() > POLICY_BYTES_MAX {
        return Err(err(format!(
            "the filter policy size is {} bytes; at most {POLICY_BYTES_MAX}",
            text.len()
        )));
    }
    let root = root(text, Dialect::Sns(scope))?;
    let mut keys = BTreeSet::new();
    leaf_keys(&root, "", &mut keys);
    if keys.len() > KEYS_MAX {
        return Err(err(format!(
            "a filter policy may have at most {KEYS_MAX} keys, got {} ({})",
            keys.len(),
            keys.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let combinations = combinations(&root, 1);
    if combinations > COMBINATIONS_MAX as u128 {
        return Err(err(format!(
            "the filter policy is too complex: {combinations} combinations of values, at most {COMBINATIONS_MAX} (values per key, times the key's nesting level, multiplied across keys and added across $or branches)"
        )));
    }
    Ok(FilterPolicy { scope, root })
}

/// Validates and compiles an EventBridge event pattern.
pub(super) fn parse_event(text: &str) -> Result<Object, PolicyError> {
    let chars = text.chars().count();
    if chars > EVENT_PATTERN_CHARS_MAX {
        return Err(err(format!(
            "the event pattern is {chars} characters; at most {EVENT_PATTERN_CHARS_MAX}"
        )));
    }
    root(text, Dialect::Event)
}

fn root(text: &str, d: Dialect) -> Result<Object, PolicyError> {
    let noun = d.noun();
    let value: Value =
        serde_json::from_str(text).map_err(|e| err(format!("{noun} must be valid JSON: {e}")))?;
    let map = value
        .as_object()
        .ok_or_else(|| err(format!("{noun} must be a JSON object")))?;
    if map.is_empty() {
        return Err(err(format!("{noun} must have at least one key")));
    }
    object(map, d, 0, "")
}

fn object(
    map: &Map<String, Value>,
    d: Dialect,
    depth: usize,
    path: &str,
) -> Result<Object, PolicyError> {
    if depth > 32 {
        return Err(err(format!("{} may nest at most 32 levels", d.noun())));
    }
    let mut fields = Vec::new();
    let mut any_of = Vec::new();
    for (key, v) in map {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        // `"$or"` over an object is a field of that name in an event
        // pattern, as EventBridge keeps it for older patterns.
        let or_field = d == Dialect::Event && v.is_object();
        if key == "$or" && !or_field && !is_condition_list(v, d) {
            let branches = v
                .as_array()
                .filter(|a| a.len() >= 2)
                .ok_or_else(|| err(format!("{here}: must be an array of at least two objects")))?;
            let mut group = Vec::new();
            for b in branches {
                let m = b.as_object().filter(|m| !m.is_empty()).ok_or_else(|| {
                    err(format!("{here}: each branch must be a non-empty object"))
                })?;
                group.push(object(m, d, depth + 1, path)?);
            }
            any_of.push(group);
            continue;
        }
        match v {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(err(format!("{here}: the list of values must not be empty")));
                }
                let mut conditions = Vec::with_capacity(items.len());
                for item in items {
                    conditions.push(condition(item, d, &here)?);
                }
                fields.push((key.clone(), Rule::Conditions(conditions)));
            }
            Value::Object(inner) if d.nests() => {
                if inner.is_empty() {
                    return Err(err(format!("{here}: a nested object must not be empty")));
                }
                fields.push((key.clone(), Rule::Nested(object(inner, d, depth + 1, &here)?)));
            }
            Value::Object(_) => {
                return Err(err(format!(
                    "{here}: nested keys need FilterPolicyScope MessageBody; message attributes take a list of values"
                )))
            }
            other => {
                return Err(err(format!(
                    "{here}: the value must be an array of conditions, e.g. [\"a\"], got {other}"
                )))
            }
        }
    }
    Ok(Object { fields, any_of })
}

/// The operators, SNS's first; event patterns add the rest.
const OPERATORS: [&str; 8] = [
    "prefix",
    "suffix",
    "equals-ignore-case",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
    "wildcard",
];

/// True when `v` is a list of operator objects: then `"$or"` is an ordinary
/// key, as in SNS.
fn is_condition_list(v: &Value, d: Dialect) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(|x| {
            x.as_object().is_some_and(|m| {
                m.len() == 1 && m.keys().all(|k| d.operators().contains(&k.as_str()))
            })
        })
    })
}

fn condition(item: &Value, d: Dialect, here: &str) -> Result<Condition, PolicyError> {
    match item {
        Value::String(s) => Ok(Condition::Exact(s.clone())),
        Value::Number(_) => Ok(Condition::Number(number(item, here, d)?)),
        Value::Null if d.nests() => Ok(Condition::Null),
        Value::Null => Err(err(format!(
            "{here}: null matches only with FilterPolicyScope MessageBody"
        ))),
        Value::Bool(b) => Ok(Condition::Bool(*b)),
        Value::Array(_) => Err(err(format!(
            "{here}: a match value may not be an array (lists do not nest)"
        ))),
        Value::Object(m) => {
            if m.len() != 1 {
                return Err(err(format!(
                    "{here}: a condition object must have exactly one key, its operator; got {}",
                    m.len()
                )));
            }
            let (op, arg) = m.iter().next().expect("one entry");
            operator(op, arg, here, d)
        }
    }
}

fn text_arg(op: &str, arg: &Value, here: &str) -> Result<String, PolicyError> {
    match arg {
        Value::String(s) if !s.is_empty() || op == "equals-ignore-case" => Ok(s.clone()),
        Value::String(_) => Err(err(format!("{here}: \"{op}\" needs a non-empty string"))),
        other => Err(err(format!("{here}: \"{op}\" takes a string, got {other}"))),
    }
}

fn operator(op: &str, arg: &Value, here: &str, d: Dialect) -> Result<Condition, PolicyError> {
    match op {
        "prefix" | "suffix" if d == Dialect::Event && arg.is_object() => {
            let text = ignore_case_arg(op, arg, here)?;
            Ok(if op == "prefix" {
                Condition::PrefixIgnoreCase(text)
            } else {
                Condition::SuffixIgnoreCase(text)
            })
        }
        // An empty prefix or suffix matches any string: EventBridge takes
        // it (`"source": [{"prefix": ""}]` is its "every event"); SNS does
        // not.
        "prefix" | "suffix" if d == Dialect::Event && arg.as_str() == Some("") => {
            Ok(if op == "prefix" {
                Condition::Prefix(String::new())
            } else {
                Condition::Suffix(String::new())
            })
        }
        "prefix" => Ok(Condition::Prefix(text_arg(op, arg, here)?)),
        "suffix" => Ok(Condition::Suffix(text_arg(op, arg, here)?)),
        "equals-ignore-case" => Ok(Condition::EqualsIgnoreCase(text_arg(op, arg, here)?)),
        "wildcard" if d == Dialect::Event => Ok(Condition::Wildcard(wildcard_arg(arg, here)?)),
        "exists" => match arg {
            Value::Bool(b) => Ok(Condition::Exists(*b)),
            other => Err(err(format!(
                "{here}: \"exists\" takes true or false, got {other}"
            ))),
        },
        "cidr" => {
            let s = arg.as_str().ok_or_else(|| {
                err(format!(
                    "{here}: \"cidr\" takes a string like \"10.0.0.0/24\""
                ))
            })?;
            Cidr::parse(s).map(Condition::Cidr).ok_or_else(|| {
                err(format!(
                    "{here}: \"cidr\" must be an IPv4 or IPv6 block like \"10.0.0.0/24\", got {s:?}"
                ))
            })
        }
        "numeric" => numeric(arg, here, d),
        "anything-but" => anything_but(arg, here, d),
        other => Err(err(format!(
            "{here}: unknown operator {other:?}; the operators are {}",
            d.operators().join(", ")
        ))),
    }
}

/// `{"equals-ignore-case": s}` inside `prefix` or `suffix`, lower-cased.
fn ignore_case_arg(op: &str, arg: &Value, here: &str) -> Result<String, PolicyError> {
    match arg
        .as_object()
        .map(|m| (m.len(), m.get("equals-ignore-case")))
    {
        Some((1, Some(v))) => Ok(text_arg(op, v, here)?.to_lowercase()),
        _ => Err(err(format!(
            "{here}: \"{op}\" takes a string or {{\"equals-ignore-case\": string}}"
        ))),
    }
}

fn wildcard_arg(arg: &Value, here: &str) -> Result<Wildcard, PolicyError> {
    let text = arg
        .as_str()
        .ok_or_else(|| err(format!("{here}: \"wildcard\" takes a string, got {arg}")))?;
    Wildcard::parse(text).map_err(|why| err(format!("{here}: \"wildcard\" {text:?}: {why}")))
}

fn anything_but(arg: &Value, here: &str, d: Dialect) -> Result<Condition, PolicyError> {
    let mut strings = Vec::new();
    let mut numbers = Vec::new();
    let mut add = |v: &Value| -> Result<(), PolicyError> {
        match v {
            Value::String(s) => strings.push(s.clone()),
            Value::Number(_) => numbers.push(number(v, here, d)?),
            other => {
                return Err(err(format!(
                    "{here}: \"anything-but\" takes strings or numbers, got {other}"
                )))
            }
        }
        Ok(())
    };
    match arg {
        Value::Array(items) if !items.is_empty() => {
            for i in items {
                add(i)?;
            }
        }
        Value::Array(_) => {
            return Err(err(format!(
                "{here}: \"anything-but\" needs at least one value"
            )))
        }
        Value::Object(m) if m.len() == 1 => {
            let (op, v) = m.iter().next().expect("one entry");
            return match op.as_str() {
                "prefix" => Ok(Condition::AnythingButPrefix(text_arg(op, v, here)?)),
                "suffix" => Ok(Condition::AnythingButSuffix(text_arg(op, v, here)?)),
                "equals-ignore-case" => {
                    let list = match v {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) if !a.is_empty() => a
                            .iter()
                            .map(|x| {
                                x.as_str().map(str::to_string).ok_or_else(|| {
                                    err(format!(
                                        "{here}: \"equals-ignore-case\" inside \"anything-but\" takes strings"
                                    ))
                                })
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return Err(err(format!(
                                "{here}: \"equals-ignore-case\" inside \"anything-but\" takes a string or a list of strings"
                            )))
                        }
                    };
                    Ok(Condition::AnythingButIgnoreCase(list))
                }
                "wildcard" if d == Dialect::Event => {
                    let list = match v {
                        Value::Array(a) if !a.is_empty() => a
                            .iter()
                            .map(|x| wildcard_arg(x, here))
                            .collect::<Result<_, _>>()?,
                        Value::Array(_) => {
                            return Err(err(format!(
                            "{here}: \"wildcard\" inside \"anything-but\" needs at least one value"
                        )))
                        }
                        one => vec![wildcard_arg(one, here)?],
                    };
                    Ok(Condition::AnythingButWildcard(list))
                }
                other => Err(err(format!(
                    "{here}: \"anything-but\" accepts only {} inside, got {other:?}",
                    if d == Dialect::Event {
                        "prefix, suffix, equals-ignore-case or wildcard"
                    } else {
                        "prefix, suffix or equals-ignore-case"
                    }
                ))),
            };
        }
        Value::Object(_) => {
            return Err(err(format!(
                "{here}: \"anything-but\" takes one operator object"
            )))
        }
        other => add(other)?,
    }
    if !strings.is_empty() && !numbers.is_empty() {
        return Err(err(format!(
            "{here}: \"anything-but\" takes a list of strings or a list of numbers, not mixed types"
        )));
    }
    Ok(Condition::AnythingBut { strings, numbers })
}

fn numeric(arg: &Value, here: &str, d: Dialect) -> Result<Condition, PolicyError> {
    let items = arg.as_array().ok_or_else(|| {
        err(format!(
            "{here}: \"numeric\" takes a list like [\">\", 0, \"<=\", 5]"
        ))
    })?;
    let pairs = items.len() / 2;
    if items.is_empty() || items.len() % 2 != 0 || pairs > 2 {
        return Err(err(format!(
            "{here}: \"numeric\" takes one or two (operator, number) pairs, got {} items",
            items.len()
        )));
    }
    let mut lower: Option<(i64, bool)> = None;
    let mut upper: Option<(i64, bool)> = None;
    let mut equal = false;
    for p in 0..pairs {
        let op = items[2 * p].as_str().ok_or_else(|| {
            err(format!(
                "{here}: \"numeric\" operators are strings: =, <, <=, >, >="
            ))
        })?;
        let n = number(&items[2 * p + 1], here, d)?;
        match op {
            "=" if pairs == 1 => {
                equal = true;
                lower = Some((n, true));
                upper = Some((n, true));
            }
            ">" | ">=" if lower.is_none() && p == 0 => lower = Some((n, op == ">=")),
            "<" | "<=" if upper.is_none() => upper = Some((n, op == "<=")),
            "=" => {
                return Err(err(format!(
                    "{here}: \"numeric\" \"=\" cannot be combined with another comparison"
                )))
            }
            ">" | ">=" | "<" | "<=" => {
                return Err(err(format!(
                    "{here}: a \"numeric\" range needs one lower bound (> or >=) and one upper bound (< or <=)"
                )))
            }
            other => {
                return Err(err(format!(
                    "{here}: unknown \"numeric\" operator {other:?}; use =, <, <=, >, >="
                )))
            }
        }
    }
    if let (false, Some((lo, _)), Some((hi, _))) = (equal, lower, upper) {
        if lo >= hi {
            return Err(err(format!(
                "{here}: the bottom of a \"numeric\" range must be below its top"
            )));
        }
    }
    if pairs == 2 && (lower.is_none() || upper.is_none()) {
        return Err(err(format!(
            "{here}: a \"numeric\" range needs one lower bound (> or >=) and one upper bound (< or <=)"
        )));
    }
    Ok(Condition::Numeric { lower, upper })
}

fn leaf_keys(o: &Object, path: &str, out: &mut BTreeSet<String>) {
    for (k, rule) in &o.fields {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match rule {
            Rule::Conditions(_) => {
                out.insert(here);
            }
            Rule::Nested(inner) => leaf_keys(inner, &here, out),
        }
    }
    for group in &o.any_of {
        for branch in group {
            leaf_keys(branch, path, out);
        }
    }
}

/// The number of value combinations as SNS counts them: each key's values
/// times the key's nesting level (1 at the top), multiplied across keys,
/// `$or` contributing the sum over its branches.
fn combinations(o: &Object, depth: u128) -> u128 {
    let mut total: u128 = 1;
    for (_, rule) in &o.fields {
        let n = match rule {
            Rule::Conditions(c) => (c.len() as u128).saturating_mul(depth),
            Rule::Nested(inner) => combinations(inner, depth + 1),
        };
        total = total.saturating_mul(n);
    }
    for group in &o.any_of {
        let sum = group
            .iter()
            .map(|b| combinations(b, depth))
            .fold(0u128, u128::saturating_add);
        total = total.saturating_mul(sum);
    }
    total
}
