"""Drives the EventBridge actions Sluice serves through boto3 and the aws
CLI, unmodified, over AWS JSON 1.1 against a Sluice cluster (each call goes
to another node): buses, rules with event patterns, queue, stream, topic
and transformed targets, PutEvents with per-entry results, TestEventPattern,
the errors the SDK raises typed, and authorisation; then EventBridge
Scheduler's schedules over its REST-JSON protocol. Exits non-zero on the
first check that fails.

Usage: aws_events.py ENDPOINTS CA KEY SECRET READER_KEY READER_SECRET (see
awscheck.py)
"""

import datetime
import json
import subprocess
import time

import awscheck
from awscheck import ACCOUNT, ca, check, check_raises, check_refused, check_wrong_secret, cli_env, client, endpoints, reader_key, reader_secret

events = [client("events", i) for i in range(len(endpoints))]
sqs = client("sqs", 0)
sns = client("sns", 1)
kinesis = client("kinesis", 2)
protocol = events[0]._service_model.metadata["protocol"]
check("boto3 speaks EventBridge's JSON 1.1 protocol", protocol == "json", protocol)


def queue(name):
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive_all(url, want):
    return awscheck.receive_all(sqs, url, want)


# Buses.
bus_arn = events[0].create_event_bus(Name="aws-app", Description="orders")["EventBusArn"]
check("CreateEventBus answers the bus's ARN", bus_arn == f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/aws-app", bus_arn)
check_raises("a second CreateEventBus is refused", "ResourceAlreadyExistsException is raised typed",
             lambda: events[1].create_event_bus(Name="aws-app"),
             events[1].exceptions.ResourceAlreadyExistsException)
bus = events[1].describe_event_bus(Name="aws-app")
check("DescribeEventBus", bus["Name"] == "aws-app" and bus["Arn"] == bus_arn and bus["Description"] == "orders"
      and isinstance(bus["CreationTime"], datetime.datetime), bus)
default = events[2].describe_event_bus()
check("DescribeEventBus without a name is the default bus", default["Name"] == "default", default)
names = [b["Name"] for b in events[0].list_event_buses()["EventBuses"]]
check("ListEventBuses", "default" in names and "aws-app" in names, names)
check_refused("the default bus cannot be deleted", lambda: events[1].delete_event_bus(Name="default"),
              "ValidationException")

# Rules.
pattern = {"source": ["shop"], "detail": {"total": [{"numeric": [">=", 100]}]}}
rule_arn = events[0].put_rule(Name="big", EventBusName="aws-app", EventPattern=json.dumps(pattern))["RuleArn"]
check("PutRule answers the rule's ARN", rule_arn == f"arn:aws:events:us-east-1:{ACCOUNT}:rule/aws-app/big", rule_arn)
rule = events[1].describe_rule(Name="big", EventBusName="aws-app")
check("DescribeRule", rule["State"] == "ENABLED" and json.loads(rule["EventPattern"]) == pattern
      and rule["EventBusName"] == "aws-app" and rule["Arn"] == rule_arn, rule)
events[2].put_rule(Name="everything", EventBusName="aws-app", EventPattern='{"source": [{"prefix": ""}]}')
listed = [r["Name"] for r in events[0].list_rules(EventBusName="aws-app")["Rules"]]
check("ListRules", listed == ["big", "everything"], listed)
check_raises("a bad pattern is refused", "InvalidEventPatternException is raised typed",
             lambda: events[1].put_rule(Name="bad", EventPattern='{"source": "shop"}'),
             events[1].exceptions.InvalidEventPatternException,
             lambda e: "source" in e.response["Error"]["Message"])
check_raises("a missing rule is refused", "ResourceNotFoundException is raised typed",
             lambda: events[2].describe_rule(Name="nope", EventBusName="aws-app"),
             events[2].exceptions.ResourceNotFoundException)

# Targets: a queue, a stream keyed by a path, a topic, a transformed queue.
big_url, big_arn = queue("aws-ev-big")
shaped_url, shaped_arn = queue("aws-ev-shaped")
copies_url, copies_arn = queue("aws-ev-copies")
kinesis.create_stream(StreamName="aws-ev-stream", ShardCount=1)
stream_arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/aws-ev-stream"
topic_arn = sns.create_topic(Name="aws-ev-topic")["TopicArn"]
sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=copies_arn, Attributes={"RawMessageDelivery": "true"})
r = events[0].put_targets(Rule="big", EventBusName="aws-app", Targets=[
    {"Id": "queue", "Arn": big_arn},
    {"Id": "stream", "Arn": stream_arn, "KinesisParameters": {"PartitionKeyPath": "$.detail.customer"}},
    {"Id": "topic", "Arn": topic_arn},
    {"Id": "shaped", "Arn": shaped_arn, "InputTransformer": {
        "InputPathsMap": {"who": "$.detail.customer", "total": "$.detail.total"},
        "InputTemplate": '{"text": "<who> spent <total>", "rule": "<aws.events.rule-name>"}'}},
])
check("PutTargets", r["FailedEntryCount"] == 0 and r["FailedEntries"] == [], r)
targets = events[1].list_targets_by_rule(Rule="big", EventBusName="aws-app")["Targets"]
check("ListTargetsByRule", sorted(t["Id"] for t in targets) == ["queue", "shaped", "stream", "topic"]
      and any(t.get("KinesisParameters", {}).get("PartitionKeyPath") == "$.detail.customer" for t in targets), targets)
