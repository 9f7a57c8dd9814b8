"""boto3's and botocore's failures read: an answer's HTTP status, a missing object, and why a
request failed in one line (`s3_bucket.S3Bucket._s3_errors` makes it a BucketError)."""

from __future__ import annotations


def s3_status(exc: Exception) -> int | None:
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if isinstance(status, int) else None


def is_missing(exc: Exception) -> bool:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code")) in {"404", "NoSuchKey", "NotFound"}


def s3_reason(exc: BaseException, bucket: str) -> str:
    """Why an S3 request failed, in one line and without its request (no headers, no keys):
    S3's error code and message, or why no request could be made. boto3's
    S3UploadFailedError ("Failed to upload /tmp/... to b/k: An error occurred ...") is said
    as the error it wraps."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, Exception):
        return s3_reason(exc.__context__, bucket)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a "
            "profile or role boto3 reads)"
        )
    if isinstance(exc, EndpointConnectionError):
        return f"cannot connect to {getattr(exc, 'kwargs', {}).get('endpoint_url') or 'S3'}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code") or s3_status(exc)), str(error.get("Message") or "")
        if code == "NoSuchBucket":
            return f"the bucket {bucket} does not exist (NoSuchBucket)"
        return f"{code}: {message}" if message else code
    return f"{type(exc).__name__}: {exc}"
