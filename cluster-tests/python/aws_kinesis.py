"""Drives every Kinesis action through boto3 and the aws CLI, unmodified,
over AWS JSON 1.1 against a Sluice cluster (each call goes to another
node): streams with resharding (split, merge, update shard count), every
iterator type, consumers, tags, and the errors the SDK raises typed. Exits
non-zero on the first check that fails.

Usage: aws_kinesis.py ENDPOINTS CA KEY SECRET READER_KEY READER_SECRET (see
awscheck.py)
"""

import datetime
import json
import subprocess
import time

from awscheck import ACCOUNT, ca, check, check_raises, check_refused, check_wrong_secret, cli_env, client, endpoints, reader_key, reader_secret

nodes = [client("kinesis", i) for i in range(len(endpoints))]


def node(i):
    return nodes[i % len(nodes)]


def read_shard(k, stream, shard, want, kind="TRIM_HORIZON", **kw):
    """The shard's records from the iterator `kind` on, following the
    iterators until `want` have come (GetRecords reads the node's own
    replica, as Kinesis reads are eventually consistent) or the shard
    ends; and the last answer."""
    it = k.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType=kind, **kw)["ShardIterator"]
    out = []
    deadline = time.time() + 30
    while time.time() < deadline:
        r = k.get_records(ShardIterator=it, Limit=100)
        out.extend(r["Records"])
        if "NextShardIterator" not in r or (len(out) >= want and not r["Records"]):
            break
        it = r["NextShardIterator"]
    return out, r


check("boto3 speaks Kinesis's AWS JSON 1.1", nodes[0]._service_model.metadata["protocol"] == "json"
      and nodes[0]._service_model.metadata["jsonVersion"] == "1.1")

# Streams.
node(0).create_stream(StreamName="aws-clicks", ShardCount=2)
node(1).get_waiter("stream_exists").wait(StreamName="aws-clicks", WaiterConfig={"Delay": 1})
desc = node(2).describe_stream(StreamName="aws-clicks")["StreamDescription"]
arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/aws-clicks"
check("CreateStream, DescribeStream", desc["StreamARN"] == arn and desc["StreamStatus"] == "ACTIVE"
      and len(desc["Shards"]) == 2 and desc["RetentionPeriodHours"] == 24
      and isinstance(desc["StreamCreationTimestamp"], datetime.datetime), desc)
summary = node(0).describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
check("DescribeStreamSummary by ARN", summary["OpenShardCount"] == 2 and summary["StreamName"] == "aws-clicks", summary)
node(1).create_stream(StreamName="aws-other", ShardCount=1)
page = node(2).list_streams(Limit=1)
check("ListStreams pages", page["StreamNames"] == ["aws-clicks"] and page["HasMoreStreams"] and page.get("NextToken"), page)
rest = node(0).list_streams(NextToken=page["NextToken"])
check("ListStreams' next page", "aws-other" in rest["StreamNames"] and "aws-clicks" not in rest["StreamNames"], rest)
shards = node(1).list_shards(StreamName="aws-clicks")["Shards"]
check("ListShards", [s["ShardId"] for s in shards] == ["shardId-000000000000", "shardId-000000000001"]
      and shards[0]["HashKeyRange"]["StartingHashKey"] == "0", shards)

# Records, and every iterator type.
first = node(2).put_record(StreamName="aws-clicks", Data=b"\x00first", PartitionKey="a", ExplicitHashKey="0")
check("PutRecord", first["ShardId"] == "shardId-000000000000" and first["SequenceNumber"].isdigit(), first)
# SDKs send timestamps in whole seconds: wait for the clock's next second,
# so that AT_TIMESTAMP below falls between the first put and the batch.
time.sleep(1.01 - time.time() % 1)
before = datetime.datetime.fromtimestamp(int(time.time()), datetime.timezone.utc)
batch = node(0).put_records(StreamName="aws-clicks", Records=[
    {"Data": f"r{i}".encode(), "PartitionKey": f"k{i}", "ExplicitHashKey": "0"} for i in range(5)
])
check("PutRecords", batch["FailedRecordCount"] == 0 and len(batch["Records"]) == 5
      and all(r["ShardId"] == "shardId-000000000000" for r in batch["Records"]), batch)
got, last = read_shard(node(1), "aws-clicks", "shardId-000000000000", 6)
check("TRIM_HORIZON reads all six in order, data as sent",
      [r["Data"] for r in got] == [b"\x00first"] + [f"r{i}".encode() for i in range(5)]
      and got[0]["PartitionKey"] == "a" and isinstance(got[0]["ApproximateArrivalTimestamp"], datetime.datetime)
      and last["MillisBehindLatest"] == 0, got)
