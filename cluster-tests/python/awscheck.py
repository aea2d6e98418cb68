"""What the AWS SDK test scripts share: their arguments, clients of the
cluster's nodes, checks that stop at the first failure, and a loopback
receiver of the POSTs the cluster makes.

Arguments: ENDPOINTS CA KEY SECRET READER_KEY READER_SECRET
  ENDPOINTS  comma-separated https://host:port of the nodes
  CA         the CA bundle the nodes' certificates chain to
  KEY/SECRET an access key allowed everything
  READER_*   an access key with read-only access
"""

import http.server
import os
import sys
import threading
import time

import boto3
import botocore.config
from botocore.exceptions import ClientError

endpoints, ca, key, secret, reader_key, reader_secret = sys.argv[1:7]
endpoints = endpoints.split(",")
ACCOUNT = "000000000000"
_config = botocore.config.Config(retries={"max_attempts": 8, "mode": "standard"})


def client(service, i, key_id=key, secret_key=secret):
    """A client of `service` at node `i` (modulo the node count)."""
    return boto3.client(
        service,
        endpoint_url=endpoints[i % len(endpoints)],
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret_key,
        verify=ca,
        config=_config,
    )


def check(what, ok, detail=""):
    """Prints `ok: what`, or fails the script with `detail`."""
    if not ok:
        print(f"FAILED: {what} {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def error_of(call):
    """The ClientError `call` raises, or None."""
    try:
        call()
    except ClientError as e:
        return e
    return None


def check_refused(what, call, *codes):
    """Checks that `call` fails with a ClientError of one of `codes`."""
    e = error_of(call)
    check(what, e is not None and e.response["Error"]["Code"] in codes, e and e.response)


def check_raises(refused, raised, call, exception, ok=lambda e: True):
    """Checks that `call` raises the SDK's typed `exception` and that `ok`
    holds of it (`raised`); `refused` names the check when it does not
    raise at all."""
    try:
        call()
    except exception as e:
        check(raised, ok(e), e.response)
        return
    check(refused, False)


def check_wrong_secret(service, call):
    """Checks that `call` of a `service` client signing with a wrong
    secret gets SignatureDoesNotMatch."""
    wrong = client(service, 0, key, secret + "x")
    check_refused("a wrong secret gets SignatureDoesNotMatch", lambda: call(wrong), "SignatureDoesNotMatch")


def serve_posts(on_post):
    """Starts an HTTP server on loopback that hands `on_post(path, body)`
    each POST's path and body (bytes) and answers it 200; returns the
    server and its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            on_post(self.path, self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def receive_all(sqs, url, want):
    """Receives (and deletes) from queue `url` until `want` messages came
    or 30 s passed; the messages, with their attributes."""
    got = []
    deadline = time.time() + 30
    while len(got) < want and time.time() < deadline:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                MessageAttributeNames=["All"])
        for m in r.get("Messages", []):
            got.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def cli_env():
    """The environment for the aws CLI: the full key, no profile, and the
    CLI's own botocore (not an older one on PYTHONPATH)."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_PROFILE", None)
    env.pop("PYTHONPATH", None)
    return env
