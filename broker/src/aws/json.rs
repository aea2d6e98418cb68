//! Reading the members of an AWS JSON request body, each checked for its
//! type: a member of the wrong type is refused naming the member, never
//! taken as absent.

use std::collections::HashMap;

use serde_json::{Map, Value};

use base64::Engine;

use super::error::AwsError;

/// The members of a request (a JSON object).
#[derive(Clone, Copy)]
pub struct Input<'a> {
    members: &'a Map<String, Value>,
    /// Converted from a query-protocol form, where every value is a
    /// string: numbers and booleans are read from their text.
    form: bool,
}

impl<'a> Input<'a> {
    /// The body's members; an empty body is an empty object.
    pub fn of(body: &'a Value) -> Result<Input<'a>, AwsError> {
        body.as_object()
            .map(|members| Input {
                members,
                form: false,
            })
            .ok_or_else(|| AwsError::serialization("the request body must be a JSON object"))
    }

    /// The members of a query-protocol form, converted by
    /// [`super::query::Layout::input`].
    pub fn of_form(body: &'a Value) -> Result<Input<'a>, AwsError> {
        Ok(Input {
            form: true,
            ..Input::of(body)?
        })
    }

    /// The members of `object`, a member of this input.
    pub fn nested(&self, object: &'a Map<String, Value>) -> Input<'a> {
        Input {
            members: object,
            form: self.form,
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.members.get(name).filter(|v| !v.is_null())
    }

    /// Whether the member is given (and not null).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A string member, if given.
    pub fn string(&self, name: &str) -> Result<Option<String>, AwsError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AwsError::serialization(format!("{name}: must be a string"))),
        }
    }

    /// A string member the operation needs.
    pub fn required(&self, name: &str) -> Result<String, AwsError> {
        self.string(name)?.ok_or_else(|| AwsError::missing(name))
    }

    /// An integer member, if given.
    pub fn int(&self, name: &str) -> Result<Option<i32>, AwsError> {
        self.long(name)?
            .map(i32::try_from)
            .transpose()
            .map_err(|_| AwsError::serialization(format!("{name}: must be a 32-bit integer")))
    }

    /// A 64-bit integer member, if given.
    pub fn long(&self, name: &str) -> Result<Option<i64>, AwsError> {
        let number = match self.get(name) {
            None => return Ok(None),
            Some(Value::String(s)) if self.form => s.trim().parse::<i64>().ok(),
            Some(v) => v.as_i64(),
        };
        number
            .map(Some)
            .ok_or_else(|| AwsError::serialization(format!("{name}: must be an integer")))
    }

    /// A timestamp member (seconds since the epoch, with a fraction, as
    /// the JSON protocols write them), in milliseconds.
    pub fn epoch_ms(&self, name: &str) -> Result<Option<i64>, AwsError> {
        let seconds = match self.get(name) {
            None => return Ok(None),
            Some(Value::String(s)) if self.form => s.trim().parse::<f64>().ok(),
            Some(v) => v.as_f64(),
        };
        match seconds {
            Some(s) if s.is_finite() && (0.0..=1e11).contains(&s) => {
                Ok(Some((s * 1000.0).round() as i64))
            }
            _ => Err(AwsError::serialization(format!(
                "{name}: must be seconds since the epoch"
            ))),
        }
    }

    /// A boolean member, if given.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if self.form && s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if self.form && s.eq_ignore_ascii_case("false") => {
                Ok(Some(false))
            }
            Some(_) => Err(AwsError::serialization(format!(
                "{name}: must be true or false"
            ))),
        }
    }

    /// A list of strings, empty when not given.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, AwsError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        AwsError::serialization(format!("{name}: must be a list of strings"))
                    })
                })
                .collect(),
            Some(_) => Err(AwsError::serialization(format!("{name}: must be a list"))),
        }
    }

    /// A map of strings to strings, empty when not given.
    pub fn string_map(&self, name: &str) -> Result<HashMap<String, String>, AwsError> {
        let mut out = HashMap::new();
        for (k, v) in self.object(name)?.into_iter().flat_map(|m| m.iter()) {
            let v = v
                .as_str()
                .ok_or_else(|| AwsError::serialization(format!("{name}.{k}: must be a string")))?;
            out.insert(k.clone(), v.to_string());
        }
        Ok(out)
    }

    /// An object member, if given.
    pub fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, AwsError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(AwsError::serialization(format!(
                "{name}: must be an object"
            ))),
        }
    }

    /// A list of objects (batch entries), empty when not given.
    pub fn objects(&self, name: &str) -> Result<Vec<Input<'a>>, AwsError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_object().map(|o| self.nested(o)).ok_or_else(|| {
                        AwsError::serialization(format!("{name}: must be a list of objects"))
                    })
                })
                .collect(),
            Some(_) => Err(AwsError::serialization(format!("{name}: must be a list"))),
        }
    }
}

