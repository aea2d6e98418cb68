"""Drives every Lambda action through boto3 and the aws CLI, unmodified,
over Lambda's REST-JSON protocol against a Sluice cluster (each call goes to
another node): functions from a zip, invocations of each type with the log
tail, versions, aliases, concurrency, event invoke configs, asynchronous
invocation, a queue and a stream mapping, and the errors the SDK raises
typed. The function reports what it is handed to a recorder this script
serves. Exits non-zero on the first check that fails.

The functions are zipped as AWS tooling zips them, without a bootstrap:
lambda_app.py as app.py on the managed python3.12 runtime (the nodes need
--runtimes-dir with awslambdaric), and an ES module on nodejs20.x.

Usage: aws_lambda.py ENDPOINTS CA KEY SECRET READER_KEY READER_SECRET (see
awscheck.py)
"""

import base64
import io
import json
import os
import subprocess
import tempfile
import threading
import zipfile

from awscheck import ACCOUNT, ca, check, check_raises, check_refused, check_wrong_secret, cli_env, client, endpoints, reader_key, reader_secret, serve_posts


def zipped(files):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()


here = os.path.dirname(os.path.abspath(__file__))
package = zipped({"app.py": open(os.path.join(here, "lambda_app.py")).read()})
nodes = [client("lambda", i) for i in range(len(endpoints))]
sqs = client("sqs", 0)
kinesis = client("kinesis", 1)


def node(i):
    return nodes[i % len(nodes)]


# What the function reports: (kind, body) in arrival order.
marks = []
arrived = threading.Condition()


def record(path, body):
    with arrived:
        marks.append((path.strip("/"), body.decode()))
        arrived.notify_all()


server, recorder = serve_posts(record)


def wait_for(kind, want):
    """The bodies of `kind` once there are `want` of them (30 s at most)."""
    with arrived:
        arrived.wait_for(lambda: len([b for k, b in marks if k == kind]) >= want, timeout=30)
        return sorted(b for k, b in marks if k == kind)


def payload(r):
    return json.loads(r["Payload"].read())


# Functions.
fn = node(0).create_function(
    FunctionName="aws-echo", Runtime="python3.12", Role=f"arn:aws:iam::{ACCOUNT}:role/echo",
    Handler="app.handler", Code={"ZipFile": package}, Timeout=10, MemorySize=256,
    Environment={"Variables": {"MARKS": recorder, "GREETING": "hi"}}, Description="echoes",
)
arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:aws-echo"
check("CreateFunction", fn["FunctionArn"] == arn and fn["Version"] == "$LATEST" and fn["MemorySize"] == 256
      and fn["Environment"]["Variables"]["GREETING"] == "hi", fn)
node(1).get_waiter("function_active_v2").wait(FunctionName="aws-echo", WaiterConfig={"Delay": 1})
got = node(2).get_function(FunctionName="aws-echo")
check("GetFunction", got["Configuration"]["CodeSha256"] == fn["CodeSha256"]
      and got["Configuration"]["State"] == "Active", got)
conf = node(0).get_function_configuration(FunctionName=arn)
check("GetFunctionConfiguration by ARN", conf["Description"] == "echoes" and conf["Handler"] == "app.handler", conf)
listed = [f["FunctionName"] for f in node(1).list_functions()["Functions"]]
check("ListFunctions", "aws-echo" in listed, listed)

# A Node.js function, also without a bootstrap.
node_fn = node(1).create_function(
    FunctionName="aws-node", Runtime="nodejs20.x", Role=f"arn:aws:iam::{ACCOUNT}:role/echo", Handler="index.handler",
    Code={"ZipFile": zipped({"index.mjs": "export const handler = async (event, context) => "
                                          "({ doubled: event.n * 2, name: context.functionName });"})},
)
r = node(2).invoke(FunctionName="aws-node", Payload=json.dumps({"n": 21}))
check("a nodejs20.x zip runs on the managed runtime", payload(r) == {"doubled": 42, "name": "aws-node"}, r)
node(0).delete_function(FunctionName="aws-node")

# Invocations.
r = node(2).invoke(FunctionName="aws-echo", Payload=json.dumps({"n": 1}), LogType="Tail")
body = payload(r)
log = base64.b64decode(r["LogResult"]).decode()
check("Invoke RequestResponse with the log's tail", r["StatusCode"] == 200 and body.get("got") == {"n": 1}
      and body.get("greeting") == "hi" and r["ExecutedVersion"] == "$LATEST" and "log line" in log, (r, body, log))
r = node(0).invoke(FunctionName="aws-echo", Payload=json.dumps({"fail": True}))
body = payload(r)
check("a failed invocation: X-Amz-Function-Error and the error document",
      r.get("FunctionError") == "Unhandled" and body["errorType"] == "ValueError", (r, body))
r = node(1).invoke(FunctionName="aws-echo", InvocationType="DryRun")
check("Invoke DryRun", r["StatusCode"] == 204, r)
r = node(2).invoke(FunctionName="aws-echo", InvocationType="Event", Payload=json.dumps({"mark": "async-1"}))
check("Invoke Event is accepted", r["StatusCode"] == 202, r)
check("the asynchronous invocation ran", wait_for("event", 1) == ["async-1"], marks)

