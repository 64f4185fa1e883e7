"""ganray.artifacts: the trial recorder's local layout, uploads to real S3 / GCS servers, segment
rotation (each byte uploaded about once), outages, resumed trials, and the reader reading back
what the recorder wrote."""
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
from ganray.artifacts import layout, reader
from ganray.artifacts.events import FIXED_Z_TAG
from ganray.artifacts.images import image_grid
from ganray.artifacts.recorder import TrialRecorder


def recorder(trial: str, tb: str, **kw) -> TrialRecorder:
    """The recorder of a trial folder and a TensorBoard folder given apart."""
    return TrialRecorder(layout.TrialPaths(trial.rsplit("/", 2)[0], trial, tb), **kw)


def _steps(trial: str) -> list[int]:
    """The steps of the trial's metrics stream, as the reader sees it."""
    return [r["step"] for r in reader.read_rows(trial)]


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


def _write_run(art: TrialRecorder, steps: range, *, sample_every: int = 5, pause: float = 0.0) -> None:
    g = torch.Generator().manual_seed(0)
    for step in steps:
        art.row(step, {"loss_G": 0.5 * step, "loss_D": 1.0 / (step + 1)})
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
    with recorder(str(tmp_path / "t"), str(tmp_path / "tb")) as art:
        with pytest.raises(ValueError, match=r"expected \[N, C, H, W\].*got shape \(4, 3\)"):
            art.samples(0, torch.zeros(4, 3))
        with pytest.raises(ValueError, match=r"got shape \(2, 5, 8, 8\)"):
            art.samples(0, torch.zeros(2, 5, 8, 8))


# ---- local storage -------------------------------------------------------------------


def test_local_layout_and_contents(tmp_path):
    trial, tb = tmp_path / "exp/trials/t1", tmp_path / "exp/tensorboard/t1"
    art = recorder(str(trial), str(tb))
    assert art.staging_dir is None  # written in place, nothing to upload
    _write_run(art, range(12))
    art.samples(12, torch.randn(300, 2))  # a 2D mixture: a scatter plot frame
    art.row(13, {"loss_G": float("nan"), "k_t": float("inf")})
    art.write_text("config.yaml", "model:\n  z_dim: 2\n")
    art.verdict({"verdict": "collapsed", "step": 12, "reasons": ["3 of 10 classes"], "kl": float("-inf")})
    art.close()

    # one segment, written in place: strict JSON with the non-finite values as strings
    assert sorted(p.name for p in (trial / "metrics").iterdir()) == ["000000.jsonl"]
    lines = [json.loads(line) for line in (trial / "metrics/000000.jsonl").read_text().splitlines()]
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
    art = recorder(str(tmp_path / "t"), str(tmp_path / "tb"))
    art.close()
    art.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        art.row(0, {"x": 1.0})


def test_record_round_trip_through_the_reader(tmp_path):
    """What the recorder writes, through the loop's callbacks, the reader reads back: config, the
    metrics stream, the verdict with its counts, samples, the GIF, and the checkpoint — which
    report() hands out only once the metrics of its step are visible."""
    paths = layout.trial_paths(str(tmp_path / "exp"), "z2-s0")
    counts = {"of": "classes", "names": [str(k) for k in range(10)], "counts": [5, 0, 0, 1, 0, 0, 0, 0, 0, 94],
              "n": 100, "labeller": "the mnist classifier (held-out accuracy 98.2%)", "step": 20}
    with TrialRecorder(paths, config_yaml="model:\n  z_dim: 2\n") as rec:
        assert rec.report(10, {"loss_D": 0.5, "seed": 0, "verdict": "not a number"}) is None
        rec.stage_checkpoint(20, {"step": 20})
        verdict = {"verdict": "collapsed", "step": 20, "first_seen_step": 20, "reasons": ["2 of 10 classes"],
                   "stopped_early": True, "counts": counts, "evaluator": {"first_seen": 20}}
        staged = rec.report(20, {"loss_D": float("nan"), "step": 20}, samples=torch.zeros(4, 1, 8, 8),
                            verdict=verdict)
        assert staged == {"step": 20}
        assert [r["step"] for r in reader.read_rows(paths.trial)] == [10, 20]  # visible before the checkpoint
        rec.put_checkpoint(20, b"weights")
    t = reader.read_trial(paths, paths.name)
    assert t.config.model.z_dim == 2 and t.notes == []
    assert [(r["step"], r["loss_D"]) for r in t.rows][:1] == [(10, 0.5)] and np.isnan(t.rows[1]["loss_D"])
    assert t.rows[0]["seed"] == 0.0 and "verdict" not in t.rows[0]
    assert t.verdict["verdict"] == "collapsed" and t.verdict["stopped_early"] is True
    assert t.counts == counts and t.verdict["evaluator"] == {"first_seen": 20} and t.verdict["stopper"] is None
    assert [s for s, _ in t.samples] == [20] and t.gif_uri.endswith("fixed_z.gif")
    assert t.checkpoints == [(20, str(tmp_path / "exp/trials/z2-s0/checkpoint_000020/checkpoint.pt"))]
    assert storage.read_bytes(t.checkpoints[0][1]) == b"weights"
    assert reader.latest_checkpoint(paths.trial) == t.checkpoints[0][1]


