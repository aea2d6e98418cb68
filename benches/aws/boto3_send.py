"""SQS SendMessage through boto3, unmodified, over the AWS JSON protocol:
--concurrency threads, each with its own client, send 1 KiB messages to
one queue for --duration seconds, round-robin over the endpoints. Prints
one JSON line: messages, seconds, msg/s and latency percentiles (ms).

The development mode's nodes take any signature; boto3 signs anyway, so
the figure includes its SigV4 work as against AWS.
"""

import argparse
import json
import threading
import time

import boto3
import botocore.config

parser = argparse.ArgumentParser()
parser.add_argument("--endpoints", required=True, help="comma-separated http://host:port")
parser.add_argument("--concurrency", type=int, default=16)
parser.add_argument("--duration", type=float, default=10.0)
parser.add_argument("--queue", default="aws-bench")
parser.add_argument("--bytes", type=int, default=1024)
args = parser.parse_args()
endpoints = args.endpoints.split(",")
config = botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"},
                                max_pool_connections=args.concurrency)


def client(i):
    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoints[i % len(endpoints)], region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench", config=config)


url = client(0).create_queue(QueueName=args.queue)["QueueUrl"]
body = "x" * args.bytes
latencies = [[] for _ in range(args.concurrency)]
errors = [0] * args.concurrency
start = threading.Barrier(args.concurrency + 1)
stop_at = [0.0]


def worker(i):
    sqs = client(i)
    sqs.get_queue_url(QueueName=args.queue)  # connect and warm up first
    start.wait()
    mine = latencies[i]
    while True:
        t = time.perf_counter()
        if t >= stop_at[0]:
            return
        try:
            sqs.send_message(QueueUrl=url, MessageBody=body)
        except Exception:
            errors[i] += 1
            continue
        mine.append(time.perf_counter() - t)


threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
for t in threads:
    t.start()
stop_at[0] = time.perf_counter() + 3600
start.wait()
began = time.perf_counter()
stop_at[0] = began + args.duration
for t in threads:
    t.join()
elapsed = time.perf_counter() - began
all_ms = sorted(x * 1000 for xs in latencies for x in xs)


def pct(p):
    return round(all_ms[min(len(all_ms) - 1, int(p / 100 * len(all_ms)))], 2) if all_ms else None


print(json.dumps({"messages": len(all_ms), "errors": sum(errors), "seconds": round(elapsed, 2),
                  "msg_per_s": round(len(all_ms) / elapsed, 1), "p50_ms": pct(50), "p99_ms": pct(99)}))
