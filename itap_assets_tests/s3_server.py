"""A real S3-protocol server on 127.0.0.1 for tests of the Parquet mode on object storage: moto in server mode,
started for the test session and stopped after it. Dummy credentials go into the environment, the endpoint into
`storage.storage_options` (as a deployment would configure an S3-compatible store).

Use: `from itap_assets_tests.s3_server import s3_server  # noqa: F401` (the fixture), then
`s3_server.bucket("name")` for a fresh bucket URL and `s3_server.storage_options` for the settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "itap-test", "AWS_SECRET_ACCESS_KEY": "itap-test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint_url: str

    @property
    def storage_options(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint_url}

    def bucket(self, name: str) -> str:
        """Create bucket `name` (S3 naming: lowercase, digits, '-') and return its URL."""
        boto3.client("s3", endpoint_url=self.endpoint_url).create_bucket(Bucket=name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