r = events[2].put_targets(Rule="big", EventBusName="aws-app", Targets=[
    {"Id": f"extra{i}", "Arn": big_arn} for i in range(2)])
check("a sixth target fails on its own", r["FailedEntryCount"] == 1
      and r["FailedEntries"][0]["ErrorCode"] == "LimitExceededException", r)
r = events[0].remove_targets(Rule="big", EventBusName="aws-app", Ids=["extra0", "extra1"])
check("RemoveTargets: a missing id fails on its own", r["FailedEntryCount"] == 1
      and r["FailedEntries"][0]["TargetId"] == "extra1", r)

# Events.
at = datetime.datetime(2026, 12, 7, 10, 30, 0, tzinfo=datetime.timezone.utc)
r = events[0].put_events(Entries=[
    {"EventBusName": "aws-app", "Source": "shop", "DetailType": "Order Placed",
     "Detail": json.dumps({"customer": "ann", "total": 150}), "Resources": ["arn:aws:shop:order/1"], "Time": at},
    {"EventBusName": "aws-app", "Source": "shop", "DetailType": "Order Placed",
     "Detail": json.dumps({"customer": "bob", "total": 20})},
    {"EventBusName": bus_arn, "Source": "shop", "DetailType": "Order Placed", "Detail": "[not an object]"},
])
check("PutEvents answers an entry each", len(r["Entries"]) == 3 and r["FailedEntryCount"] == 1, r)
check("an accepted entry has its event id", len(r["Entries"][0].get("EventId", "")) == 36, r)
check("a bad entry fails on its own", r["Entries"][2].get("ErrorCode") == "MalformedDetail", r)
big_id = r["Entries"][0]["EventId"]
got = receive_all(big_url, 1)
check("the matching event reached the queue, the other did not", len(got) == 1, got)
e = json.loads(got[0]["Body"])
check("the event is in EventBridge's envelope", e["id"] == big_id and e["version"] == "0" and e["source"] == "shop"
      and e["detail-type"] == "Order Placed" and e["account"] == ACCOUNT and e["region"] == "us-east-1"
      and e["time"] == "2026-12-07T10:30:00Z" and e["resources"] == ["arn:aws:shop:order/1"]
      and e["detail"] == {"customer": "ann", "total": 150}, e)
shaped = receive_all(shaped_url, 1)
check("an input transformer shapes the event",
      [json.loads(m["Body"]) for m in shaped] == [{"text": "ann spent 150", "rule": "big"}], shaped)
