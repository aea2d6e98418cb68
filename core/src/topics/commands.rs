//! The topic commands: what each changes, what it returns and how
//! it applies (through the modules of [`crate::topics`]).

use serde::{Deserialize, Serialize};

use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::operation::Operation;
use crate::store::Txn;
use crate::topics::outbox::{self, Settled};
use crate::topics::publish::{self, Published};
use crate::topics::subscriptions::{self, Subscribe, Subscribed};
use crate::topics::{self, CreateTopic};

impl Operation for CreateTopic {
    type Output = bool;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
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

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
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

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
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

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
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

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
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

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
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

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
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

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let CollectTopic { tid } = self;
        topics::collect(txn, *tid)
    }
}