seqs = [r["SequenceNumber"] for r in got]
at, _ = read_shard(node(2), "aws-clicks", "shardId-000000000000", 4, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[2])
check("AT_SEQUENCE_NUMBER", [r["SequenceNumber"] for r in at] == seqs[2:], at)
after, _ = read_shard(node(0), "aws-clicks", "shardId-000000000000", 3, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[2])
check("AFTER_SEQUENCE_NUMBER", [r["SequenceNumber"] for r in after] == seqs[3:], after)
stamped, _ = read_shard(node(1), "aws-clicks", "shardId-000000000000", 5, "AT_TIMESTAMP", Timestamp=before)
check("AT_TIMESTAMP", [r["Data"] for r in stamped] == [f"r{i}".encode() for i in range(5)], stamped)
latest = node(2).get_shard_iterator(StreamName="aws-clicks", ShardId="shardId-000000000000",
                                    ShardIteratorType="LATEST")["ShardIterator"]
node(0).put_record(StreamName="aws-clicks", Data=b"late", PartitionKey="z", ExplicitHashKey="1")
late = []
deadline = time.time() + 30
while not late and time.time() < deadline:
    r = node(1).get_records(ShardIterator=latest)
    late, latest = r["Records"], r["NextShardIterator"]
check("LATEST sees only what came after it", [x["Data"] for x in late] == [b"late"], r)