# Versions and aliases.
node(0).update_function_configuration(FunctionName="aws-echo", Environment={"Variables": {"MARKS": recorder, "GREETING": "v1"}})
v1 = node(1).publish_version(FunctionName="aws-echo", Description="first")
check("UpdateFunctionConfiguration, PublishVersion", v1["Version"] == "1" and v1["FunctionArn"] == arn + ":1", v1)
code = node(2).update_function_code(FunctionName="aws-echo", ZipFile=package)
check("UpdateFunctionCode", code["CodeSha256"] == fn["CodeSha256"], code)
node(0).update_function_configuration(FunctionName="aws-echo", Environment={"Variables": {"MARKS": recorder, "GREETING": "v2"}})
v2 = node(1).publish_version(FunctionName="aws-echo")
versions = [v["Version"] for v in node(2).list_versions_by_function(FunctionName="aws-echo")["Versions"]]
check("ListVersionsByFunction", versions == ["$LATEST", "1", "2"], versions)
one = node(0).get_function_configuration(FunctionName="aws-echo", Qualifier="1")
check("GetFunctionConfiguration of a version", one["Version"] == "1" and one["Environment"]["Variables"]["GREETING"] == "v1", one)
alias = node(1).create_alias(FunctionName="aws-echo", Name="live", FunctionVersion="1", Description="prod")
check("CreateAlias", alias["AliasArn"] == arn + ":live" and alias["FunctionVersion"] == "1", alias)
r = node(2).invoke(FunctionName="aws-echo", Qualifier="live", Payload=b"{}")
check("Invoke through the alias runs its version", r["ExecutedVersion"] == "1" and payload(r)["greeting"] == "v1", r)
node(0).update_alias(FunctionName="aws-echo", Name="live", FunctionVersion="2")
r = node(1).invoke(FunctionName="aws-echo:live", Payload=b"{}")
check("UpdateAlias, and a qualified name", r["ExecutedVersion"] == "2" and payload(r)["greeting"] == "v2", r)
weighted = node(2).update_alias(FunctionName="aws-echo", Name="live",
                                RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})
check("an alias's routing config", weighted["RoutingConfig"]["AdditionalVersionWeights"] == {"1": 0.5}, weighted)
check("GetAlias", node(0).get_alias(FunctionName="aws-echo", Name="live")["FunctionVersion"] == "2")
check("ListAliases", [a["Name"] for a in node(1).list_aliases(FunctionName="aws-echo")["Aliases"]] == ["live"])
node(2).delete_alias(FunctionName="aws-echo", Name="live")
check("DeleteAlias", node(0).list_aliases(FunctionName="aws-echo")["Aliases"] == [])

# Concurrency and event invoke configs.
node(0).put_function_concurrency(FunctionName="aws-echo", ReservedConcurrentExecutions=5)
check("PutFunctionConcurrency, GetFunctionConcurrency",
      node(1).get_function_concurrency(FunctionName="aws-echo")["ReservedConcurrentExecutions"] == 5)
node(2).delete_function_concurrency(FunctionName="aws-echo")
check("DeleteFunctionConcurrency", "ReservedConcurrentExecutions" not in node(0).get_function_concurrency(FunctionName="aws-echo"))
p = node(1).put_provisioned_concurrency_config(FunctionName="aws-echo", Qualifier="1", ProvisionedConcurrentExecutions=1)
check("PutProvisionedConcurrencyConfig", p["RequestedProvisionedConcurrentExecutions"] == 1
      and p["Status"] in ("IN_PROGRESS", "READY"), p)
p = node(2).get_provisioned_concurrency_config(FunctionName="aws-echo", Qualifier="1")
check("GetProvisionedConcurrencyConfig", p["RequestedProvisionedConcurrentExecutions"] == 1, p)
node(0).delete_provisioned_concurrency_config(FunctionName="aws-echo", Qualifier="1")
check_refused("DeleteProvisionedConcurrencyConfig",
              lambda: node(1).get_provisioned_concurrency_config(FunctionName="aws-echo", Qualifier="1"),
              "ProvisionedConcurrencyConfigNotFoundException", "ResourceNotFoundException")
node(2).put_function_event_invoke_config(FunctionName="aws-echo", MaximumRetryAttempts=0)
node(0).update_function_event_invoke_config(FunctionName="aws-echo", MaximumEventAgeInSeconds=60)
cfg = node(1).get_function_event_invoke_config(FunctionName="aws-echo")
check("Put, Update and GetFunctionEventInvokeConfig", cfg["MaximumRetryAttempts"] == 0
      and cfg["MaximumEventAgeInSeconds"] == 60 and cfg["FunctionArn"].startswith(arn), cfg)
node(2).delete_function_event_invoke_config(FunctionName="aws-echo")
cfg = node(0).get_function_event_invoke_config(FunctionName="aws-echo")
check("DeleteFunctionEventInvokeConfig restores the defaults", cfg["MaximumRetryAttempts"] == 2, cfg)

