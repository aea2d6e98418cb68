//! The AWS query protocol's pieces: form bodies in, XML out.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::AwsError;

/// The form content type query-protocol requests carry.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The `key=value&...` pairs of a form body, percent-decoded (`+` is a
/// space); `None` when a value is not UTF-8 after decoding.
pub fn form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// `s` percent-decoded (`+` a space when `plus_is_space`, as in forms);
/// `None` for a bad escape or text that is not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `s` with XML's five special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The error for an action this endpoint does not serve.
pub fn invalid_action(action: &str) -> AwsError {
    AwsError {
        http_status: 400,
        code: "InvalidAction".into(),
        message: format!(
            "{} is not an action Sluice serves over the query protocol",
            crate::error::cut(action, 128)
        ),
    }
}

/// An XML answer.
pub fn xml(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

/// An error in the query protocol's XML shape.
pub fn error(e: &AwsError, request_id: &str) -> Response {
    let kind = if e.sender_fault() {
        "Sender"
    } else {
        "Receiver"
    };
    let body = format!(
        "<ErrorResponse><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message>\
         </Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        escape(&e.code),
        escape(&e.message)
    );
    let status = http::StatusCode::from_u16(e.http_status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

/// The most dot-separated parts a form key may have: deeper than any AWS
/// shape, and it bounds the conversion's recursion.
const KEY_DEPTH_MAX: usize = 8;

/// The largest list index a form key may carry (AWS's batches and maps are
/// far smaller; an index is a position, not a count, so this only bounds
/// the key's digits).
const INDEX_MAX: u32 = 1_000;

/// How a service writes its lists and maps in the query protocol: in the
/// form a request posts and in the XML it answers with. Everything else
/// is a structure (`Parent.Member`) or a string.
pub struct Layout {
    /// The XML namespace of answers.
    pub xmlns: &'static str,
    /// SQS writes a list's items and a map's entries under the item's own
    /// name, numbered (`AttributeName.1`, `Attribute.1.Name`: flattened);
    /// SNS under the member's name and `member` or `entry`
    /// (`TagKeys.member.1`, `Attributes.entry.1.key`).
    pub flattened: bool,
    /// The lists and maps whose names or shapes are not the default.
    pub members: &'static [Member],
}

/// A list or map member: its name in the JSON the handlers read and
/// write, its name in forms and XML, and its shape.
pub struct Member {
    /// The name in the JSON shape (`Attributes`).
    pub json: &'static str,
    /// The name in forms and XML (`Attribute`).
    pub query: &'static str,
    /// A list, or a map with its entries' key and value names.
    pub shape: Shape,
    /// The actions it is for; empty for every action.
    pub actions: &'static [&'static str],
}

/// The shape of a [`Member`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// Items, in index order.
    List,
    /// Entries, each with its key and value under these names.
    Map {
        /// The key's name (`Name`, `key`).
        key: &'static str,
        /// The value's name (`Value`, `value`).
        value: &'static str,
    },
}

/// A list member.
pub const fn list(json: &'static str, query: &'static str) -> Member {
    Member {
        json,
        query,
        shape: Shape::List,
        actions: &[],
    }
}

/// A map member whose entries name their key and value `key` and `value`.
pub const fn map(
    json: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
) -> Member {
    Member {
        json,
        query,
        shape: Shape::Map { key, value },
        actions: &[],
    }
}

/// `member`, for `actions` only.
pub const fn only(member: Member, actions: &'static [&'static str]) -> Member {
    Member { actions, ..member }
}

/// A form as a tree: `A.1.B=x` is the branch `A` holding the branch `1`
/// holding the leaf `B`.
enum Node {
    Leaf(String),
    Branch(BTreeMap<String, Node>),
}

impl Layout {
    /// The member for `action` whose form name (`by_json`: JSON name) is
    /// `name`.
    fn member(&self, action: &str, name: &str, by_json: bool) -> Option<&Member> {
        self.members.iter().find(|m| {
            (if by_json { m.json } else { m.query }) == name
                && (m.actions.is_empty() || m.actions.contains(&action))
        })
    }