copies = receive_all(copies_url, 1)
check("a topic target publishes the event", [json.loads(m["Body"])["id"] for m in copies] == [big_id], copies)
shard = kinesis.list_shards(StreamName="aws-ev-stream")["Shards"][0]["ShardId"]
it = kinesis.get_shard_iterator(StreamName="aws-ev-stream", ShardId=shard,
                                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
records = kinesis.get_records(ShardIterator=it)["Records"]
check("a stream target puts a record keyed by its path",
      [(x["PartitionKey"], json.loads(x["Data"])["id"]) for x in records] == [("ann", big_id)], records)

# Disabled rules match nothing.
events[1].disable_rule(Name="big", EventBusName="aws-app")
check("DisableRule", events[2].describe_rule(Name="big", EventBusName="aws-app")["State"] == "DISABLED")
events[0].put_events(Entries=[{"EventBusName": "aws-app", "Source": "shop", "DetailType": "x",
                               "Detail": json.dumps({"customer": "cy", "total": 500})}])
check("a disabled rule delivers nothing", receive_all(big_url, 1) == [])
events[1].enable_rule(Name="big", EventBusName="aws-app")
check("EnableRule", events[2].describe_rule(Name="big", EventBusName="aws-app")["State"] == "ENABLED")

# TestEventPattern.
ok = events[0].test_event_pattern(EventPattern=json.dumps(pattern), Event=json.dumps(
    {"id": "1", "source": "shop", "detail-type": "x", "account": ACCOUNT, "time": "2026-12-07T10:30:00Z",
     "region": "us-east-1", "resources": [], "detail": {"total": 100}}))["Result"]
check("TestEventPattern: a match", ok is True, ok)
no = events[1].test_event_pattern(EventPattern='{"source": [{"wildcard": "sh*x"}]}', Event=json.dumps({"source": "shop"}))
check("TestEventPattern: no match", no["Result"] is False, no)

# Authentication and authorisation.
check_wrong_secret("events", lambda wrong: wrong.list_event_buses())
reader = client("events", 1, reader_key, reader_secret)
check("a read-only key may describe", reader.describe_rule(Name="big", EventBusName="aws-app")["Name"] == "big")
check_refused("a read-only key may not put events: AccessDenied", lambda: reader.put_events(Entries=[
    {"EventBusName": "aws-app", "Source": "shop", "DetailType": "x", "Detail": "{}"}]), "AccessDenied")

# The aws CLI, unmodified.
env = cli_env()
cli = ["aws", "--endpoint-url", endpoints[2], "--ca-bundle", ca, "--output", "json", "events"]
entries = json.dumps([{"EventBusName": "aws-app", "Source": "shop", "DetailType": "cli",
                       "Detail": json.dumps({"customer": "dee", "total": 999})}])
out = subprocess.run(cli + ["put-events", "--entries", entries], env=env, capture_output=True, text=True)
check("aws events put-events", out.returncode == 0 and json.loads(out.stdout)["FailedEntryCount"] == 0,
      out.stdout + out.stderr)
check("the CLI's event was delivered",
      [json.loads(m["Body"])["detail"]["customer"] for m in receive_all(big_url, 1)] == ["dee"])
out = subprocess.run(cli + ["list-rules", "--event-bus-name", "aws-app"], env=env, capture_output=True, text=True)
check("aws events list-rules", out.returncode == 0 and "everything" in out.stdout, out.stdout + out.stderr)

# Archive, then replay a time range to the rule's queue.
archive = events[0].create_archive(ArchiveName="aws-orders", EventSourceArn=bus_arn, RetentionDays=7)
check("CreateArchive", archive["ArchiveArn"] == f"arn:aws:events:us-east-1:{ACCOUNT}:archive/aws-orders", archive)
check_refused("a bus an archive keeps cannot be deleted", lambda: events[1].delete_event_bus(Name="aws-app"),
              "ValidationException")


def next_second():
    """The next whole second, once this machine's clock (which the leader
    stamps events with) has passed it: a range boundary no event shares, in
    the whole seconds the JSON protocol sends times in."""
    t = int(time.time()) + 1
    while time.time() < t:
        time.sleep(0.01)
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


start = next_second()
r = events[1].put_events(Entries=[{"EventBusName": "aws-app", "Source": "shop", "DetailType": "archived",
                                   "Detail": json.dumps({"customer": c, "total": 100 + i})}
                                  for i, c in enumerate(["eve", "fay"])])
check("events to archive", r["FailedEntryCount"] == 0, r)
end = next_second()
check("the archived events reached the queue as they were put",
      sorted(json.loads(m["Body"])["detail"]["customer"] for m in receive_all(big_url, 2)) == ["eve", "fay"])
described = events[2].describe_archive(ArchiveName="aws-orders")
check("DescribeArchive counts them", described["EventCount"] == 2 and described["RetentionDays"] == 7
      and described["EventSourceArn"] == bus_arn, described)
check("ListArchives", [a["ArchiveName"] for a in events[0].list_archives(EventSourceArn=bus_arn)["Archives"]]
      == ["aws-orders"])
replay = events[0].start_replay(ReplayName="aws-again", EventSourceArn=archive["ArchiveArn"],
                                EventStartTime=start, EventEndTime=end,
                                Destination={"Arn": bus_arn, "FilterArns": [rule_arn]})
check("StartReplay", replay["State"] in ("STARTING", "RUNNING", "COMPLETED"), replay)
deadline = time.time() + 30
while events[1].describe_replay(ReplayName="aws-again")["State"] != "COMPLETED" and time.time() < deadline:
    time.sleep(0.2)
done = events[1].describe_replay(ReplayName="aws-again")
check("DescribeReplay: completed", done["State"] == "COMPLETED" and done["Destination"]["FilterArns"] == [rule_arn], done)
again = [json.loads(m["Body"]) for m in receive_all(big_url, 2)]
check("the replay delivered the range again, marked",
      sorted(e["detail"]["customer"] for e in again) == ["eve", "fay"]
      and all(e["replay-name"] == "aws-again" for e in again), again)
check("ListReplays", [x["ReplayName"] for x in events[2].list_replays(State="COMPLETED")["Replays"]] == ["aws-again"])
check_refused("a finished replay cannot be cancelled", lambda: events[0].cancel_replay(ReplayName="aws-again"),
              "IllegalStatusException")
events[1].delete_archive(ArchiveName="aws-orders")

# Removing things.
r = events[0].remove_targets(Rule="big", EventBusName="aws-app", Ids=["queue", "stream", "topic", "shaped"])
check("RemoveTargets", r["FailedEntryCount"] == 0, r)
events[1].delete_rule(Name="big", EventBusName="aws-app")
events[2].delete_event_bus(Name="aws-app")
names = [b["Name"] for b in events[0].list_event_buses()["EventBuses"]]
check("DeleteEventBus", "aws-app" not in names, names)

# A target with a retry policy: its queue is made after the event was put,
# and a retry delivers it.
events[0].put_rule(Name="retried", EventPattern=json.dumps({"source": ["retry.me"]}))
late_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:aws-late"
r = events[1].put_targets(Rule="retried", Targets=[
    {"Id": "late", "Arn": late_arn, "RetryPolicy": {"MaximumRetryAttempts": 5, "MaximumEventAgeInSeconds": 600}}])
check("PutTargets takes a RetryPolicy", r["FailedEntryCount"] == 0, r)
listed = events[2].list_targets_by_rule(Rule="retried")["Targets"][0]
check("ListTargetsByRule shows it",
      listed["RetryPolicy"] == {"MaximumRetryAttempts": 5, "MaximumEventAgeInSeconds": 600}, listed)
put = events[0].put_events(Entries=[{"Source": "retry.me", "DetailType": "late", "Detail": "{}"}])
late_url, _ = queue("aws-late")
late = [json.loads(m["Body"]) for m in receive_all(late_url, 1)]
check("the retry delivered the event once its queue existed",
      [e["id"] for e in late] == [put["Entries"][0]["EventId"]], late)
events[0].remove_targets(Rule="retried", Ids=["late"])
events[0].delete_rule(Name="retried")

# EventBridge Scheduler, over its REST-JSON protocol.
scheduler = [client("scheduler", i) for i in range(len(endpoints))]
protocol = scheduler[0]._service_model.metadata["protocol"]
check("boto3 speaks Scheduler's REST-JSON protocol", protocol == "rest-json", protocol)
tick_url, tick_arn = queue("aws-ticks")
bus_seen_url, bus_seen_arn = queue("aws-scheduled-events")
events[0].put_rule(Name="scheduled", EventPattern=json.dumps({"source": ["aws.app.scheduler"]}))
events[0].put_targets(Rule="scheduled", Targets=[{"Id": "q", "Arn": bus_seen_arn}])
role = f"arn:aws:iam::{ACCOUNT}:role/scheduler"
# A one-time schedule two seconds ahead (at() is the schedule's local time:
# UTC here), deleted once it fired.
soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)).replace(microsecond=0)
at = soon.strftime("%Y-%m-%dT%H:%M:%S")
made = scheduler[0].create_schedule(
    Name="aws-once", ScheduleExpression=f"at({at})", FlexibleTimeWindow={"Mode": "OFF"},
    ActionAfterCompletion="DELETE",
    Target={"Arn": tick_arn, "RoleArn": role,
            "Input": json.dumps({"when": "<aws.scheduler.scheduled-time>", "id": "<aws.scheduler.execution-id>"})})
