"""ganray.artifacts.TrialArtifacts: local layout, uploads to real S3 / GCS servers, event-file
rotation (each byte uploaded about once), outages, resumed trials."""
from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

from ganray import storage
from ganray.artifacts import FIXED_Z_TAG, TrialArtifacts, image_grid


def _events(paths: list[str]) -> list:
    """Every event of the given event files, in order, as written (TensorBoard's own reader,
    without its migration of values into tensors)."""
    return [Event.FromString(raw) for p in paths for raw in RawEventFileLoader(p).Load()]


def _scalar_series(events, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar tag; the loader migrates simple_value into a tensor."""
    return [(ev.step, v.tensor.float_val[0] if v.HasField("tensor") else v.simple_value)
            for ev in events for v in ev.summary.value if v.tag == tag]


def _bucket_events(server, bucket: str, prefix: str, tmp_path) -> tuple[list, dict[str, int]]:
    """Download the event objects under `prefix` (in name order) and parse them."""
    objs = {k: n for k, n in server.objects(bucket, prefix).items() if "tfevents" in k}
    local = []
    for key in sorted(objs):
        p = tmp_path / "dl" / key.rsplit("/", 1)[-1]
        storage.download_file(f"{server.kind.replace('gcs', 'gs')}://{bucket}/{key}", p)
        local.append(str(p))
    return _events(local), objs


def _write_run(art: TrialArtifacts, steps: range, *, sample_every: int = 5, pause: float = 0.0) -> None:
    g = torch.Generator().manual_seed(0)
    for step in steps:
        art.scalars(step, {"loss_G": 0.5 * step, "loss_D": 1.0 / (step + 1)})
        if step % sample_every == 0:
            art.samples(step, torch.rand(9, 1, 8, 8, generator=g) * 2 - 1)
        if pause:
            time.sleep(pause)


# ---- pure parts ----------------------------------------------------------------------


def test_image_grid_maps_minus_one_one_to_pixels_and_places_cells():
    imgs = np.zeros((5, 1, 2, 3), dtype=np.float32)
    imgs[0] = -1.0
    imgs[1] = 1.0
    imgs[4, 0, 1, 2] = 0.5
    grid = image_grid(imgs, pad=1)
    # 5 images -> 3 columns x 2 rows of 2x3 cells, 1 px padding
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
    assert grid[1:3, 1:4, 0].tolist() == [[0, 0, 0], [0, 0, 0]]              # x = -1 -> 0
    assert grid[1:3, 5:8, 0].tolist() == [[255] * 3] * 2                     # x = 1 -> 255
    assert grid[1, 9, 0] == 128                                              # x = 0 -> round(127.5)
    assert grid[4 + 1, 5 + 2, 0] == round(255 * 1.5 / 2)                     # image 4: row 1, col 1
    assert grid[0, :, 0].tolist() == [128] * grid.shape[1]                   # padding


def test_samples_rejects_other_shapes(tmp_path):
    with TrialArtifacts(str(tmp_path / "t"), str(tmp_path / "tb")) as art:
        with pytest.raises(ValueError, match=r"expected \[N, C, H, W\].*got shape \(4, 3\)"):
            art.samples(0, torch.zeros(4, 3))
        with pytest.raises(ValueError, match=r"got shape \(2, 5, 8, 8\)"):
            art.samples(0, torch.zeros(2, 5, 8, 8))


# ---- local storage -------------------------------------------------------------------


def test_local_layout_and_contents(tmp_path):
    trial, tb = tmp_path / "exp/trials/t1", tmp_path / "exp/tensorboard/t1"
    art = TrialArtifacts(str(trial), str(tb))
    assert art.staging_dir is None  # written in place, nothing to upload
    _write_run(art, range(12))
    art.samples(12, torch.randn(300, 2))  # a 2D mixture: a scatter plot frame
    art.scalars(13, {"loss_G": float("nan"), "k_t": float("inf")})
    art.write_text("config.yaml", "model:\n  z_dim: 2\n")
    art.verdict({"verdict": "collapsed", "step": 12, "reasons": ["3 of 10 classes"], "kl": float("-inf")})
    art.close()

    lines = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(12)) + [13]
    assert lines[3]["loss_G"] == 1.5 and lines[-1]["loss_G"] == "nan" and lines[-1]["k_t"] == "inf"
    assert all(isinstance(r["time"], float) for r in lines)
    assert json.loads((trial / "verdict.json").read_text())["kl"] == "-inf"
    assert (trial / "config.yaml").read_text() == "model:\n  z_dim: 2\n"

    pngs = sorted(p.name for p in (trial / "samples").iterdir())
    assert pngs == ["step_000000.png", "step_000005.png", "step_000010.png", "step_000012.png"]
    grid = Image.open(trial / "samples/step_000005.png")
    assert grid.size == (3 * 10 + 2, 3 * 10 + 2) and grid.mode == "L"  # 9 images of 8x8, 2 px padding
    assert Image.open(trial / "samples/step_000012.png").size == (320, 320)
    gif = Image.open(trial / "fixed_z.gif")
    assert gif.n_frames == 4 and gif.info["loop"] == 0

    events = _events(sorted(str(p) for p in tb.iterdir()))
    assert _scalar_series(events, "loss_G")[:3] == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert np.isnan(_scalar_series(events, "loss_G")[-1][1])
    images = [(ev.step, v.image) for ev in events for v in ev.summary.value if v.tag == FIXED_Z_TAG]
    assert [s for s, _ in images] == [0, 5, 10, 12]
    assert images[1][1].encoded_image_string == (trial / "samples/step_000005.png").read_bytes()
    assert (images[1][1].height, images[1][1].width, images[1][1].colorspace) == (32, 32, 1)


def test_closed_artifacts_refuse_writes(tmp_path):
    art = TrialArtifacts(str(tmp_path / "t"), str(tmp_path / "tb"))
    art.close()
    art.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        art.scalars(0, {"x": 1.0})


# ---- buckets -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_bucket_layout_background_uploads_and_staging(request, kind, tmp_path):
    base = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    server = request.getfixturevalue("s3_server" if kind == "s3" else "gcs_server")
    bucket = base.split("://", 1)[1]
    trial, tb = f"{base}/exp/trials/t1", f"{base}/exp/tensorboard/t1"
    art = TrialArtifacts(trial, tb, upload_every_sec=0.2, rotate_every_sec=0.2)
    _write_run(art, range(6))
    # The background thread uploads without any flush().
    deadline = time.monotonic() + 20
    while "exp/trials/t1/metrics.jsonl" not in server.objects(bucket) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "exp/trials/t1/metrics.jsonl" in server.objects(bucket)
    _write_run(art, range(6, 11))
    art.verdict({"verdict": "healthy"})
    staging = art.staging_dir
    art.close()
    assert not os.path.exists(staging)

    objs = server.objects(bucket)
    for name in ("metrics.jsonl", "verdict.json", "fixed_z.gif", "samples/step_000000.png",
                 "samples/step_000005.png", "samples/step_000010.png"):
        assert f"exp/trials/t1/{name}" in objs, name
    lines = storage.read_bytes(f"{trial}/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(11))
    assert Image.open(io.BytesIO(storage.read_bytes(f"{trial}/fixed_z.gif"))).n_frames == 3

    events, event_objs = _bucket_events(server, bucket, "exp/tensorboard/t1/", tmp_path)
    assert _scalar_series(events, "loss_D") == [(s, pytest.approx(1.0 / (s + 1))) for s in range(11)]
    stats = art.stats
    assert sum(event_objs.values()) == stats.event_bytes_written  # every byte arrived
    assert stats.event_upload_ratio == pytest.approx(1.0)           # rotating at every tick: each byte once


def test_rotation_bounds_resent_bytes(s3_bucket, s3_server, tmp_path):
    """Rotating every ~3 upload ticks: the open file is re-sent, closed ones are sent once;
    TensorBoard's name order is write order, and every event arrives exactly once."""
    bucket = s3_bucket.removeprefix("s3://")
    art = TrialArtifacts(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=0.15, rotate_every_sec=0.45)
    _write_run(art, range(120), sample_every=1000, pause=0.02)
    art.close()
    stats = art.stats
    events, objs = _bucket_events(s3_server, bucket, "tb/", tmp_path)
    assert [s for s, _ in _scalar_series(events, "loss_G")] == list(range(120))
    assert stats.event_files >= 3 and len(objs) == stats.event_files
    assert sum(objs.values()) == stats.event_bytes_written
    # k = 3 ticks per file: ≈ (k + 1) / 2 = 2 at a steady rate; always more than once, under k
    assert 1.0 < stats.event_upload_ratio < 3.0


def test_short_outage_is_ridden_out(s3_bucket, s3_server):
    """The S3 server refuses connections for 2 s while the run writes: uploads retry, nothing is lost."""
    art = TrialArtifacts(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=0.2)
    _write_run(art, range(5))
    back = s3_server.outage(2.0)
    _write_run(art, range(5, 15), pause=0.05)
    back.join()
    art.flush()
    art.close()
    lines = storage.read_bytes(f"{s3_bucket}/t/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(15))


def test_exhausted_retries_surface_at_flush(s3_bucket, s3_server, monkeypatch):
    """When the background upload gives up, the next flush() raises StorageError (never silent);
    the flush's own upload still sends what is pending once the server is back."""
    monkeypatch.setenv(storage.RETRY_ENV, "0.5")
    art = TrialArtifacts(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=0.2)
    s3_server.stop()
    try:
        _write_run(art, range(3))
        deadline = time.monotonic() + 20
        while art._error is None and time.monotonic() < deadline:  # a background cycle has given up
            time.sleep(0.1)
    finally:
        s3_server.start()
    with pytest.raises(storage.StorageError, match="artifact upload failed after retries:.*connection refused"):
        art.flush()
    art.flush()  # the failure was reported once; everything is in the bucket now
    lines = storage.read_bytes(f"{s3_bucket}/t/metrics.jsonl").decode().splitlines()
    assert len(lines) == 3
    art.close()


def test_close_raises_and_keeps_staging_when_uploads_fail(s3_bucket, s3_server, monkeypatch):
    monkeypatch.setenv(storage.RETRY_ENV, "0.3")
    art = TrialArtifacts(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=60)
    _write_run(art, range(3))
    s3_server.stop()
    try:
        with pytest.raises(storage.StorageError, match=r"unsent files kept in .*ganray-artifacts-"):
            art.close()
    finally:
        s3_server.start()
    assert os.path.exists(os.path.join(art.staging_dir, "trial", "metrics.jsonl"))


def test_resumed_trial_continues_metrics_gif_and_events(gcs_bucket, tmp_path):
    """A restarted worker resumes at step 6: metrics.jsonl keeps steps 0-5 from the first
    run, and the GIF also holds the frames the first run left in the bucket."""
    trial, tb = f"{gcs_bucket}/exp/trials/t1", f"{gcs_bucket}/exp/tensorboard/t1"
    with TrialArtifacts(trial, tb) as first:
        _write_run(first, range(9))          # frames at 0 and 5; steps 6-8 are lost with the "crash"
    with TrialArtifacts(trial, tb, resume_step=6) as second:
        _write_run(second, range(6, 12))     # frame at 10
    lines = storage.read_bytes(f"{trial}/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(12))
    assert Image.open(io.BytesIO(storage.read_bytes(f"{trial}/fixed_z.gif"))).n_frames == 3
    # TensorBoard reads the files in name order: the resumed run's file must come second, and
    # its SessionLog.START at step 6 makes TensorBoard drop the first run's steps 6-8.
    files = storage.list_files(tb)
    assert len(files) == 2
    local = []
    for i, uri in enumerate(files):
        storage.download_file(uri, tmp_path / f"{i}.tfevents")
        local.append(str(tmp_path / f"{i}.tfevents"))
    events = _events(local)
    assert [s for s, _ in _scalar_series(events, "loss_G")] == list(range(9)) + list(range(6, 12))
    starts = [ev.step for ev in events if ev.HasField("session_log")]
    assert starts == [0, 6]
