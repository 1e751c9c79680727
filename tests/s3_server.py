"""A real S3 API for the tests: moto's standalone server (installed by `make test` into .venv-s3,
kept apart from the project's environment), on 127.0.0.1, where
the project reaches it as it would AWS S3 or MinIO: pyarrow's S3 filesystem in the training
code, boto3 in an MLflow server whose artifact store is an s3:// URI."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

MOTO = Path(__file__).resolve().parents[1] / ".venv-s3" / "bin" / "moto_server"
CREDS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve() -> Iterator[str]:
    """The server's endpoint, `127.0.0.1:<port>`, while the block runs."""
    if not MOTO.exists():
        pytest.fail(f"{MOTO} is missing: run `make test` (it installs the S3 test server)")
    port = free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)  # nosec B310: our own server
                break
            except OSError:
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def uri(endpoint: str, path: str) -> str:
    """An s3:// URI for pyarrow (and the project's config) on this endpoint."""
    return f"s3://{path}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def filesystem(endpoint: str, bucket: str):
    """pyarrow's S3 filesystem on the endpoint with the test credentials, `bucket` created."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key=CREDS["AWS_ACCESS_KEY_ID"], secret_key=CREDS["AWS_SECRET_ACCESS_KEY"],
                           region=CREDS["AWS_DEFAULT_REGION"], endpoint_override=endpoint, scheme="http",
                           allow_bucket_creation=True)
    fs.create_dir(bucket)
    return fs
