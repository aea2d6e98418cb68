//! Tags on queues, topics and streams: one rule set and one command.
//!
//! SQS, SNS and Kinesis share their tag rules: at most 50 tags, keys of
//! 1-128 characters not starting with `aws:`, values of at most 256
//! characters. The services differ only in the error code a broken rule
//! gets (SQS's `InvalidParameterValue`, SNS's `InvalidParameter`, Kinesis's
//! `InvalidArgumentException`), which the caller passes in. [`Tag`] is the one replicated command that adds or
//! removes tags on any of them; the dispatcher applies it with [`retag`]
//! through the resource's domain (its `require` and `save`), so this module
//! stays a leaf the domains share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ApplyResult, DomainError};
use crate::operation::Resource;
use crate::store::{StateRead, Txn};

/// Tags of a resource, by key.
pub type Tags = BTreeMap<String, String>;

pub use crate::limits::tags::{KEY_MAX, TAGS_MAX, VALUE_MAX};

/// The error code a service gives a broken tag rule.
pub type Invalid = fn(String, String) -> DomainError;

/// The SQS error: `InvalidParameterValue`.
pub fn invalid_parameter(field: String, rule: String) -> DomainError {
    DomainError::invalid(field, rule)
}

/// Checks a resource's whole set of tags (after a change).
pub fn validate(tags: &Tags, invalid: Invalid) -> Result<(), DomainError> {
    if tags.len() > TAGS_MAX {
        return Err(invalid(
            "tags".into(),
            format!("at most {TAGS_MAX} tags, got {}", tags.len()),
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > KEY_MAX {
            return Err(invalid(
                "tags".into(),
                format!("tag keys must be 1-{KEY_MAX} characters, got {k:?}"),
            ));
        }
        if k.starts_with("aws:") {
            return Err(invalid(
                "tags".into(),
                format!("tag key {k:?} uses the reserved prefix \"aws:\""),
            ));
        }
        if v.chars().count() > VALUE_MAX {
            return Err(invalid(
                format!("tags.{k}"),
                format!("tag values must be at most {VALUE_MAX} characters"),
            ));
        }
    }
    Ok(())
}

/// What a [`Tag`] command does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Adds these tags, replacing the values of keys already there.
    Add(Tags),
    /// Removes these keys (keys not there are ignored).
    Remove(Vec<String>),
}

impl Change {
    /// `existing` changed, checked against the rules.
    pub fn applied_to(&self, existing: &Tags, invalid: Invalid) -> Result<Tags, DomainError> {
        let mut tags = existing.clone();
        match self {
            Change::Add(added) => {
                tags.extend(added.iter().map(|(k, v)| (k.clone(), v.clone())));
                validate(&tags, invalid)?;
            }
            Change::Remove(keys) => {
                for k in keys {
                    tags.remove(k);
                }
            }
        }
        Ok(tags)
    }
}

/// A record that carries tags (a queue, topic or stream), as [`retag`]
/// changes it.
pub trait HasTags {
    /// The error its service gives a broken tag rule (SQS's unless the
    /// record says otherwise).
    const INVALID: Invalid = invalid_parameter;

    /// Its tags.
    fn tags_mut(&mut self) -> &mut Tags;
}

/// Implements [`HasTags`] for a record whose tags are its `tags` field,
/// with its service's tag error when that is not SQS's:
/// `has_tags!(Topic, invalid_tag)`.
macro_rules! has_tags {
    ($record:ty $(, $invalid:path)?) => {
        impl $crate::tags::HasTags for $record {
            $(const INVALID: $crate::tags::Invalid = $invalid;)?

            fn tags_mut(&mut self) -> &mut $crate::tags::Tags {
                &mut self.tags
            }
        }
    };
}
pub(crate) use has_tags;

/// Applies `change` to the tags of the record named `name`, which its
/// domain's `require` reads (failing as that domain does when it is
/// missing) and `save` writes back.
pub fn retag<R: HasTags>(
    txn: &mut Txn<'_>,
    name: &str,
    change: &Change,
    require: fn(&dyn StateRead, &str) -> ApplyResult<R>,
    save: fn(&mut Txn<'_>, &R),
) -> ApplyResult<()> {
    let mut record = require(txn, name)?;
    let tags = record.tags_mut();
    *tags = change.applied_to(tags, R::INVALID)?;
    save(txn, &record);
    Ok(())
}

/// The resource a [`Tag`] command changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tagged {
    /// A queue, by name.
    Queue(String),
    /// A topic, by name.
    Topic(String),
    /// A stream, by name.
    Stream(String),
}

impl Tagged {
    /// The resource a tag command on it is scoped to.
    pub fn scope(&self) -> Resource<'_> {
        match self {
            Tagged::Queue(name) => Resource::Queue(name),
            Tagged::Topic(name) => Resource::Topic(name),
            Tagged::Stream(name) => Resource::Stream(name),
        }
    }
}

/// The command: add or remove tags on a queue, topic or stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// What is tagged.
    pub resource: Tagged,
    /// How.
    pub change: Change,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::map as tags;

    #[test]
    fn the_rules_name_the_field_and_the_limit() {
        let too_many: Tags = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        let e = validate(&too_many, invalid_parameter).unwrap_err();
        assert!(e.message.contains("at most 50 tags"), "{e:?}");
        let e = validate(&tags(&[("aws:x", "v")]), invalid_parameter).unwrap_err();
        assert!(e.message.contains("reserved prefix"), "{e:?}");
        let e = validate(&tags(&[("", "v")]), invalid_parameter).unwrap_err();
        assert!(e.message.contains("1-128 characters"), "{e:?}");
        let long = "v".repeat(257);
        let e = validate(&tags(&[("k", &long)]), invalid_parameter).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("tags.k"));
        assert!(validate(&tags(&[("k", &"v".repeat(256))]), invalid_parameter).is_ok());
    }

    #[test]
    fn a_change_adds_replaces_and_removes() {
        let before = tags(&[("a", "1"), ("b", "2")]);
        let added = Change::Add(tags(&[("b", "3"), ("c", "4")]))
            .applied_to(&before, invalid_parameter)
            .unwrap();
        assert_eq!(added, tags(&[("a", "1"), ("b", "3"), ("c", "4")]));
        let removed = Change::Remove(vec!["a".into(), "zz".into()])
            .applied_to(&added, invalid_parameter)
            .unwrap();
        assert_eq!(removed, tags(&[("b", "3"), ("c", "4")]));
        // An addition that breaks the limit is refused whole.
        let full: Tags = (0..50).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(Change::Add(tags(&[("new", "")]))
            .applied_to(&full, invalid_parameter)
            .is_err());
    }
}
