//! Parsing and validating a filter policy.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    FilterPolicy, PolicyError, Scope, COMBINATIONS_MAX, KEYS_MAX, NUMBER_MAX, POLICY_BYTES_MAX,
};

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
/// 10^[`super::DECIMALS`], so that comparisons are exact.
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

/// 10^[`super::DECIMALS`].
const SCALE: f64 = 100_000.0;

/// Converts a policy number to fixed point, rounded to [`super::DECIMALS`] places
/// (AWS accepts more digits and compares to five), or says why it cannot
/// be.
pub(crate) fn fixed(x: f64) -> Result<i64, String> {
    fixed_lenient(x)
        .ok_or_else(|| format!("numbers must be from -1000000000 to 1000000000, got {x}"))
}

/// Reads a number to fixed point, or `None` when it is out of range.
pub(crate) fn fixed_lenient(x: f64) -> Option<i64> {
    if !x.is_finite() || x.abs() > NUMBER_MAX {
        return None;
    }
    Some((x * SCALE).round() as i64)
}

fn number(v: &Value, what: &str) -> Result<i64, PolicyError> {
    let x = v
        .as_f64()
        .ok_or_else(|| err(format!("{what}: a numeric value must be a number, got {v}")))?;
    fixed(x).map_err(|e| err(format!("{what}: {e}")))
}

pub(super) fn parse(text: &str, scope: Scope) -> Result<FilterPolicy, PolicyError> {
    if text.len() > POLICY_BYTES_MAX {
        return Err(err(format!(
            "the filter policy size is {} bytes; at most {POLICY_BYTES_MAX}",
            text.len()
        )));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| err(format!("a filter policy must be valid JSON: {e}")))?;
    let map = value
        .as_object()
        .ok_or_else(|| err("a filter policy must be a JSON object"))?;
    if map.is_empty() {
        return Err(err("a filter policy must have at least one key"));
    }
    let root = object(map, scope, 0, "")?;
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

fn object(
    map: &Map<String, Value>,
    scope: Scope,
    depth: usize,
    path: &str,
) -> Result<Object, PolicyError> {
    if depth > 32 {
        return Err(err("a filter policy may nest at most 32 levels"));
    }
    let mut fields = Vec::new();
    let mut any_of = Vec::new();
    for (key, v) in map {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key == "$or" && !is_condition_list(v) {
            let branches = v
                .as_array()
                .filter(|a| a.len() >= 2)
                .ok_or_else(|| err(format!("{here}: must be an array of at least two objects")))?;
            let mut group = Vec::new();
            for b in branches {
                let m = b.as_object().filter(|m| !m.is_empty()).ok_or_else(|| {
                    err(format!("{here}: each branch must be a non-empty object"))
                })?;
                group.push(object(m, scope, depth + 1, path)?);
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
                    conditions.push(condition(item, scope, &here)?);
                }
                fields.push((key.clone(), Rule::Conditions(conditions)));
            }
            Value::Object(inner) if scope == Scope::MessageBody => {
                if inner.is_empty() {
                    return Err(err(format!("{here}: a nested object must not be empty")));
                }
                fields.push((key.clone(), Rule::Nested(object(inner, scope, depth + 1, &here)?)));
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

const OPERATORS: [&str; 7] = [
    "prefix",
    "suffix",
    "equals-ignore-case",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
];

/// True when `v` is a list of operator objects: then `"$or"` is an ordinary
/// key, as in SNS.
fn is_condition_list(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(|x| {
            x.as_object()
                .is_some_and(|m| m.len() == 1 && m.keys().all(|k| OPERATORS.contains(&k.as_str())))
        })
    })
}

fn condition(item: &Value, scope: Scope, here: &str) -> Result<Condition, PolicyError> {
    match item {
        Value::String(s) => Ok(Condition::Exact(s.clone())),
        Value::Number(_) => Ok(Condition::Number(number(item, here)?)),
        Value::Null if scope == Scope::MessageBody => Ok(Condition::Null),
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
            operator(op, arg, here)
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

fn operator(op: &str, arg: &Value, here: &str) -> Result<Condition, PolicyError> {
    match op {
        "prefix" => Ok(Condition::Prefix(text_arg(op, arg, here)?)),
        "suffix" => Ok(Condition::Suffix(text_arg(op, arg, here)?)),
        "equals-ignore-case" => Ok(Condition::EqualsIgnoreCase(text_arg(op, arg, here)?)),
        "exists" => match arg {
            Value::Bool(b) => Ok(Condition::Exists(*b)),
            other => Err(err(format!(
                "{here}: \"exists\" takes true or false, got {other}"
            ))),
        },
        "cidr" => {
            let s = arg
                .as_str()
                .ok_or_else(|| err(format!("{here}: \"cidr\" takes a string like \"10.0.0.0/24\"")))?;
            Cidr::parse(s).map(Condition::Cidr).ok_or_else(|| {
                err(format!(
                    "{here}: \"cidr\" must be an IPv4 or IPv6 block like \"10.0.0.0/24\", got {s:?}"
                ))
            })
        }
        "numeric" => numeric(arg, here),
        "anything-but" => anything_but(arg, here),
        other => Err(err(format!(
            "{here}: unknown operator {other:?}; the operators are prefix, suffix, equals-ignore-case, anything-but, numeric, exists and cidr"
        ))),
    }
}

fn anything_but(arg: &Value, here: &str) -> Result<Condition, PolicyError> {
    let mut strings = Vec::new();
    let mut numbers = Vec::new();
    let mut add = |v: &Value| -> Result<(), PolicyError> {
        match v {
            Value::String(s) => strings.push(s.clone()),
            Value::Number(_) => numbers.push(number(v, here)?),
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
                other => Err(err(format!(
                    "{here}: \"anything-but\" accepts only prefix, suffix or equals-ignore-case inside, got {other:?}"
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

fn numeric(arg: &Value, here: &str) -> Result<Condition, PolicyError> {
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
        let n = number(&items[2 * p + 1], here)?;
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
