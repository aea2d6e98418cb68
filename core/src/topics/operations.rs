//! The topic operations: the commands that change topics, their
//! subscriptions and outboxes (what each returns and how it applies, through
//! the modules of [`crate::topics`]) and the reads of them.

use crate::error::DomainError;
use crate::operation::operations;
use crate::topics::outbox::{self, Settled};
use crate::topics::publish::{self, Published};
use crate::topics::subscription::{self, Subscription};
use crate::topics::subscriptions::{self, Subscribe, Subscribed};
use crate::topics::{self, CreateTopic};
use crate::topics::{Topic, TopicCounts};

operations! {
    impl CreateTopic applies -> bool = |op, txn, ctx, _| topics::create(txn, ctx, op);

    /// Delete a topic (its subscriptions and outbox are collected later).
    pub struct DeleteTopic {
        /// Topic name.
        pub name: String,
    }
    applies -> () = |txn, _, _| topics::delete(txn, name);

    /// Set (or, with an empty value, clear) one topic attribute.
    pub struct SetTopicAttribute {
        /// Topic name.
        pub name: String,
        /// Attribute name.
        pub attribute: String,
        /// Value.
        pub value: String,
    }
    applies -> () = |txn, _, _| topics::set_attribute(txn, name, attribute, value);

    impl Subscribe applies -> Subscribed = |op, txn, ctx, effects| {
        subscriptions::subscribe(txn, ctx, op, effects)
    };

    /// Confirm a pending HTTP/S subscription.
    pub struct ConfirmSubscription {
        /// Topic name.
        pub topic: String,
        /// The token sent to the endpoint.
        pub token: String,
    }
    applies -> String = |txn, _, _| subscriptions::confirm(txn, topic, token);

    /// Remove a subscription.
    pub struct Unsubscribe {
        /// Topic name.
        pub topic: String,
        /// Subscription id.
        pub id: String,
    }
    applies -> () = |txn, _, _| subscriptions::unsubscribe(txn, topic, id);

    /// Set (or clear) one subscription attribute.
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
    applies -> () = |txn, _, _| subscriptions::set_attribute(txn, topic, id, attribute, value);

    /// Publish messages (Publish, PublishBatch).
    pub struct Publish {
        /// Topic name.
        pub topic: String,
        /// The topic's ARN, for the envelopes.
        pub topic_arn: String,
        /// The messages.
        pub messages: Vec<publish::Publication>,
    }
    size 64 + topic_arn.len() + messages.iter().map(|m| m.size()).sum::<usize>();
    applies -> Vec<Result<Published, DomainError>> = |txn, ctx, effects| {
        publish::publish(txn, ctx, topic, topic_arn, messages, effects)
    };

    /// Record the results of outbox deliveries.
    pub struct SettleDeliveries {
        /// Topic name.
        pub topic: String,
        /// The topic's id when the entries were read: results for a topic
        /// since deleted (and perhaps created again) are ignored.
        pub topic_id: u64,
        /// Entry number and result.
        pub results: Vec<(u64, outbox::Outcome)>,
    }
    size 32 + results.len() * 64;
    applies -> Settled = |txn, ctx, effects| {
        outbox::settle(txn, ctx, topic, *topic_id, results, effects)
    };

    /// The leader's periodic time-driven work on a topic.
    pub struct TopicTick {
        /// Topic name.
        pub topic: String,
    }
    applies -> bool = |txn, ctx, _| publish::expire_dedup(txn, ctx, topic, 500);

    /// Delete a bounded part of a deleted topic's keys.
    pub struct CollectTopic {
        /// Topic id.
        pub tid: u64,
    }
    applies -> bool = |txn, _, _| topics::collect(txn, *tid);

    /// A topic with its subscription and outbox counts.
    pub struct GetTopic {
        /// Topic name.
        pub name: String,
    }
    reads -> (Topic, TopicCounts) = |state| {
        let (t, c) = topics::details(state, name)?;
        Ok((t, c))
    };

    /// A page of topic names.
    pub struct ListTopics {
        /// Continue after this name.
        pub after: Option<String>,
        /// Page size.
        pub limit: u32,
    }
    reads -> (Vec<String>, bool) = |state| {
        topics::list(state, after.as_deref(), *limit as usize)
    };

    /// One subscription.
    pub struct GetSubscription {
        /// Topic name.
        pub topic: String,
        /// Subscription id.
        pub id: String,
    }
    reads -> (Topic, Subscription) = |state| {
        let t = topics::require(state, topic)?;
        let s = subscription::require_sub(state, t.id, id)?;
        Ok((t, s))
    };

    /// A page of subscriptions, of one topic or of all.
    pub struct ListSubscriptions {
        /// Only this topic's.
        pub topic: Option<String>,
        /// Continue after this (topic, subscription id).
        pub after: Option<(String, String)>,
        /// Page size.
        pub limit: u32,
    }
    reads -> (Vec<(Topic, Subscription)>, Option<(String, String)>) = |state| {
        let (subs, next) = topics::list_subscriptions(
            state,
            topic.as_deref(),
            after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            (*limit).max(1) as usize,
        )?;
        Ok((subs, next))
    };
}
