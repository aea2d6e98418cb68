//! The topic operations: the commands that change topics, their
//! subscriptions and outboxes (what each returns and how it applies, through
//! the modules of [`crate::topics`]) and the reads of them.

use serde::{Deserialize, Serialize};

use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::operation::{Lookup, Operation};
use crate::store::{StateRead, Txn};
use crate::topics::outbox::{self, Settled};
use crate::topics::publish::{self, Published};
use crate::topics::subscription::{self, Subscription};
use crate::topics::subscriptions::{self, Subscribe, Subscribed};
use crate::topics::{self, CreateTopic};
use crate::topics::{Topic, TopicCounts};

impl Operation for CreateTopic {
    type Output = bool;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        topics::create(txn, ctx, self)
    }
}

/// Delete a topic (its subscriptions and outbox are collected later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteTopic {
    /// Topic name.
    pub name: String,
}

impl Operation for DeleteTopic {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let DeleteTopic { name } = self;
        topics::delete(txn, name)
    }
}

/// Set (or, with an empty value, clear) one topic attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetTopicAttribute {
    /// Topic name.
    pub name: String,
    /// Attribute name.
    pub attribute: String,
    /// Value.
    pub value: String,
}

impl Operation for SetTopicAttribute {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let SetTopicAttribute {
            name,
            attribute,
            value,
        } = self;
        topics::set_attribute(txn, name, attribute, value)
    }
}

impl Operation for Subscribe {
    type Output = Subscribed;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        subscriptions::subscribe(txn, ctx, self, effects)
    }
}

/// Confirm a pending HTTP/S subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmSubscription {
    /// Topic name.
    pub topic: String,
    /// The token sent to the endpoint.
    pub token: String,
}

impl Operation for ConfirmSubscription {
    type Output = String;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let ConfirmSubscription { topic, token } = self;
        subscriptions::confirm(txn, topic, token)
    }
}

/// Remove a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// Topic name.
    pub topic: String,
    /// Subscription id.
    pub id: String,
}

impl Operation for Unsubscribe {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let Unsubscribe { topic, id } = self;
        subscriptions::unsubscribe(txn, topic, id)
    }
}

/// Set (or clear) one subscription attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSubscriptionAttribute {
    /// Topic name.
    pub topic: String,
    /// Subscription id.
    pub id: String,
    /// Attribute name.
    pub attribute: String,
    /// Value.
    pub value: String,
}

impl Operation for SetSubscriptionAttribute {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let SetSubscriptionAttribute {
            topic,
            id,
            attribute,
            value,
        } = self;
        subscriptions::set_attribute(txn, topic, id, attribute, value)
    }
}

/// Publish messages (Publish, PublishBatch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// Topic name.
    pub topic: String,
    /// The topic's ARN, for the envelopes.
    pub topic_arn: String,
    /// The messages.
    pub messages: Vec<publish::Publication>,
}

impl Operation for Publish {
    type Output = Vec<Result<Published, DomainError>>;

    fn size_hint(&self) -> usize {
        64 + self.topic_arn.len() + self.messages.iter().map(|m| m.size()).sum::<usize>()
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let Publish {
            topic,
            topic_arn,
            messages,
        } = self;
        publish::publish(txn, ctx, topic, topic_arn, messages, effects)
    }
}

/// Record the results of outbox deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettleDeliveries {
    /// Topic name.
    pub topic: String,
    /// The topic's id when the entries were read: results for a topic
    /// since deleted (and perhaps created again) are ignored.
    pub topic_id: u64,
    /// Entry number and result.
    pub results: Vec<(u64, outbox::Outcome)>,
}

impl Operation for SettleDeliveries {
    type Output = Settled;

    fn size_hint(&self) -> usize {
        32 + self.results.len() * 64
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let SettleDeliveries {
            topic,
            topic_id,
            results,
        } = self;
        outbox::settle(txn, ctx, topic, *topic_id, results, effects)
    }
}

/// The leader's periodic time-driven work on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicTick {
    /// Topic name.
    pub topic: String,
}

impl Operation for TopicTick {
    type Output = bool;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let TopicTick { topic } = self;
        publish::expire_dedup(txn, ctx, topic, 500)
    }
}

/// Delete a bounded part of a deleted topic's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectTopic {
    /// Topic id.
    pub tid: u64,
}

impl Operation for CollectTopic {
    type Output = bool;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let CollectTopic { tid } = self;
        topics::collect(txn, *tid)
    }
}

/// A topic with its subscription and outbox counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTopic {
    /// Topic name.
    pub name: String,
}

impl Lookup for GetTopic {
    type Output = (Topic, TopicCounts);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let GetTopic { name } = self;
        let (t, c) = topics::details(state, name)?;
        Ok((t, c))
    }
}

/// A page of topic names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopics {
    /// Continue after this name.
    pub after: Option<String>,
    /// Page size.
    pub limit: u32,
}

impl Lookup for ListTopics {
    type Output = (Vec<String>, bool);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let ListTopics { after, limit } = self;
        let (names, more) = topics::list(state, after.as_deref(), *limit as usize)?;
        Ok((names, more))
    }
}

/// One subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSubscription {
    /// Topic name.
    pub topic: String,
    /// Subscription id.
    pub id: String,
}

impl Lookup for GetSubscription {
    type Output = (Topic, Subscription);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let GetSubscription { topic, id } = self;
        let t = topics::require(state, topic)?;
        let s = subscription::require_sub(state, t.id, id)?;
        Ok((t, s))
    }
}

/// A page of subscriptions, of one topic or of all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSubscriptions {
    /// Only this topic's.
    pub topic: Option<String>,
    /// Continue after this (topic, subscription id).
    pub after: Option<(String, String)>,
    /// Page size.
    pub limit: u32,
}

impl Lookup for ListSubscriptions {
    type Output = (Vec<(Topic, Subscription)>, Option<(String, String)>);

    fn read(
        &self,
        state: &dyn StateRead,
    ) -> ApplyResult<(Vec<(Topic, Subscription)>, Option<(String, String)>)> {
        let ListSubscriptions {
            topic,
            after,
            limit,
        } = self;
        let (subs, next) = topics::list_subscriptions(
            state,
            topic.as_deref(),
            after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            (*limit).max(1) as usize,
        )?;
        Ok((subs, next))
    }
}