# ---- buckets -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_bucket_layout_background_uploads_and_staging(request, kind, tmp_path):
    base = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    server = request.getfixturevalue("s3_server" if kind == "s3" else "gcs_server")
    bucket = base.split("://", 1)[1]
    trial, tb = f"{base}/exp/trials/t1", f"{base}/exp/tensorboard/t1"
    art = recorder(trial, tb, upload_every_sec=0.2, rotate_every_sec=0.2)
    _write_run(art, range(6))
    # The background thread uploads without any flush().
    deadline = time.monotonic() + 20
    while "exp/trials/t1/metrics/000000.jsonl" not in server.objects(bucket) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "exp/trials/t1/metrics/000000.jsonl" in server.objects(bucket)
    _write_run(art, range(6, 11))
    art.verdict({"verdict": "healthy"})
    staging = art.staging_dir
    art.close()
    assert not os.path.exists(staging)

    objs = server.objects(bucket)
    for name in ("metrics/000000.jsonl", "verdict.json", "fixed_z.gif", "samples/step_000000.png",
                 "samples/step_000005.png", "samples/step_000010.png"):
        assert f"exp/trials/t1/{name}" in objs, name
    assert _steps(trial) == list(range(11))
    assert Image.open(io.BytesIO(storage.read_bytes(f"{trial}/fixed_z.gif"))).n_frames == 3

    events, event_objs = _bucket_events(server, bucket, "exp/tensorboard/t1/", tmp_path)
    assert _scalar_series(events, "loss_D") == [(s, pytest.approx(1.0 / (s + 1))) for s in range(11)]
    stats = art.stats
    assert sum(event_objs.values()) == stats.event_bytes_written  # every byte arrived
    assert stats.event_upload_ratio == pytest.approx(1.0)           # rotating at every tick: each byte once
    metrics_objs = {k: n for k, n in objs.items() if k.startswith("exp/trials/t1/metrics/")}
    assert len(metrics_objs) == stats.metrics_files >= 2               # segments, each sent once
    assert sum(metrics_objs.values()) == stats.metrics_bytes_written == stats.metrics_bytes_uploaded


def test_rotation_bounds_resent_bytes(s3_bucket, s3_server, tmp_path):
    """Rotating every ~3 upload ticks: the open file is re-sent, closed ones are sent once;
    TensorBoard's name order is write order, and every event arrives exactly once."""
    bucket = s3_bucket.removeprefix("s3://")
    art = recorder(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=0.15, rotate_every_sec=0.45)
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
    art = recorder(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=0.2)
    _write_run(art, range(5))
    back = s3_server.outage(2.0)
    _write_run(art, range(5, 15), pause=0.05)
    back.join()
    art.flush()
    art.close()
    assert _steps(f"{s3_bucket}/t") == list(range(15))


def test_exhausted_retries_surface_at_flush(s3_bucket, s3_server, monkeypatch):
    """When the background upload gives up, the next flush() raises StorageError (never silent);
    the flush's own upload still sends what is pending once the server is back."""
    monkeypatch.setenv(storage.RETRY_ENV, "0.5")
    art = recorder(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=0.2)
    s3_server.stop()
    try:
        _write_run(art, range(3))
        deadline = time.monotonic() + 20
        while art._up._error is None and time.monotonic() < deadline:  # a background cycle has given up
            time.sleep(0.1)
    finally:
        s3_server.start()
    with pytest.raises(storage.StorageError, match="artifact upload failed after retries:.*connection refused"):
        art.flush()
    art.flush()  # the failure was reported once; everything is in the bucket now
    assert _steps(f"{s3_bucket}/t") == [0, 1, 2]
    art.close()


def test_close_raises_and_keeps_staging_when_uploads_fail(s3_bucket, s3_server, monkeypatch):
    monkeypatch.setenv(storage.RETRY_ENV, "0.3")
    art = recorder(f"{s3_bucket}/t", f"{s3_bucket}/tb", upload_every_sec=60)
    _write_run(art, range(3))
    s3_server.stop()
    try:
        with pytest.raises(storage.StorageError, match=r"unsent files kept in .*ganray-record-"):
            art.close()
    finally:
        s3_server.start()
    assert os.path.exists(os.path.join(art.staging_dir, "trial", "metrics", "000000.jsonl"))


def test_resumed_trial_continues_metrics_gif_and_events(gcs_bucket, tmp_path):
    """A restarted worker resumes at step 6: the metrics stream keeps steps 0-5 from the first
    run (its segment is rewritten without 6-8), and the GIF also holds the frames the first run
    left in the bucket. A third writer that starts afresh (no checkpoint) drops every earlier row."""
    trial, tb = f"{gcs_bucket}/exp/trials/t1", f"{gcs_bucket}/exp/tensorboard/t1"
    with recorder(trial, tb) as first:
        _write_run(first, range(9))          # frames at 0 and 5; steps 6-8 are lost with the "crash"
    with recorder(trial, tb, resume_step=6) as second:
        _write_run(second, range(6, 12))     # frame at 10
    assert _steps(trial) == list(range(12))
    segments = [u.rsplit("/", 1)[-1] for u in storage.list_files(f"{trial}/metrics")]
    assert segments == ["000000.jsonl", "000001.jsonl"]
    first_rows = storage.read_bytes(f"{trial}/metrics/000000.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in first_rows] == list(range(6))
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
    with recorder(trial, tb) as third:
        _write_run(third, range(3))
    assert _steps(trial) == [0, 1, 2]