    /// The request's members in the JSON shape the handlers read: lists as
    /// arrays, maps and structures as objects, values as strings (read as
    /// numbers or booleans by [`super::json::Input::of_form`]). `Action`
    /// and `Version` are left out.
    pub fn input(&self, action: &str, form: &[(String, String)]) -> Result<Value, AwsError> {
        let mut root = BTreeMap::new();
        for (key, value) in form {
            if key == "Action" || key == "Version" {
                continue;
            }
            let parts: Vec<&str> = key.split('.').collect();
            if parts.len() > KEY_DEPTH_MAX || parts.iter().any(|p| p.is_empty()) {
                return Err(AwsError::invalid(
                    &crate::error::cut(key, 128),
                    format!("must be at most {KEY_DEPTH_MAX} non-empty parts joined by dots"),
                ));
            }
            insert(&mut root, &parts, value.clone(), key)?;
        }
        self.object(action, &root, "")
    }

    fn object(
        &self,
        action: &str,
        members: &BTreeMap<String, Node>,
        path: &str,
    ) -> Result<Value, AwsError> {
        let mut out = Map::new();
        for (name, node) in members {
            let here = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            // Only lists and maps are renamed: SQS's list `QueueUrl.N` is
            // `QueueUrls`, its string `QueueUrl` stays as it is.
            let (json, value) = match node {
                Node::Leaf(s) => (name.as_str(), Value::String(s.clone())),
                Node::Branch(children) => {
                    let member = self.member(action, name, false);
                    let shape = member.map(|m| m.shape);
                    let value = self.branch(action, shape, children, &here)?;
                    (member.map_or(name.as_str(), |m| m.json), value)
                }
            };
            out.insert(json.to_string(), value);
        }
        Ok(Value::Object(out))
    }

