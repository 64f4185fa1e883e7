"""TensorBoard event records, written without TensorFlow: TFRecord framing (length, masked
CRC-32C, data, masked CRC-32C) around serialized `Event` protos, as TensorBoard reads them from
local folders, s3:// and gs://."""
from __future__ import annotations

import struct
import time

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary

EVENTS_PREFIX = "events.out.tfevents"
FIXED_Z_TAG = "samples/fixed_z"


try:  # the C implementation (shipped with google-cloud-storage), else TensorBoard's pure-Python one
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c


def _masked_crc(data: bytes) -> int:
    # TFRecord framing: masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32), crc = CRC-32C
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tf_record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked crc of length, data, masked crc of data (little-endian)."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


def event(step: int | None = None, wall_time: float | None = None, **fields) -> bytes:
    ev = Event(wall_time=time.time() if wall_time is None else wall_time, **fields)
    if step is not None:
        ev.step = int(step)
    return ev.SerializeToString()


def scalar_event(step: int, values: dict[str, float], wall_time: float) -> bytes:
    summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
    return event(step, wall_time, summary=summary)


def image_event(step: int, tag: str, png: bytes, height: int, width: int, channels: int, wall_time: float) -> bytes:
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    return event(step, wall_time, summary=Summary(value=[Summary.Value(tag=tag, image=image)]))


def event_file_time(name: str) -> int | None:
    """The start time in an event file's name (events.out.tfevents.<time>.<…>), if any."""
    parts = name.rsplit("/", 1)[-1].split(".")
    if len(parts) > 3 and ".".join(parts[:3]) == EVENTS_PREFIX and parts[3].isdigit():
        return int(parts[3])
    return None


def session_start_event(step: int) -> bytes:
    """SessionLog.START at `step`: TensorBoard drops the run's events at or after `step` that an
    earlier session wrote (the steps a resumed run does again)."""
    return event(step, session_log=SessionLog(status=SessionLog.START))