check("CreateSchedule answers the schedule's ARN",
      made["ScheduleArn"] == f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/default/aws-once", made)
scheduler[1].create_schedule(
    Name="aws-to-bus", ScheduleExpression=f"at({at})", FlexibleTimeWindow={"Mode": "OFF"},
    Target={"Arn": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/default", "RoleArn": role,
            "Input": json.dumps({"job": "nightly"}),
            "EventBridgeParameters": {"Source": "aws.app.scheduler", "DetailType": "Tick"}})
fired = receive_all(tick_url, 1)
body = json.loads(fired[0]["Body"]) if fired else {}
check("the one-time schedule fired once, with its context filled in",
      len(fired) == 1 and body.get("when") == soon.strftime("%Y-%m-%dT%H:%M:%SZ") and len(body.get("id", "")) == 36, fired)
routed = [json.loads(m["Body"]) for m in receive_all(bus_seen_url, 1)]
check("a bus target put an event the bus's rule routed",
      len(routed) == 1 and routed[0]["detail-type"] == "Tick" and routed[0]["detail"] == {"job": "nightly"}, routed)
check_raises("a schedule that completed is deleted", "GetSchedule raises ResourceNotFoundException typed",
             lambda: scheduler[2].get_schedule(Name="aws-once"), scheduler[2].exceptions.ResourceNotFoundException)
scheduler[2].create_schedule(
    Name="aws-weekdays", ScheduleExpression="cron(0 9 ? * MON-FRI *)", ScheduleExpressionTimezone="Europe/Paris",
    FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}, State="DISABLED",
    Target={"Arn": tick_arn, "RoleArn": role, "RetryPolicy": {"MaximumEventAgeInSeconds": 3600}})
