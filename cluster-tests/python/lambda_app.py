"""The function aws_lambda.py drives: echoes what it is invoked with, fails
when asked, and reports what it is handed (asynchronous events, queue
messages, stream records) to the recorder at $MARKS."""

import base64, json, os, urllib.request

def post(kind, body):
    urllib.request.urlopen(os.environ["MARKS"] + "/" + kind, data=body.encode()).read()

def handler(event, context):
    print("log line", json.dumps(event))
    if isinstance(event, dict) and "Records" in event:
        for r in event["Records"]:
            if r.get("eventSource") == "aws:sqs":
                post("sqs", r["body"])
            else:
                post("kinesis", base64.b64decode(r["kinesis"]["data"]).decode())
        return {}
    if event.get("fail"):
        raise ValueError("asked to fail")
    if "mark" in event:
        post("event", event["mark"])
    return {"got": event, "greeting": os.environ.get("GREETING"), "version": context.function_version}
