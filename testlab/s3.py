"""A real S3 implementation on 127.0.0.1 for restic's s3 backend: moto's server (PyPI moto[server], pinned in
requirements.txt) with IAM authentication on, so a request with a wrong key or signature is refused as S3 refuses
it (moto/settings.py INITIAL_NO_AUTH_ACTION_COUNT: the first N requests go unchecked, here the three that make the
lab's user, its policy and its key). Used by tests/data/test_remote_repository.py and tests/lab/test_backup.py."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOTO = Path(sys.executable).with_name("moto_server")


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:<port>
    port: int
    key_id: str
    secret: str
    bucket: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(log: Path, bucket: str = "labforge") -> Iterator[S3]:
    """An S3 endpoint that refuses unsigned and wrongly signed requests, one bucket, and one IAM user's key allowed
    s3:*; stopped on exit."""
    import boto3

    port = _free_port()
    with log.open("w") as out:
        server = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="lab")  # the three calls made before authentication starts
        iam.put_user_policy(UserName="lab", PolicyName="backups", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="lab")["AccessKey"]
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket=bucket)
        yield S3(endpoint, port, key["AccessKeyId"], key["SecretAccessKey"], bucket)
    finally:
        server.terminate()
        server.wait(10)
