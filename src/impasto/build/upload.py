"""Upload a SageMaker archive to S3 (boto3, from ``pip install 'impasto[aws]'``).

boto3 finds credentials and the region as the AWS CLI does; ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) points it at another S3-compatible server.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BuildError


def split_s3_url(url: str, file_name: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``; a key ending in ``/`` (or none) gets the
    file's name appended."""
    if not url.startswith("s3://"):
        raise BuildError(f"--upload {url}: write s3://BUCKET/KEY or s3://BUCKET/PREFIX/")
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise BuildError(f"--upload {url}: the bucket is missing")
    if not key or key.endswith("/"):
        key += file_name
    return bucket, key


def upload(file: Path, url: str) -> str:
    """Upload ``file`` to ``url``; returns the ``s3://`` URL to use as ``ModelDataUrl``."""
    try:
        import boto3
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise BuildError("--upload needs boto3: pip install 'impasto[aws]'") from None
    bucket, key = split_s3_url(url, Path(file).name)
    try:
        boto3.client("s3").upload_file(str(file), bucket, key)
    except (Boto3Error, BotoCoreError, ClientError) as exc:
        raise BuildError(f"uploading {file} to s3://{bucket}/{key} failed: {exc}") from None
    return f"s3://{bucket}/{key}"
