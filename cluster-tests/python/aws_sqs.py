"""Drives every SQS action through boto3 and the aws CLI, unmodified,
against a Sluice cluster (each call goes to another node), and STS
GetCallerIdentity over the query protocol. Current boto3 speaks SQS's AWS
JSON protocol; run with an older boto3 first on PYTHONPATH (1.28.0, see
requirements-query.txt) the same checks go over SQS's query protocol, and
a form posted to a queue's URL (as the Java v1 SDK posts) is checked too.
Exits non-zero on the first check that fails.

Usage: aws_sqs.py ENDPOINTS CA KEY SECRET READER_KEY READER_SECRET (see
awscheck.py)
"""

import http.client
import json
import ssl
import subprocess
import time

import boto3
import botocore

from awscheck import ca, check, check_raises, check_refused, check_wrong_secret, cli_env, client, endpoints, key, reader_key, reader_secret, secret

nodes = [client("sqs", i) for i in range(len(endpoints))]
protocol = nodes[0]._service_model.metadata["protocol"]
print(f"SQS over the {protocol} protocol (botocore {botocore.__version__})")


def node(i):
    return nodes[i % len(nodes)]


def receive_all(sqs, url, want, **kw):
    got = []
    deadline = time.time() + 30
    while len(got) < want and time.time() < deadline:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **kw)
        got.extend(r.get("Messages", []))
    return got


# Standard queue: create, look up, send (attributes, batch), receive,
# change visibility, delete.
url = node(0).create_queue(QueueName="aws-std", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
check("CreateQueue answers the URL of the node asked", url == endpoints[0] + "/000000000000/aws-std", url)
url1 = node(1).get_queue_url(QueueName="aws-std")["QueueUrl"]
check("GetQueueUrl on another node", url1 == endpoints[1] + "/000000000000/aws-std", url1)
sent = node(1).send_message(
    QueueUrl=url1,
    MessageBody="first",
    MessageAttributes={
        "color": {"DataType": "String", "StringValue": "blue"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        "n": {"DataType": "Number", "StringValue": "42"},
    },
)
check("SendMessage returns an id and the body's MD5", sent["MD5OfMessageBody"] == "8b04d5e3775d298e78455efc5ca404d5", sent)
batch = node(2).send_message_batch(
    QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": f"b{i}"} for i in range(10)]
)
check("SendMessageBatch sends all ten", len(batch["Successful"]) == 10 and not batch.get("Failed"), batch)
msgs = receive_all(node(0), url, 11, MessageAttributeNames=["All"], AttributeNames=["All"])
bodies = sorted(m["Body"] for m in msgs)
check("ReceiveMessage gets all eleven", bodies == sorted(["first"] + [f"b{i}" for i in range(10)]), bodies)
first = next(m for m in msgs if m["Body"] == "first")
check(
    "message attributes round-trip (boto3 checked their MD5)",
    first["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\xff"
    and first["MessageAttributes"]["color"]["StringValue"] == "blue"
    and first["Attributes"]["ApproximateReceiveCount"] == "1",
    first,
)
node(1).change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
again = receive_all(node(2), url, 1)
check("ChangeMessageVisibility to 0 makes it visible again", [m["Body"] for m in again] == ["first"], again)
node(0).delete_message(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"])
others = [m for m in msgs if m["Body"] != "first"]
vis = node(1).change_message_visibility_batch(
    QueueUrl=url,
    Entries=[{"Id": f"v{i}", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 120} for i, m in enumerate(others[:3])]
    + [{"Id": "bad", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 5}],
)
check(
    "ChangeMessageVisibilityBatch answers per entry",
    len(vis["Successful"]) == 3 and [f["Id"] for f in vis["Failed"]] == ["bad"] and vis["Failed"][0]["SenderFault"],
    vis,
)
deleted = node(2).delete_message_batch(
    QueueUrl=url, Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(others)]
)
check("DeleteMessageBatch deletes the ten", len(deleted["Successful"]) == 10 and not deleted.get("Failed"), deleted)
attrs = node(0).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
check("nothing is left", attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0", attrs)

# Attributes and tags.
node(1).set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "2", "ReceiveMessageWaitTimeSeconds": "1"})
attrs = node(2).get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds", "QueueArn"])["Attributes"]
check("SetQueueAttributes then GetQueueAttributes", attrs == {"DelaySeconds": "2", "QueueArn": "arn:aws:sqs:us-east-1:000000000000:aws-std"}, attrs)
node(0).tag_queue(QueueUrl=url, Tags={"team": "a", "env": "test"})
node(1).untag_queue(QueueUrl=url, TagKeys=["env"])
tags = node(2).list_queue_tags(QueueUrl=url)["Tags"]
check("TagQueue, UntagQueue, ListQueueTags", tags == {"team": "a"}, tags)

# FIFO: order per group, deduplication.
fifo = node(0).create_queue(
    QueueName="aws-orders.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
)["QueueUrl"]
for i in range(6):
    r = node(i).send_message(QueueUrl=fifo, MessageBody=f"o{i}", MessageGroupId="g" + str(i % 2))
    check(f"FIFO send {i} has a sequence number", r.get("SequenceNumber", "").isdigit(), r)
dup = node(1).send_message(QueueUrl=fifo, MessageBody="o0", MessageGroupId="g0")
fifo_msgs = receive_all(node(2), fifo, 6, VisibilityTimeout=60, AttributeNames=["All"])
order = {g: [m["Body"] for m in fifo_msgs if m["Attributes"]["MessageGroupId"] == g] for g in ("g0", "g1")}
check("FIFO keeps each group's order and drops the duplicate", order == {"g0": ["o0", "o2", "o4"], "g1": ["o1", "o3", "o5"]}, order)
check("a deduplicated send answers the first message's id", dup["MessageId"] in [m["MessageId"] for m in fifo_msgs], dup)

# Redrive to a dead-letter queue and back.
dlq = node(0).create_queue(QueueName="aws-dlq")["QueueUrl"]
dlq_arn = node(0).get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
src = node(1).create_queue(
    QueueName="aws-src",
    Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})},
)["QueueUrl"]
node(2).send_message(QueueUrl=src, MessageBody="poison")
r1 = receive_all(node(0), src, 1, VisibilityTimeout=0)
check("the poison message is received once", len(r1) == 1, r1)
again = node(1).receive_message(QueueUrl=src, WaitTimeSeconds=1).get("Messages", [])
check("past maxReceiveCount it is not received from its queue again", again == [], again)
moved = receive_all(node(1), dlq, 1, VisibilityTimeout=0)
check("it went to the dead-letter queue", [m["Body"] for m in moved] == ["poison"], moved)
sources = node(2).list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]
check("ListDeadLetterSourceQueues", sources == [endpoints[2] + "/000000000000/aws-src"], sources)
task = node(0).start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
tasks = node(1).list_message_move_tasks(SourceArn=dlq_arn)["Results"]
check("StartMessageMoveTask and ListMessageMoveTasks", tasks and tasks[0]["SourceArn"] == dlq_arn, tasks)
back = receive_all(node(2), src, 1)
check("the move task returns the message to its source", [m["Body"] for m in back] == ["poison"], back)
check_raises("CancelMessageMoveTask of a finished task is refused",
             "a finished task cannot be cancelled: UnsupportedOperation, typed",
             lambda: node(0).cancel_message_move_task(TaskHandle=task), node(0).exceptions.UnsupportedOperation,
             lambda e: e.response["Error"]["Code"] == "AWS.SimpleQueueService.UnsupportedOperation")

