"""gs://bucket/prefix through google-cloud-storage: uploads are finalised by their last
request (whole or absent), and the library's typed errors tell a transient failure from a
permanent one. The client honours STORAGE_EMULATOR_HOST itself (anonymous there)."""
from __future__ import annotations

import os

import requests
from google.api_core import exceptions as gx
from google.auth import exceptions as ax
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from google.resumable_media import common as rm

from ganray.storage.backend import CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC, ClientCache, ObjectStore
from ganray.storage.endpoints import endpoint_words, gcs_endpoint
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
_GCS_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")

_TIMEOUT = (CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC)  # every request passes retry=None: ours retry


class GcsBackend(ObjectStore):
    scheme, service = "gs", "GCS"
    connection_errors = (requests.ConnectionError, requests.Timeout)
    bucket_errors = (gx.GoogleAPIError, ax.GoogleAuthError)
    write_errors = (gx.GoogleAPIError, requests.RequestException)

    def __init__(self):
        self.clients = ClientCache(_GCS_ENV)

    def client(self, *, cached: bool = True) -> gcs.Client:
        def build() -> gcs.Client:
            if gcs_endpoint():
                return gcs.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "ganray-emulator",
                                  credentials=AnonymousCredentials())
            return gcs.Client()

        return self.clients.get(build, cached=cached)

    def classify(self, e):
        if isinstance(e, gx.NotFound):
            return NOT_FOUND
        if isinstance(e, (gx.TooManyRequests, gx.InternalServerError, gx.BadGateway, gx.ServiceUnavailable,
                          gx.GatewayTimeout, gx.RequestRangeNotSatisfiable)) or getattr(e, "code", 0) == 408:
            return TRANSIENT
        if isinstance(e, ax.DefaultCredentialsError):
            return PERMANENT
        if isinstance(e, ax.RefreshError):
            return CREDENTIALS
        if isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                          ax.TransportError, ConnectionError, TimeoutError)):
            return TRANSIENT
        if isinstance(e, rm.InvalidResponse):
            status = getattr(getattr(e, "response", None), "status_code", 0) or 0
            return TRANSIENT if status >= 500 or status in (408, 429) else PERMANENT
        if isinstance(e, rm.DataCorruption):
            return TRANSIENT
        return PERMANENT

    def brief(self, e):
        if isinstance(e, (requests.ConnectionError, requests.Timeout)):
            return f"cannot reach GCS {endpoint_words('gs')} ({connection_reason(e)})"
        return first_line(e)

    def _blob(self, bucket, key):
        return self.client().bucket(bucket).blob(key)

    def _put(self, bucket, key, data):
        self._blob(bucket, key).upload_from_string(data, content_type="application/octet-stream",
                                                   timeout=_TIMEOUT, retry=None)

    def _upload(self, local_path, bucket, key):
        self._blob(bucket, key).upload_from_filename(local_path, content_type="application/octet-stream",
                                                     timeout=_TIMEOUT, retry=None)

    def _get(self, bucket, key):
        return self._blob(bucket, key).download_as_bytes(timeout=_TIMEOUT, retry=None)

    def _download(self, bucket, key, local_path):
        blob = self._blob(bucket, key)
        atomic_local_write(local_path, lambda f: blob.download_to_file(f, timeout=_TIMEOUT, retry=None))

    def _has_object(self, bucket, key):
        return self._blob(bucket, key).exists(timeout=_TIMEOUT, retry=None)

    def _has_any(self, bucket, prefix):
        blobs = self.client().list_blobs(bucket, prefix=prefix, max_results=1, timeout=_TIMEOUT, retry=None)
        return any(True for _ in blobs)

    def _keys(self, bucket, prefix):
        return [b.name for b in self.client().list_blobs(bucket, prefix=prefix, timeout=_TIMEOUT, retry=None)]

    def _probe_client(self, uri, timeout_sec):
        try:
            return self.client(cached=False)
        except ax.DefaultCredentialsError as e:
            raise StorageInputError(
                f"{uri}: no Google Cloud credentials found in the standard chain (Application Default "
                "Credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, "
                "or the metadata server's workload identity)") from e

    def _bucket_exists(self, client, bucket, timeout_sec):
        return client.bucket(bucket).exists(timeout=(timeout_sec, timeout_sec), retry=None)

    def _refusal(self, e):
        return "denied" if isinstance(e, (gx.Forbidden, gx.Unauthorized)) else None

    def _put_and_delete(self, client, bucket, key, timeout_sec):
        blob = client.bucket(bucket).blob(key)
        blob.upload_from_string(b"", timeout=(timeout_sec, timeout_sec), retry=None)
        blob.delete(timeout=(timeout_sec, timeout_sec), retry=None)

BACKEND = GcsBackend()
