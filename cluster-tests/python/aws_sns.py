"""Drives every SNS action through boto3 and the aws CLI, unmodified, over
SNS's query protocol against a Sluice cluster (each call goes to another
node): topics with filter policies, raw and enveloped delivery to queues,
an HTTP subscription confirmed through ConfirmSubscription, batches, tags
and the errors the SDK raises typed. Exits non-zero on the first check
that fails.

Usage: aws_sns.py ENDPOINTS CA KEY SECRET READER_KEY READER_SECRET (see
awscheck.py)
"""

import json
import subprocess
import threading

import awscheck
from awscheck import ACCOUNT, ca, check, check_raises, check_refused, check_wrong_secret, cli_env, client, endpoints, reader_key, reader_secret, serve_posts

sns = [client("sns", i) for i in range(len(endpoints))]
sqs = client("sqs", 0)
check_protocol = sns[0]._service_model.metadata["protocol"]


def receive_all(url, want):
    return awscheck.receive_all(sqs, url, want)


def queue(name):
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


check("boto3 speaks SNS's query protocol", check_protocol == "query", check_protocol)

# Topics.
topic = sns[0].create_topic(Name="aws-orders", Attributes={"DisplayName": "Orders"},
                            Tags=[{"Key": "team", "Value": "a"}])["TopicArn"]
check("CreateTopic answers the topic's ARN", topic == f"arn:aws:sns:us-east-1:{ACCOUNT}:aws-orders", topic)
again = sns[1].create_topic(Name="aws-orders", Attributes={"DisplayName": "Orders"},
                            Tags=[{"Key": "team", "Value": "a"}])["TopicArn"]
check("CreateTopic of the same topic is idempotent", again == topic, again)
listed = [t["TopicArn"] for t in sns[2].list_topics()["Topics"]]
check("ListTopics", topic in listed, listed)
attrs = sns[1].get_topic_attributes(TopicArn=topic)["Attributes"]
check("GetTopicAttributes", attrs["DisplayName"] == "Orders" and attrs["TopicArn"] == topic, attrs)
sns[2].set_topic_attributes(TopicArn=topic, AttributeName="DisplayName", AttributeValue="Orders & <more>")
attrs = sns[0].get_topic_attributes(TopicArn=topic)["Attributes"]
check("SetTopicAttributes, XML special characters kept", attrs["DisplayName"] == "Orders & <more>", attrs)

# Subscriptions to queues: raw with a filter policy, and enveloped.
raw_url, raw_arn = queue("aws-sns-raw")
env_url, env_arn = queue("aws-sns-env")
raw_sub = sns[1].subscribe(
    TopicArn=topic, Protocol="sqs", Endpoint=raw_arn, ReturnSubscriptionArn=True,
    Attributes={"RawMessageDelivery": "true", "FilterPolicy": json.dumps({"color": ["blue"]})},
)["SubscriptionArn"]
check("Subscribe answers the subscription's ARN", raw_sub.startswith(topic + ":"), raw_sub)
env_sub = sns[2].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=env_arn)["SubscriptionArn"]
sub_attrs = sns[0].get_subscription_attributes(SubscriptionArn=raw_sub)["Attributes"]
check("GetSubscriptionAttributes", sub_attrs["RawMessageDelivery"] == "true"
      and json.loads(sub_attrs["FilterPolicy"]) == {"color": ["blue"]} and sub_attrs["Endpoint"] == raw_arn, sub_attrs)
by_topic = sns[1].list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
check("ListSubscriptionsByTopic", sorted(s["SubscriptionArn"] for s in by_topic) == sorted([raw_sub, env_sub])
      and all(s["Protocol"] == "sqs" and s["TopicArn"] == topic for s in by_topic), by_topic)
every = [s["SubscriptionArn"] for s in sns[2].list_subscriptions()["Subscriptions"]]
check("ListSubscriptions", raw_sub in every and env_sub in every, every)

blue = sns[0].publish(TopicArn=topic, Message="blue one", Subject="hello",
                      MessageAttributes={"color": {"DataType": "String", "StringValue": "blue"},
                                         "size": {"DataType": "Number", "StringValue": "3"}})
check("Publish answers a message id", len(blue.get("MessageId", "")) > 0, blue)
sns[1].publish(TopicArn=topic, Message="red one",
               MessageAttributes={"color": {"DataType": "String", "StringValue": "red"}})
raw = receive_all(raw_url, 1)
check("the filter policy lets only blue through, delivered raw",
      [m["Body"] for m in raw] == ["blue one"] and raw[0]["MessageAttributes"]["color"]["StringValue"] == "blue", raw)
enveloped = sorted((json.loads(m["Body"]) for m in receive_all(env_url, 2)), key=lambda e: e["Message"])
check("the other queue gets both in SNS's envelope",
      [e["Message"] for e in enveloped] == ["blue one", "red one"]
      and all(e["Type"] == "Notification" and e["TopicArn"] == topic for e in enveloped)
      and enveloped[0]["Subject"] == "hello" and enveloped[0]["MessageId"] == blue["MessageId"]
      and enveloped[0]["MessageAttributes"]["size"] == {"Type": "Number", "Value": "3"}, enveloped)

sns[2].set_subscription_attributes(SubscriptionArn=raw_sub, AttributeName="FilterPolicy",
                                   AttributeValue=json.dumps({"color": ["red"]}))