# Listing, purging, deleting.
listed = node(1).list_queues(QueueNamePrefix="aws-")["QueueUrls"]
check("ListQueues by prefix", sorted(u.rsplit("/", 1)[1] for u in listed) == ["aws-dlq", "aws-orders.fifo", "aws-src", "aws-std"], listed)
page = node(2).list_queues(QueueNamePrefix="aws-", MaxResults=2)
check("ListQueues pages", len(page["QueueUrls"]) == 2 and page.get("NextToken"), page)
node(0).send_message(QueueUrl=src, MessageBody="x")
node(1).purge_queue(QueueUrl=src)
check("PurgeQueue empties it", node(2).receive_message(QueueUrl=src, WaitTimeSeconds=2).get("Messages", []) == [])
node(0).delete_queue(QueueUrl=url)

# Errors arrive as the SDK's typed exceptions.
check_raises("a deleted queue is gone", "QueueDoesNotExist is raised typed",
             lambda: node(1).get_queue_url(QueueName="aws-std"), node(1).exceptions.QueueDoesNotExist,
             lambda e: e.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue")
check_raises("an unknown attribute is refused", "InvalidAttributeName is raised typed",
             lambda: node(2).create_queue(QueueName="aws-bad", Attributes={"NoSuchAttribute": "1"}),
             node(2).exceptions.InvalidAttributeName)
check_raises("repeated batch ids are refused", "BatchEntryIdsNotDistinct is raised typed",
             lambda: node(0).send_message_batch(QueueUrl=src, Entries=[{"Id": "same", "MessageBody": "a"},
                                                                       {"Id": "same", "MessageBody": "b"}]),
             node(0).exceptions.BatchEntryIdsNotDistinct)
check_refused("MaxNumberOfMessages over 10 is refused",
              lambda: node(1).receive_message(QueueUrl=src, MaxNumberOfMessages=11), "InvalidParameterValue")
check_refused("a bad receipt handle is ReceiptHandleIsInvalid",
              lambda: node(2).delete_message(QueueUrl=src, ReceiptHandle="garbage"), "ReceiptHandleIsInvalid")

# A body larger than the limit is refused before it is read.
conn = http.client.HTTPSConnection(endpoints[0].split("://", 1)[1], context=ssl.create_default_context(cafile=ca))
conn.putrequest("POST", "/")
conn.putheader("X-Amz-Target", "AmazonSQS.ListQueues")
conn.putheader("Content-Type", "application/x-amz-json-1.0")
conn.putheader("Content-Length", str(64 * 1024 * 1024))
conn.endheaders()
big = conn.getresponse()
check("a 64 MiB body is refused before it is read: 413 RequestEntityTooLarge", big.status == 413 and "RequestEntityTooLarge" in big.read().decode(), big.status)
conn.close()

if protocol == "query":
    # The Java v1 SDK posts to the queue's URL and leaves QueueUrl out.
    import urllib.parse
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    form = urllib.parse.urlencode({"Action": "SendMessage", "Version": "2012-11-05", "MessageBody": "by url"})
    request = AWSRequest(method="POST", url=src, data=form,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(key, secret), "sqs", "us-east-1").add_auth(request)
    host = urllib.parse.urlsplit(src)
    conn = http.client.HTTPSConnection(host.netloc, context=ssl.create_default_context(cafile=ca))
    conn.request("POST", host.path, body=form, headers=dict(request.headers.items()))
    answer = conn.getresponse()
    text = answer.read().decode()
    check("a form posted to the queue's URL sends to that queue",
          answer.status == 200 and "<SendMessageResponse" in text and "<MessageId>" in text, text)
    conn.close()
    got = receive_all(node(1), src, 1)
    check("the message sent by URL is there", [m["Body"] for m in got] == ["by url"], got)
    node(2).delete_message(QueueUrl=src, ReceiptHandle=got[0]["ReceiptHandle"])

# Authentication and authorisation.
check_wrong_secret("sqs", lambda wrong: wrong.list_queues())
reader = client("sqs", 1, reader_key, reader_secret)
check("a read-only key may list", len(reader.list_queues(QueueNamePrefix="aws-")["QueueUrls"]) == 3)
check_refused("a read-only key may not send: AccessDenied",
              lambda: reader.send_message(QueueUrl=src, MessageBody="no"), "AccessDenied")
check("the refused send changed nothing", node(2).receive_message(QueueUrl=src, WaitTimeSeconds=2).get("Messages", []) == [])

# STS, which tools ask first.
sts = boto3.client("sts", endpoint_url=endpoints[2], region_name="us-east-1",
                   aws_access_key_id=key, aws_secret_access_key=secret, verify=ca)
me = sts.get_caller_identity()
check("GetCallerIdentity names the key's principal", me["Arn"] == "arn:aws:iam::000000000000:user/sdk-user" and me["Account"] == "000000000000" and me["UserId"] == key, me)
check_refused("GetCallerIdentity with a wrong secret is refused",
              lambda: boto3.client("sts", endpoint_url=endpoints[0], region_name="us-east-1", aws_access_key_id=key,
                                   aws_secret_access_key="wrong", verify=ca).get_caller_identity(),
              "SignatureDoesNotMatch")

# The aws CLI, unmodified.
env = cli_env()
cli = ["aws", "--endpoint-url", endpoints[0], "--ca-bundle", ca, "--output", "json", "sqs"]
out = subprocess.run(cli + ["send-message", "--queue-url", src, "--message-body", "from the cli"], env=env, capture_output=True, text=True)
check("aws sqs send-message", out.returncode == 0 and json.loads(out.stdout)["MD5OfMessageBody"], out.stderr)
out = subprocess.run(cli + ["receive-message", "--queue-url", src, "--wait-time-seconds", "2"], env=env, capture_output=True, text=True)
check("aws sqs receive-message", out.returncode == 0 and json.loads(out.stdout)["Messages"][0]["Body"] == "from the cli", out.stdout + out.stderr)
out = subprocess.run(cli + ["get-queue-url", "--queue-name", "aws-std"], env=env, capture_output=True, text=True)
check("aws sqs reports QueueDoesNotExist", out.returncode != 0 and "NonExistentQueue" in out.stderr, out.stderr)
out = subprocess.run(["aws", "--endpoint-url", endpoints[1], "--ca-bundle", ca, "--output", "json", "sts", "get-caller-identity"], env=env, capture_output=True, text=True)
check("aws sts get-caller-identity", out.returncode == 0 and json.loads(out.stdout)["Arn"].endswith(":user/sdk-user"), out.stdout + out.stderr)
print(f"all SQS checks passed over the {protocol} protocol")