got = scheduler[0].get_schedule(Name="aws-weekdays")
check("GetSchedule", got["ScheduleExpression"] == "cron(0 9 ? * MON-FRI *)"
      and got["ScheduleExpressionTimezone"] == "Europe/Paris" and got["State"] == "DISABLED"
      and got["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}
      and got["Target"]["Arn"] == tick_arn and got["Target"]["RetryPolicy"]["MaximumEventAgeInSeconds"] == 3600
      and isinstance(got["CreationDate"], datetime.datetime), got)
scheduler[1].update_schedule(
    Name="aws-weekdays", ScheduleExpression="rate(5 minutes)", FlexibleTimeWindow={"Mode": "OFF"},
    Description="every five", Target={"Arn": tick_arn, "RoleArn": role})
got = scheduler[2].get_schedule(Name="aws-weekdays")
check("UpdateSchedule replaces the settings", got["ScheduleExpression"] == "rate(5 minutes)"
      and got["State"] == "ENABLED" and got["Description"] == "every five", got)
listed = [x["Name"] for x in scheduler[0].list_schedules(NamePrefix="aws-")["Schedules"]]
check("ListSchedules", listed == ["aws-to-bus", "aws-weekdays"], listed)
check_raises("a second CreateSchedule is refused", "ConflictException is raised typed",
             lambda: scheduler[0].create_schedule(Name="aws-weekdays", ScheduleExpression="rate(1 hour)",
                                                  FlexibleTimeWindow={"Mode": "OFF"},
                                                  Target={"Arn": tick_arn, "RoleArn": role}),
             scheduler[0].exceptions.ConflictException)
check_raises("a bad cron expression is refused", "ValidationException names the field and the rule",
             lambda: scheduler[1].create_schedule(Name="aws-bad", ScheduleExpression="cron(0 9 * * * *)",
                                                  FlexibleTimeWindow={"Mode": "OFF"},
                                                  Target={"Arn": tick_arn, "RoleArn": role}),
             scheduler[1].exceptions.ValidationException,
             lambda e: "schedule_expression" in e.response["Error"]["Message"])
check_wrong_secret("scheduler", lambda wrong: wrong.list_schedules())
schedule_reader = client("scheduler", 1, reader_key, reader_secret)
check("a read-only key may get a schedule", schedule_reader.get_schedule(Name="aws-weekdays")["Name"] == "aws-weekdays")
check_refused("a read-only key may not create one: AccessDeniedException",
              lambda: schedule_reader.create_schedule(Name="aws-reader", ScheduleExpression="rate(1 hour)",
                                                      FlexibleTimeWindow={"Mode": "OFF"},
                                                      Target={"Arn": tick_arn, "RoleArn": role}),
              "AccessDeniedException")
out = subprocess.run(["aws", "--endpoint-url", endpoints[2], "--ca-bundle", ca, "--output", "json", "scheduler",
                      "list-schedules"], env=cli_env(), capture_output=True, text=True)
check("aws scheduler list-schedules", out.returncode == 0 and "aws-weekdays" in out.stdout, out.stdout + out.stderr)
for name in ("aws-weekdays", "aws-to-bus"):
    scheduler[0].delete_schedule(Name=name)
check("DeleteSchedule", scheduler[1].list_schedules(NamePrefix="aws-")["Schedules"] == [])
events[0].remove_targets(Rule="scheduled", Ids=["q"])
events[0].delete_rule(Name="scheduled")

print("all EventBridge checks passed")
