"""Read-only bucket access for the connector: `file://dir` or `s3://bucket/prefix` (boto3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

USAGE_SUFFIXES = (".csv", ".json", ".jsonl")
QUARANTINE_PREFIX = "quarantine/"
SIDECAR_SUFFIX = ".meta.json"


@dataclass(frozen=True)
class BucketObject:
    key: str  # relative to the bucket prefix
    version: str  # ETag+LastModified (S3) or mtime+size (file://): an upload is a new object


class BucketReader(Protocol):
    def list_objects(self) -> list[BucketObject]: ...

    def read(self, key: str) -> bytes: ...


def is_usage_key(key: str) -> bool:
    """Usage files only: never quarantine outputs (a deviation: sandbox/DEVIATIONS.md),
    never lineage sidecars."""
    if key.startswith(QUARANTINE_PREFIX) or key.endswith(SIDECAR_SUFFIX):
        return False
    return key.lower().endswith(USAGE_SUFFIXES)


class FileBucket:
    def __init__(self, root: Path) -> None:
        self.root = root

    def list_objects(self) -> list[BucketObject]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.rglob("*"):
            if path.is_file():
                stat = path.stat()
                key = path.relative_to(self.root).as_posix()
                found.append(BucketObject(key, f"{stat.st_mtime_ns}-{stat.st_size}"))
        return found

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


class S3Bucket:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)

    def list_objects(self) -> list[BucketObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                key = str(item["Key"])[len(self.prefix) :]
                # Stripe's connector takes an object again when its LastModified is newer,
                # even with the same bytes (the same ETag)
                version = f"{item['ETag']}@{item['LastModified'].isoformat()}"
                found.append(BucketObject(key, version))
        return found

    def read(self, key: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        return bytes(response["Body"].read())


def open_bucket(bucket_url: str, s3_endpoint_url: str | None) -> BucketReader:
    if bucket_url.startswith("file://"):
        return FileBucket(Path(bucket_url[len("file://") :]))
    if bucket_url.startswith("s3://"):
        bucket, _, prefix = bucket_url[len("s3://") :].partition("/")
        return S3Bucket(bucket, prefix, s3_endpoint_url)
    raise ValueError(f"unsupported bucket URL (use file:// or s3://): {bucket_url}")
