"""s3://bucket/prefix through boto3: a put is one PutObject (whole or absent), uploads of
files are multipart transfers that complete in one request (aborted on failure), and
botocore's typed errors tell a transient failure from a permanent one."""
from __future__ import annotations

import shutil

import boto3
import botocore.session
from boto3.exceptions import S3UploadFailedError
from botocore import exceptions as bx
from botocore.config import Config as BotoConfig

from ganray.storage.backend import CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC, ClientCache, ObjectStore
from ganray.storage.endpoints import endpoint_words, s3_endpoint, s3_region
from ganray.storage.errors import (
    CREDENTIALS,
    NOT_FOUND,
    PERMANENT,
    TRANSIENT,
    StorageInputError,
    connection_reason,
    first_line,
)
from ganray.storage.local import atomic_local_write

# Environment variables that change which server or identity a client uses.
_S3_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT", "AWS_REGION", "AWS_DEFAULT_REGION",
           "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
           "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidToken", "TokenRefreshRequired"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
              "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
              "OperationAborted"}


class S3Backend(ObjectStore):
    scheme, service = "s3", "S3"
    connection_errors = (bx.ConnectionError,)
    bucket_errors = (bx.ClientError,)
    write_errors = (bx.ClientError, bx.BotoCoreError)

    def __init__(self):
        self.clients = ClientCache(_S3_ENV)

    def client(self, *, connect_timeout: float = CONNECT_TIMEOUT_SEC, read_timeout: float = READ_TIMEOUT_SEC,
               cached: bool = True):
        """A boto3 S3 client for the environment's endpoint and region; botocore's own retries
        are off (ours log and are bounded in time)."""
        def build():
            return boto3.session.Session().client(
                "s3", endpoint_url=s3_endpoint(), region_name=s3_region(),
                config=BotoConfig(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                  retries={"max_attempts": 1, "mode": "standard"}))

        return self.clients.get(build, connect_timeout, read_timeout, cached=cached)

    def classify(self, e):
        if isinstance(e, S3UploadFailedError) and e.__context__ is not None:
            return self.classify(e.__context__)  # boto3's transfer manager wraps the ClientError
        if isinstance(e, bx.NoCredentialsError):
            return PERMANENT
        if isinstance(e, (bx.ConnectionError, bx.HTTPClientError)):
            return TRANSIENT  # refused, reset, timed out, closed mid-response
        if isinstance(e, bx.CredentialRetrievalError):
            return CREDENTIALS
        if isinstance(e, bx.ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _NOT_FOUND:
                return NOT_FOUND
            if code in _CREDENTIALS:
                return CREDENTIALS
            if code in _TRANSIENT or status >= 500 or status == 429:
                return TRANSIENT
        return PERMANENT

    def brief(self, e):
        if isinstance(e, S3UploadFailedError) and e.__context__ is not None:
            return self.brief(e.__context__)
        if isinstance(e, bx.NoCredentialsError):
            return "no AWS credentials found in the standard chain"
        if isinstance(e, bx.ConnectionError):
            return f"cannot reach S3 {endpoint_words('s3')} ({connection_reason(e)})"
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            return f"{err.get('Code', '?')}: {err.get('Message', '').strip() or e}"
        return first_line(e)

    def _put(self, bucket, key, data):
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def _upload(self, local_path, bucket, key):
        self.client().upload_file(local_path, bucket, key)

    def _get(self, bucket, key):
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def _download(self, bucket, key, local_path):
        body = self.client().get_object(Bucket=bucket, Key=key)["Body"]
        atomic_local_write(local_path, lambda f: shutil.copyfileobj(body, f, 1 << 20))

    def _has_object(self, bucket, key):
        try:
            self.client().head_object(Bucket=bucket, Key=key)
            return True
        except bx.ClientError as e:
            if self.classify(e) != NOT_FOUND:
                raise
            return False

    def _has_any(self, bucket, prefix):
        return self.client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0

    def _keys(self, bucket, prefix):
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def _probe_client(self, uri, timeout_sec):
        try:
            creds = botocore.session.Session().get_credentials()
        except bx.BotoCoreError as e:
            raise StorageInputError(f"{uri}: AWS credentials could not be loaded ({e})") from e
        if creds is None:
            raise StorageInputError(
                f"{uri}: no AWS credentials found in the standard chain (environment variables, shared "
                "credentials/config files, web identity, container or instance role)")
        return self.client(connect_timeout=timeout_sec, read_timeout=timeout_sec, cached=False)

    def _bucket_exists(self, client, bucket, timeout_sec):
        client.head_bucket(Bucket=bucket)  # a missing bucket is a ClientError (404)
        return True

    def _refusal(self, e):
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return "missing" if status == 404 else "denied" if status in (401, 403) else None

    def _put_and_delete(self, client, bucket, key, timeout_sec):
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        client.delete_object(Bucket=bucket, Key=key)

BACKEND = S3Backend()
