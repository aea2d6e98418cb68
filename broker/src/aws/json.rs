//! Reading the members of an AWS JSON request body, each checked for its
//! type: a member of the wrong type is refused naming the member, never
//! taken as absent.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::AwsError;

/// The members of a request (a JSON object).
pub struct Input<'a>(pub &'a Map<String, Value>);

impl<'a> Input<'a> {
    /// The body's members; an empty body is an empty object.
    pub fn of(body: &'a Value) -> Result<Input<'a>, AwsError> {
        body.as_object()
            .map(Input)
            .ok_or_else(|| AwsError::serialization("the request body must be a JSON object"))
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
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
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    AwsError::serialization(format!("{name}: must be a 32-bit integer"))
                }),
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
                    v.as_object().map(Input).ok_or_else(|| {
                        AwsError::serialization(format!("{name}: must be a list of objects"))
                    })
                })
                .collect(),
            Some(_) => Err(AwsError::serialization(format!("{name}: must be a list"))),
        }
    }
}

/// Adds `key: value` to `out` unless `value` is empty: AWS leaves out the
/// members it has no value for.
pub fn put_str(out: &mut Map<String, Value>, key: &str, value: String) {
    if !value.is_empty() {
        out.insert(key.to_string(), Value::String(value));
    }
}