    fn branch(
        &self,
        action: &str,
        shape: Option<Shape>,
        children: &BTreeMap<String, Node>,
        path: &str,
    ) -> Result<Value, AwsError> {
        let (items, path, shape) = if self.flattened {
            if shape.is_none() && !children.keys().all(|k| k.parse::<u32>().is_ok()) {
                return self.object(action, children, path);
            }
            (children, path.to_string(), shape)
        } else {
            match (children.len(), children.iter().next()) {
                (1, Some((k, Node::Branch(items)))) if k == "member" => {
                    (items, format!("{path}.{k}"), Some(Shape::List))
                }
                (1, Some((k, Node::Branch(items)))) if k == "entry" => {
                    let shape = shape.unwrap_or(Shape::Map {
                        key: "key",
                        value: "value",
                    });
                    (items, format!("{path}.{k}"), Some(shape))
                }
                _ => return self.object(action, children, path),
            }
        };
        let items = numbered(items, &path)?;
        match shape {
            Some(Shape::Map { key, value }) => {
                let mut out = Map::new();
                for (i, item) in items {
                    let here = format!("{path}.{i}");
                    let Node::Branch(entry) = item else {
                        return Err(AwsError::invalid(&here, "must have a key and a value"));
                    };
                    let Some(Node::Leaf(k)) = entry.get(key) else {
                        return Err(AwsError::missing(&format!("{here}.{key}")));
                    };
                    let v = match entry.get(value) {
                        None => return Err(AwsError::missing(&format!("{here}.{value}"))),
                        Some(Node::Leaf(v)) => Value::String(v.clone()),
                        Some(Node::Branch(v)) => {
                            self.object(action, v, &format!("{here}.{value}"))?
                        }
                    };
                    out.insert(k.clone(), v);
                }
                Ok(Value::Object(out))
            }
            _ => items
                .into_iter()
                .map(|(i, item)| match item {
                    Node::Leaf(s) => Ok(Value::String(s.clone())),
                    Node::Branch(b) => self.object(action, b, &format!("{path}.{i}")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
        }
    }

    /// The XML answer to `action`: its members from the handler's JSON,
    /// in `<ActionResponse><ActionResult>` (empty for an action that
    /// answers nothing), with the request id.
    pub fn answer(&self, action: &str, members: &Value, request_id: &str) -> String {
        let mut xml = format!("<{action}Response xmlns=\"{}\">", self.xmlns);
        // Always a result, if empty: SDKs look for it wherever the action
        // has an output shape, even one without members (SNS's TagResource).
        xml.push_str(&format!("<{action}Result>"));
        if let Some(object) = members.as_object() {
            self.write_object(action, object, &mut xml);
        }
        xml.push_str(&format!("</{action}Result>"));
        xml.push_str(&format!(
            "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
            escape(request_id)
        ));
        xml
    }

    fn write_object(&self, action: &str, object: &Map<String, Value>, xml: &mut String) {
        for (name, value) in object {
            let member = self.member(action, name, true);
            let tag = member.map_or(name.as_str(), |m| m.query);
            match (member.map(|m| m.shape), value) {
                (_, Value::Null) => {}
                (Some(Shape::Map { key, value: val }), Value::Object(entries)) => {
                    let (open, item) = self.wrapping(tag, "entry");
                    xml.push_str(&open.0);
                    for (k, v) in entries {
                        xml.push_str(&format!("<{item}><{key}>{}</{key}><{val}>", escape(k)));
                        self.write_value(action, v, xml);
                        xml.push_str(&format!("</{val}></{item}>"));
                    }
                    xml.push_str(&open.1);
                }
                (_, Value::Array(items)) => {
                    let (open, item) = self.wrapping(tag, "member");
                    xml.push_str(&open.0);
                    for v in items {
                        xml.push_str(&format!("<{item}>"));
                        self.write_value(action, v, xml);
                        xml.push_str(&format!("</{item}>"));
                    }
                    xml.push_str(&open.1);
                }
                (_, v) => {
                    xml.push_str(&format!("<{tag}>"));
                    self.write_value(action, v, xml);
                    xml.push_str(&format!("</{tag}>"));
                }
            }
        }
    }

    /// The tags around a list or map and the name of its items: none and
    /// the member's own name when flattened, else the member's name and
    /// `member` or `entry`.
    fn wrapping<'n>(&self, tag: &'n str, inner: &'n str) -> ((String, String), &'n str) {
        if self.flattened {
            ((String::new(), String::new()), tag)
        } else {
            ((format!("<{tag}>"), format!("</{tag}>")), inner)
        }
    }

    fn write_value(&self, action: &str, value: &Value, xml: &mut String) {
        match value {
            Value::Null => {}
            Value::String(s) => xml.push_str(&escape(s)),
            Value::Bool(b) => xml.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => xml.push_str(&n.to_string()),
            Value::Object(o) => self.write_object(action, o, xml),
            // No AWS shape nests a list directly in a list.
            Value::Array(items) => {
                for v in items {
                    self.write_value(action, v, xml);
                }
            }
        }
    }
}

/// Puts `value` at `parts` in the tree; a key that is both a value and a
/// parent of others is refused.
fn insert(
    branch: &mut BTreeMap<String, Node>,
    parts: &[&str],
    value: String,
    key: &str,
) -> Result<(), AwsError> {
    let clash = || {
        AwsError::invalid(
            &crate::error::cut(key, 128),
            "is given twice, or both as a value and as a structure",
        )
    };
    match parts {
        [] => Err(clash()),
        [last] => match branch.insert(last.to_string(), Node::Leaf(value)) {
            None => Ok(()),
            Some(_) => Err(clash()),
        },
        [first, rest @ ..] => {
            let node = branch
                .entry(first.to_string())
                .or_insert_with(|| Node::Branch(BTreeMap::new()));
            match node {
                Node::Branch(children) => insert(children, rest, value, key),
                Node::Leaf(_) => Err(clash()),
            }
        }
    }
}

/// A list's or map's items in index order; each key must be an index from 1.
fn numbered<'t>(
    items: &'t BTreeMap<String, Node>,
    path: &str,
) -> Result<Vec<(u32, &'t Node)>, AwsError> {
    let mut out = items
        .iter()
        .map(|(k, node)| match k.parse::<u32>() {
            Ok(i) if (1..=INDEX_MAX).contains(&i) => Ok((i, node)),
            _ => Err(AwsError::invalid(
                &format!("{path}.{}", crate::error::cut(k, 16)),
                format!("a list index must be a number from 1 to {INDEX_MAX}"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_percent_decoded_and_bad_escapes_are_refused() {
        assert_eq!(
            form(b"Action=GetCallerIdentity&Version=2011-06-15&X=a+b%2Fc").unwrap(),
            vec![
                ("Action".to_string(), "GetCallerIdentity".to_string()),
                ("Version".to_string(), "2011-06-15".to_string()),
                ("X".to_string(), "a b/c".to_string()),
            ]
        );
        assert_eq!(form(b"A=%zz"), None);
        assert_eq!(form(b"A=%4"), None);
        assert_eq!(escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }

    fn pairs(form: &str) -> Vec<(String, String)> {
        super::form(form.as_bytes()).unwrap()
    }

    #[test]
    fn sqs_forms_become_the_json_shape_its_handlers_read() {
        let layout = &crate::aws::sqs::QUERY;
        let json = layout
            .input(
                "SendMessageBatch",
                &pairs(
                    "Action=SendMessageBatch&QueueUrl=q\
                     &SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=two\
                     &SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=one\
                     &SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k\
                     &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String\
                     &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v",
                ),
            )
            .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "QueueUrl": "q",
                "Entries": [
                    {"Id": "a", "MessageBody": "one",
                     "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
                    {"Id": "b", "MessageBody": "two"},
                ]
            })
        );
        let create = layout
            .input(
                "CreateQueue",
                &pairs("QueueName=q&Attribute.1.Name=DelaySeconds&Attribute.1.Value=5&Tag.1.Key=team&Tag.1.Value=x&AttributeName.1=All"),
            )
            .unwrap();
        assert_eq!(
            create,
            serde_json::json!({"QueueName": "q", "Attributes": {"DelaySeconds": "5"},
                               "tags": {"team": "x"}, "AttributeNames": ["All"]})
        );
    }

    #[test]
    fn bad_form_keys_are_refused_naming_the_key() {
        let layout = &crate::aws::sqs::QUERY;
        for (form, named) in [
            ("AttributeName.x=All", "AttributeName.x"),
            ("AttributeName.0=All", "AttributeName.0"),
            ("AttributeName.5000=All", "AttributeName.5000"),
            ("A.b=1&A=2", "A"),
            ("A..b=1", "A..b"),
            ("a.b.c.d.e.f.g.h.i=1", "a.b.c.d.e.f.g.h.i"),
            ("Attribute.1.Value=5", "Attribute.1.Name"),
        ] {
            let e = layout.input("X", &pairs(form)).unwrap_err();
            assert!(e.message.contains(named), "{form}: {e:?}");
            assert_eq!(e.http_status, 400);
        }
    }

    #[test]
    fn sns_forms_wrap_lists_in_member_and_maps_in_entry() {
        let layout = &crate::aws::sns::QUERY;
        let json = layout
            .input(
                "Publish",
                &pairs(
                    "TopicArn=t&Message=m&MessageAttributes.entry.1.Name=k\
                     &MessageAttributes.entry.1.Value.DataType=Number\
                     &MessageAttributes.entry.1.Value.StringValue=5\
                     &Tags.member.1.Key=a&Tags.member.1.Value=b\
                     &Attributes.entry.1.key=RawMessageDelivery&Attributes.entry.1.value=true",
                ),
            )
            .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "TopicArn": "t", "Message": "m",
                "MessageAttributes": {"k": {"DataType": "Number", "StringValue": "5"}},
                "Tags": [{"Key": "a", "Value": "b"}],
                "Attributes": {"RawMessageDelivery": "true"},
            })
        );
    }

    #[test]
    fn answers_are_written_in_each_services_xml_shape() {
        let answer = serde_json::json!({
            "Attributes": {"Policy": "<p>"},
            "Topics": [{"TopicArn": "arn:1"}],
            "NextToken": "n",
        });
        assert_eq!(
            crate::aws::sns::QUERY.answer("X", &answer, "r"),
            "<XResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><XResult>\
             <Attributes><entry><key>Policy</key><value>&lt;p&gt;</value></entry></Attributes>\
             <NextToken>n</NextToken><Topics><member><TopicArn>arn:1</TopicArn></member></Topics>\
             </XResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></XResponse>"
        );
        let answer = serde_json::json!({
            "Successful": [{"Id": "a"}],
            "Failed": [{"Id": "b", "SenderFault": true}],
        });
        assert_eq!(
            crate::aws::sqs::QUERY.answer("DeleteMessageBatch", &answer, "r"),
            "<DeleteMessageBatchResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">\
             <DeleteMessageBatchResult>\
             <BatchResultErrorEntry><Id>b</Id><SenderFault>true</SenderFault></BatchResultErrorEntry>\
             <DeleteMessageBatchResultEntry><Id>a</Id></DeleteMessageBatchResultEntry>\
             </DeleteMessageBatchResult><ResponseMetadata><RequestId>r</RequestId>\
             </ResponseMetadata></DeleteMessageBatchResponse>"
        );
        assert_eq!(
            crate::aws::sqs::QUERY.answer("DeleteQueue", &serde_json::json!({}), "r"),
            "<DeleteQueueResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">\
             <DeleteQueueResult></DeleteQueueResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DeleteQueueResponse>"
        );
    }
}