batch = sns[0].publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
    {"Id": "b1", "Message": "batch blue", "MessageAttributes": {"color": {"DataType": "String", "StringValue": "blue"}}},
    {"Id": "b2", "Message": "batch red", "MessageAttributes": {"color": {"DataType": "String", "StringValue": "red"}}},
])
check("PublishBatch answers per entry", sorted(s["Id"] for s in batch["Successful"]) == ["b1", "b2"]
      and not batch["Failed"], batch)
raw = receive_all(raw_url, 1)
check("SetSubscriptionAttributes changed the filter: only red now", [m["Body"] for m in raw] == ["batch red"], raw)
check("the envelope queue got the batch", sorted(json.loads(m["Body"])["Message"] for m in receive_all(env_url, 2))
      == ["batch blue", "batch red"])
sns[1].unsubscribe(SubscriptionArn=env_sub)
left = [s["SubscriptionArn"] for s in sns[2].list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
check("Unsubscribe", left == [raw_sub], left)

# An HTTP subscription confirmed through ConfirmSubscription.
tokens = []
arrived = threading.Event()


def on_hook(path, body):
    body = json.loads(body)
    if body.get("Type") == "SubscriptionConfirmation":
        tokens.append(body["Token"])
        arrived.set()


server, base = serve_posts(on_hook)
hook = base + "/hook"
pending = sns[0].subscribe(TopicArn=topic, Protocol="http", Endpoint=hook)["SubscriptionArn"]
check("an HTTP subscription waits for confirmation", pending == "pending confirmation", pending)
check("the endpoint is sent a SubscriptionConfirmation", arrived.wait(30), tokens)
confirmed = sns[1].confirm_subscription(TopicArn=topic, Token=tokens[0])["SubscriptionArn"]
check("ConfirmSubscription answers the subscription's ARN", confirmed.startswith(topic + ":"), confirmed)
server.shutdown()
sns[2].unsubscribe(SubscriptionArn=confirmed)

# Tags.
sns[0].tag_resource(ResourceArn=topic, Tags=[{"Key": "env", "Value": "test"}, {"Key": "tier", "Value": "1"}])
sns[1].untag_resource(ResourceArn=topic, TagKeys=["tier"])
tags = sns[2].list_tags_for_resource(ResourceArn=topic)["Tags"]
check("TagResource, UntagResource, ListTagsForResource",
      tags == [{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "a"}], tags)

# Errors arrive as the SDK's typed exceptions.
missing = f"arn:aws:sns:us-east-1:{ACCOUNT}:no-such-topic"
check_raises("a missing topic is refused", "NotFound is raised typed",
             lambda: sns[0].get_topic_attributes(TopicArn=missing), sns[0].exceptions.NotFoundException,
             lambda e: e.response["Error"]["Code"] == "NotFound")
check_raises("a bad topic name is refused", "InvalidParameter is raised typed",
             lambda: sns[1].create_topic(Name="bad name!"), sns[1].exceptions.InvalidParameterException,
             lambda e: e.response["Error"]["Code"] == "InvalidParameter")
check_refused("a group id on a standard topic is refused",
              lambda: sns[2].publish(TopicArn=topic, Message="x", MessageGroupId="g"), "InvalidParameter")

# FIFO topics.
fifo = sns[0].create_topic(Name="aws-orders.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"})["TopicArn"]
fifo_url = sqs.create_queue(QueueName="aws-sns.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
fifo_arn = sqs.get_queue_attributes(QueueUrl=fifo_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
sns[1].subscribe(TopicArn=fifo, Protocol="sqs", Endpoint=fifo_arn, Attributes={"RawMessageDelivery": "true"})
for i in range(4):
    r = sns[i % len(sns)].publish(TopicArn=fifo, Message=f"f{i}", MessageGroupId="g")
    check(f"a FIFO publish {i} has a sequence number", r.get("SequenceNumber", "").isdigit(), r)
got = receive_all(fifo_url, 4)
check("a FIFO topic keeps the group's order", [m["Body"] for m in got] == ["f0", "f1", "f2", "f3"], got)

# Authentication and authorisation.
check_wrong_secret("sns", lambda wrong: wrong.list_topics())
reader = client("sns", 1, reader_key, reader_secret)
check("a read-only key may list", topic in [t["TopicArn"] for t in reader.list_topics()["Topics"]])
check_refused("a read-only key may not publish: AccessDenied",
              lambda: reader.publish(TopicArn=topic, Message="no"), "AccessDenied")

sns[0].delete_topic(TopicArn=fifo)
check("DeleteTopic", fifo not in [t["TopicArn"] for t in sns[1].list_topics()["Topics"]])

# The aws CLI, unmodified.
env = cli_env()
cli = ["aws", "--endpoint-url", endpoints[2], "--ca-bundle", ca, "--output", "json", "sns"]
out = subprocess.run(cli + ["publish", "--topic-arn", topic, "--message", "from the cli",
                            "--message-attributes", '{"color":{"DataType":"String","StringValue":"red"}}'],
                     env=env, capture_output=True, text=True)
check("aws sns publish", out.returncode == 0 and json.loads(out.stdout)["MessageId"], out.stdout + out.stderr)
check("the CLI's message was delivered", [m["Body"] for m in receive_all(raw_url, 1)] == ["from the cli"])
out = subprocess.run(cli + ["list-topics"], env=env, capture_output=True, text=True)
check("aws sns list-topics", out.returncode == 0 and topic in out.stdout, out.stdout + out.stderr)
out = subprocess.run(cli + ["get-topic-attributes", "--topic-arn", missing], env=env, capture_output=True, text=True)
check("aws sns reports NotFound", out.returncode != 0 and "NotFound" in out.stderr, out.stderr)
print("all SNS checks passed")