# Retention.
node(2).increase_stream_retention_period(StreamName="aws-clicks", RetentionPeriodHours=48)
check("IncreaseStreamRetentionPeriod", node(0).describe_stream_summary(StreamName="aws-clicks")
      ["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48)
node(1).decrease_stream_retention_period(StreamName="aws-clicks", RetentionPeriodHours=24)
check("DecreaseStreamRetentionPeriod", node(2).describe_stream_summary(StreamName="aws-clicks")
      ["StreamDescriptionSummary"]["RetentionPeriodHours"] == 24)

# Resharding: split, merge, update the shard count.
parent = shards[0]
middle = str((int(parent["HashKeyRange"]["StartingHashKey"]) + int(parent["HashKeyRange"]["EndingHashKey"])) // 2)
node(0).split_shard(StreamName="aws-clicks", ShardToSplit=parent["ShardId"], NewStartingHashKey=middle)
after_split = node(1).list_shards(StreamName="aws-clicks")["Shards"]
children = [s for s in after_split if s.get("ParentShardId") == parent["ShardId"]]
children_of_first = children
check("SplitShard makes two children of the shard", len(children) == 2
      and "EndingSequenceNumber" in next(s for s in after_split if s["ShardId"] == parent["ShardId"])["SequenceNumberRange"],
      after_split)
_, end = read_shard(node(2), "aws-clicks", parent["ShardId"], 7)
check("the closed parent's last read names its children",
      sorted(c["ShardId"] for c in end.get("ChildShards", [])) == sorted(c["ShardId"] for c in children)
      and "NextShardIterator" not in end, end)
node(0).merge_shards(StreamName="aws-clicks", ShardToMerge=children[0]["ShardId"],
                     AdjacentShardToMerge=children[1]["ShardId"])
after_merge = node(1).list_shards(StreamName="aws-clicks")["Shards"]
merged = [s for s in after_merge if s.get("ParentShardId") in (children[0]["ShardId"], children[1]["ShardId"])]
check("MergeShards makes one child of the two", len(merged) == 1
      and {merged[0]["ParentShardId"], merged[0]["AdjacentParentShardId"]} == {c["ShardId"] for c in children}, after_merge)
scaled = node(2).update_shard_count(StreamName="aws-clicks", TargetShardCount=4, ScalingType="UNIFORM_SCALING")
check("UpdateShardCount", scaled["TargetShardCount"] == 4 and scaled["StreamName"] == "aws-clicks", scaled)
check("four open shards after it", node(0).describe_stream_summary(StreamName="aws-clicks")
      ["StreamDescriptionSummary"]["OpenShardCount"] == 4)
page = node(1).list_shards(StreamName="aws-clicks", MaxResults=2)
check("ListShards pages with a token", len(page["Shards"]) == 2 and page.get("NextToken"), page)
more = node(2).list_shards(NextToken=page["NextToken"])
check("ListShards' next page", more["Shards"] and more["Shards"][0]["ShardId"] not in [s["ShardId"] for s in page["Shards"]], more)

# Tags.
node(0).add_tags_to_stream(StreamName="aws-clicks", Tags={"team": "a", "env": "test", "tier": "1"})
node(1).remove_tags_from_stream(StreamName="aws-clicks", TagKeys=["tier"])
tags = node(2).list_tags_for_stream(StreamName="aws-clicks")
check("AddTagsToStream, RemoveTagsFromStream, ListTagsForStream",
      tags["Tags"] == [{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "a"}] and not tags["HasMoreTags"], tags)
first_tag = node(0).list_tags_for_stream(StreamName="aws-clicks", Limit=1)
check("ListTagsForStream pages", first_tag["Tags"] == [{"Key": "env", "Value": "test"}] and first_tag["HasMoreTags"], first_tag)

# Consumers.
consumer = node(1).register_stream_consumer(StreamARN=arn, ConsumerName="app")["Consumer"]
check("RegisterStreamConsumer", consumer["ConsumerARN"].startswith(arn + "/consumer/app:")
      and consumer["ConsumerStatus"] in ("CREATING", "ACTIVE"), consumer)
described = node(2).describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
check("DescribeStreamConsumer", described["ConsumerName"] == "app" and described["StreamARN"] == arn, described)
deadline = time.time() + 30
while described["ConsumerStatus"] != "ACTIVE" and time.time() < deadline:
    described = node(2).describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
# SubscribeToShard over AWS's event-stream encoding: the closed first shard
# from its start, then its children at its end.
sub = node(0).subscribe_to_shard(ConsumerARN=consumer["ConsumerARN"], ShardId="shardId-000000000000",
                                 StartingPosition={"Type": "TRIM_HORIZON"})
pushed, children = [], []
for event in sub["EventStream"]:
    e = event["SubscribeToShardEvent"]
    pushed.extend(r["Data"] for r in e["Records"])
    children = [c["ShardId"] for c in e.get("ChildShards", [])]
    if children:
        break
sub["EventStream"].close()
check("SubscribeToShard pushes every record of the shard, then names its children",
      pushed == [b"\x00first"] + [f"r{i}".encode() for i in range(5)] + [b"late"]
      and sorted(children) == sorted(c["ShardId"] for c in children_of_first), (pushed, children))
listed = node(0).list_stream_consumers(StreamARN=arn)["Consumers"]
check("ListStreamConsumers", [c["ConsumerName"] for c in listed] == ["app"], listed)
node(1).deregister_stream_consumer(StreamARN=arn, ConsumerName="app")
check("DeregisterStreamConsumer", node(2).list_stream_consumers(StreamARN=arn)["Consumers"] == [])

# Errors arrive as the SDK's typed exceptions.
check_raises("a missing stream is refused", "ResourceNotFoundException is raised typed",
             lambda: node(0).describe_stream(StreamName="no-such-stream"),
             node(0).exceptions.ResourceNotFoundException,
             lambda e: e.response["Error"]["Code"] == "ResourceNotFoundException")
check_raises("AT_SEQUENCE_NUMBER without a number is refused", "InvalidArgumentException is raised typed",
             lambda: node(1).get_shard_iterator(StreamName="aws-clicks", ShardId="shardId-000000000000",
                                                ShardIteratorType="AT_SEQUENCE_NUMBER"),
             node(1).exceptions.InvalidArgumentException,
             lambda e: "StartingSequenceNumber" in e.response["Error"]["Message"]
             or "starting_sequence_number" in e.response["Error"]["Message"])
check_raises("a second stream of the same name is refused", "ResourceInUseException is raised typed",
             lambda: node(2).create_stream(StreamName="aws-clicks", ShardCount=1),
             node(2).exceptions.ResourceInUseException)
check_refused("a record over 1 MiB with its partition key is refused",
              lambda: node(0).put_record(StreamName="aws-clicks", Data=b"x" * (1024 * 1024), PartitionKey="k"),
              "InvalidArgumentException")

# Authentication and authorisation.
check_wrong_secret("kinesis", lambda wrong: wrong.list_streams())
reader = client("kinesis", 1, reader_key, reader_secret)
check("a read-only key may list", "aws-clicks" in reader.list_streams()["StreamNames"])
check_refused("a read-only key may not put: AccessDeniedException, Kinesis's code",
              lambda: reader.put_record(StreamName="aws-clicks", Data=b"no", PartitionKey="k"), "AccessDeniedException")

node(2).delete_stream(StreamName="aws-other")
check("DeleteStream", "aws-other" not in node(0).list_streams()["StreamNames"])

# The aws CLI, unmodified.
env = cli_env()
cli = ["aws", "--endpoint-url", endpoints[1], "--ca-bundle", ca, "--output", "json", "kinesis"]
out = subprocess.run(cli + ["put-record", "--stream-name", "aws-clicks", "--partition-key", "cli",
                            "--data", "ZnJvbSB0aGUgY2xp"], env=env, capture_output=True, text=True)
check("aws kinesis put-record", out.returncode == 0 and json.loads(out.stdout)["SequenceNumber"], out.stdout + out.stderr)
out = subprocess.run(cli + ["describe-stream-summary", "--stream-name", "aws-clicks"], env=env, capture_output=True, text=True)
check("aws kinesis describe-stream-summary", out.returncode == 0
      and json.loads(out.stdout)["StreamDescriptionSummary"]["StreamARN"] == arn, out.stdout + out.stderr)
out = subprocess.run(cli + ["describe-stream", "--stream-name", "nope"], env=env, capture_output=True, text=True)
check("aws kinesis reports ResourceNotFoundException", out.returncode != 0 and "ResourceNotFoundException" in out.stderr, out.stderr)
print("all Kinesis checks passed")
