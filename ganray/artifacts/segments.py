"""Files that grow, written as a sequence of segments that each reach the bucket about once.

Object stores have no append: re-sending one growing file at every upload costs O(length²)
bytes. A `SegmentedLog` appends to its open segment; the uploader closes ("rotates") it at an
upload tick once it is old enough, sends it one last time, and the next write opens a new
segment. Readers see one stream by reading the segments in name order (names are chosen so
that name order is write order). TensorBoard event files and metrics rows are both written so.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Segment:
    """One segment file: `size` bytes written locally, `uploaded` bytes of it in the bucket."""
    name: str
    opened_at: float
    size: int = 0
    uploaded: int = -1     # -1: never uploaded
    closed: bool = False
    header_size: int = 0   # what every segment starts with (event files: a file_version record)

    @property
    def has_data(self) -> bool:
        return self.size > self.header_size

    @property
    def pending(self) -> bool:
        return self.has_data and self.uploaded != self.size


class SegmentedLog:
    """Segments `name(0)`, `name(1)`, … in `folder`, written synchronously and rotated on request
    (or when one reaches `rotate_max_bytes`). The caller holds the lock that orders writes,
    rotations and reads."""

    def __init__(self, folder: str, name: Callable[[int], str], *, rotate_max_bytes: int,
                 header: Callable[[], bytes] | None = None):
        self.folder = folder
        self.name = name
        self.rotate_max_bytes = rotate_max_bytes
        self.header = header
        self.segments: list[Segment] = []
        self.bytes_written = 0
        self._file: io.BufferedWriter | None = None
        os.makedirs(folder, exist_ok=True)

    @property
    def current(self) -> Segment | None:
        return self.segments[-1] if self.segments and not self.segments[-1].closed else None

    def path(self, seg: Segment) -> str:
        return os.path.join(self.folder, seg.name)

    def write(self, data: bytes) -> None:
        seg = self.current or self._open()
        self._file.write(data)
        self._file.flush()  # a reader (TensorBoard, the uploader) sees whole records only
        seg.size += len(data)
        self.bytes_written += len(data)
        if seg.size >= self.rotate_max_bytes:
            self.rotate()

    def _open(self) -> Segment:
        seg = Segment(name=self.name(len(self.segments)), opened_at=time.monotonic())
        self.segments.append(seg)
        self._file = open(self.path(seg), "wb")
        if self.header is not None:
            head = self.header()
            self._file.write(head)
            self._file.flush()
            seg.size = seg.header_size = len(head)
            self.bytes_written += len(head)
        return seg

    def rotate(self) -> None:
        """Close the open segment; the next write starts a new one."""
        seg = self.current
        if seg is None:
            return
        self._file.close()
        self._file = None
        seg.closed = True

    def read(self, seg: Segment) -> bytes:
        with open(self.path(seg), "rb") as f:
            return f.read(seg.size)
