"""What the AWS SDK test scripts share: their arguments, clients of the
cluster's nodes, and checks that stop at the first failure.

Arguments: ENDPOINTS CA KEY SECRET READER_KEY READER_SECRET
  ENDPOINTS  comma-separated https://host:port of the nodes
  CA         the CA bundle the nodes' certificates chain to
  KEY/SECRET an access key allowed everything
  READER_*   an access key with read-only access
"""

import os
import sys

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


def cli_env():
    """The environment for the aws CLI: the full key, no profile, and the
    CLI's own botocore (not an older one on PYTHONPATH)."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_PROFILE", None)
    env.pop("PYTHONPATH", None)
    return env
