"""The servers every client talks to, from the standard environment (never from a config):
S3: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL (or S3_ENDPOINT, TensorBoard's name) and
AWS_REGION/AWS_DEFAULT_REGION; GCS: STORAGE_EMULATOR_HOST (e.g. http://127.0.0.1:9023).
pyarrow, boto3, google-cloud-storage and TensorBoard are all given the same ones."""
from __future__ import annotations

import os


def s3_endpoint() -> str | None:
    ep = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
    if ep and "://" not in ep:
        ep = "http://" + ep
    return ep or None


def gcs_endpoint() -> str | None:
    ep = os.environ.get("STORAGE_EMULATOR_HOST")
    if ep and "://" not in ep:
        ep = "http://" + ep
    return ep or None


def s3_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def endpoint_words(scheme: str) -> str:
    """"endpoint http://127.0.0.1:5000" or the public service, for messages."""
    ep = s3_endpoint() if scheme == "s3" else gcs_endpoint()
    if ep:
        return f"endpoint {ep}"
    return "AWS S3" if scheme == "s3" else "Google Cloud Storage"