impl<'a> Input<'a> {
    /// `read` of each object in the list `name` (batch entries), in order.
    pub fn each<T>(
        &self,
        name: &str,
        read: impl Fn(&Input<'a>) -> Result<T, AwsError>,
    ) -> Result<Vec<T>, AwsError> {
        self.objects(name)?.iter().map(read).collect()
    }
}

/// Adds `key: value` to `out` unless `value` is empty: AWS leaves out the
/// members it has no value for.
pub fn put_str(out: &mut Map<String, Value>, key: &str, value: String) {
    if !value.is_empty() {
        out.insert(key.to_string(), Value::String(value));
    }
}

/// An object of the string members `fields`, the empty ones left out (see
/// [`put_str`]).
pub fn strings<const N: usize>(fields: [(&str, String); N]) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in fields {
        put_str(&mut out, key, value);
    }
    out
}

/// The JSON array of `items`, each written by `write`.
pub fn array<T>(items: Vec<T>, write: impl FnMut(T) -> Value) -> Value {
    Value::Array(items.into_iter().map(write).collect())
}

/// A list's answer: `items` under `key`, and the token of the next page
/// (under `token_key`) when there is one.
pub fn page(key: &str, items: Value, token_key: &str, next: String) -> Value {
    let mut out = Map::new();
    out.insert(key.to_string(), items);
    put_str(&mut out, token_key, next);
    Value::Object(out)
}

/// Message attributes as a request gives them: `{"Name": {"DataType":
/// "String", "StringValue": "v"}}`, binary values in base64.
pub fn message_attributes(
    input: &Input<'_>,
    member: &str,
) -> Result<std::collections::HashMap<String, sluice_proto::v1::MessageAttributeValue>, AwsError> {
    let mut out = std::collections::HashMap::new();
    let Some(map) = input.object(member)? else {
        return Ok(out);
    };
    for (name, value) in map {
        let field = format!("{member}.{name}");
        let value = value
            .as_object()
            .ok_or_else(|| AwsError::serialization(format!("{field}: must be an object")))?;
        let attribute = input.nested(value);
        for list in ["StringListValues", "BinaryListValues"] {
            if !attribute.strings(list)?.is_empty() {
                return Err(AwsError::invalid(
                    &format!("{field}.{list}"),
                    "is reserved by AWS for future use and must be empty",
                ));
            }
        }
        let binary = match attribute.string("BinaryValue")? {
            None => Vec::new(),
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| {
                    AwsError::invalid(&format!("{field}.BinaryValue"), "must be base64")
                })?,
        };
        out.insert(
            name.clone(),
            sluice_proto::v1::MessageAttributeValue {
                data_type: attribute
                    .string("DataType")?
                    .ok_or_else(|| AwsError::missing(&format!("{field}.DataType")))?,
                string_value: attribute.string("StringValue")?.unwrap_or_default(),
                binary_value: binary,
            },
        );
    }
    Ok(out)
}

/// Message attributes in the answer's shape.
pub fn message_attributes_out(
    attributes: std::collections::HashMap<String, sluice_proto::v1::MessageAttributeValue>,
) -> Value {
    let mut out = Map::new();
    for (name, a) in attributes {
        let mut v = Map::new();
        v.insert("DataType".into(), Value::String(a.data_type.clone()));
        if a.data_type.starts_with("Binary") {
            v.insert(
                "BinaryValue".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(&a.binary_value)),
            );
        } else {
            v.insert("StringValue".into(), Value::String(a.string_value));
        }
        out.insert(name, Value::Object(v));
    }
    Value::Object(out)
}

/// A batch's failed entries in the JSON shape.
pub fn batch_failures(entries: Vec<sluice_proto::v1::BatchResultErrorEntry>) -> Vec<Value> {
    entries
        .into_iter()
        .map(|f| {
            serde_json::json!({
                "Id": f.id,
                "SenderFault": f.sender_fault,
                "Code": f.code,
                "Message": f.message,
            })
        })
        .collect()
}