# A queue mapping and a stream mapping.
queue_url = sqs.create_queue(QueueName="aws-fn-jobs", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:aws-fn-jobs"
m = node(1).create_event_source_mapping(FunctionName="aws-echo", EventSourceArn=queue_arn, BatchSize=5)
check("CreateEventSourceMapping for a queue", m["EventSourceArn"] == queue_arn and m["BatchSize"] == 5
      and m["FunctionArn"] == arn, m)
for i in range(3):
    sqs.send_message(QueueUrl=queue_url, MessageBody=f"job-{i}")
check("the queue mapping hands every message to the function", wait_for("sqs", 3) == ["job-0", "job-1", "job-2"], marks)
check("GetEventSourceMapping", node(2).get_event_source_mapping(UUID=m["UUID"])["UUID"] == m["UUID"])
updated = node(0).update_event_source_mapping(UUID=m["UUID"], BatchSize=10, Enabled=False)
check("UpdateEventSourceMapping", updated["BatchSize"] == 10 and updated["State"] in ("Disabled", "Disabling"), updated)
kinesis.create_stream(StreamName="aws-fn-clicks", ShardCount=1)
stream_arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/aws-fn-clicks"
sm = node(1).create_event_source_mapping(FunctionName="aws-echo", EventSourceArn=stream_arn,
                                         StartingPosition="TRIM_HORIZON", BatchSize=10)
check("CreateEventSourceMapping for a stream", sm["StartingPosition"] == "TRIM_HORIZON", sm)
kinesis.put_records(StreamName="aws-fn-clicks", Records=[{"Data": f"click-{i}".encode(), "PartitionKey": "p"} for i in range(3)])
check("the stream mapping hands every record to the function", wait_for("kinesis", 3) == ["click-0", "click-1", "click-2"], marks)
mappings = node(2).list_event_source_mappings(FunctionName="aws-echo")["EventSourceMappings"]
check("ListEventSourceMappings", sorted(x["UUID"] for x in mappings) == sorted([m["UUID"], sm["UUID"]]), mappings)
only = node(0).list_event_source_mappings(EventSourceArn=stream_arn)["EventSourceMappings"]
check("ListEventSourceMappings by source", [x["UUID"] for x in only] == [sm["UUID"]], only)
for x in (m, sm):
    node(1).delete_event_source_mapping(UUID=x["UUID"])
check("DeleteEventSourceMapping", node(2).list_event_source_mappings(FunctionName="aws-echo")["EventSourceMappings"] == [])

# Errors arrive as the SDK's typed exceptions.
check_raises("a missing function is refused", "ResourceNotFoundException is raised typed, 404",
             lambda: node(0).get_function(FunctionName="no-such-function"),
             node(0).exceptions.ResourceNotFoundException,
             lambda e: e.response["ResponseMetadata"]["HTTPStatusCode"] == 404)
check_raises("a second function of the same name is refused", "ResourceConflictException is raised typed, 409",
             lambda: node(1).create_function(FunctionName="aws-echo", Runtime="python3.12", Role="r",
                                             Handler="app.handler", Code={"ZipFile": package}),
             node(1).exceptions.ResourceConflictException,
             lambda e: e.response["ResponseMetadata"]["HTTPStatusCode"] == 409)
check_raises("a timeout over 900 s is refused", "InvalidParameterValueException is raised typed",
             lambda: node(2).update_function_configuration(FunctionName="aws-echo", Timeout=100000),
             node(2).exceptions.InvalidParameterValueException,
             lambda e: "timeout" in e.response["Error"]["Message"].lower())

# Authentication and authorisation.
check_wrong_secret("lambda", lambda wrong: wrong.list_functions())
reader = client("lambda", 1, reader_key, reader_secret)
check("a read-only key may list", "aws-echo" in [f["FunctionName"] for f in reader.list_functions()["Functions"]])
check_refused("a read-only key may not invoke: AccessDeniedException",
              lambda: reader.invoke(FunctionName="aws-echo", Payload=b"{}"), "AccessDeniedException")

# The aws CLI, unmodified.
env = cli_env()
cli = ["aws", "--endpoint-url", endpoints[2], "--ca-bundle", ca, "--output", "json", "lambda"]
with tempfile.NamedTemporaryFile() as result:
    out = subprocess.run(cli + ["invoke", "--function-name", "aws-echo", "--payload", '{"from": "cli"}', result.name],
                         env=env, capture_output=True, text=True)
    answer = json.loads(open(result.name).read() or "{}")
check("aws lambda invoke", out.returncode == 0 and json.loads(out.stdout)["StatusCode"] == 200
      and answer.get("got") == {"from": "cli"}, (out.stdout, out.stderr, answer))
out = subprocess.run(cli + ["get-function", "--function-name", "nope"], env=env, capture_output=True, text=True)
check("aws lambda reports ResourceNotFoundException", out.returncode != 0 and "ResourceNotFoundException" in out.stderr, out.stderr)

node(0).delete_function(FunctionName="aws-echo")
check("DeleteFunction", "aws-echo" not in [f["FunctionName"] for f in node(1).list_functions()["Functions"]])
server.shutdown()
print("all Lambda checks passed")
