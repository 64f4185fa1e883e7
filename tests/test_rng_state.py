"""The run's random streams in checkpoints (issue 17, hazards 4 and 5): the sampler draws indices
and z on the training device from generators recorded in the checkpoint, a resumed run is bitwise
a straight one, and only the training device's CUDA RNG state is saved, so that a checkpoint
written by a process that saw 4 GPUs resumes on a 1-GPU node."""
from __future__ import annotations

import logging

import pytest
import torch

from ganray.config import load
from ganray.data import load_dataset
from ganray.train import checkpoint, train
from ganray.train.loop import CLOCK_FIELDS
from ganray.train.sampling import Sampler
from ganray.train.state import rng_state, set_rng_state

CPU = torch.device("cpu")
# checkpoint_every 10 falls inside a log window (8..12) and between evaluations (9, 18); sample_every 7
TINY = ["model.width=0.125", "train.batch_size=8", "train.log_every=4", "train.eval_every=9", "train.sample_every=7",
        "train.checkpoint_every=10", "data.n_train=400", "eval.n=64", "eval.n_fixed_z=8"]


def _run(cfg, data, folder, resume=None):
    """Train on the CPU; each checkpoint through a real file in `folder` (a state_dict shares the
    live tensors, so what a killed run would have left is what was written at that step)."""
    folder.mkdir()
    ckpts: dict[int, dict] = {}
    rows: list[dict] = []

    def save(step, state, metrics):
        ckpts[step] = checkpoint.load(checkpoint.save(state, folder / f"step_{step}.pt"))

    train(cfg, report=lambda step, metrics, **kw: rows.append({k: v for k, v in metrics.items() if k not in CLOCK_FIELDS}),
          save_checkpoint=save, should_stop=lambda step, metrics: False, resume_from=resume, data=data, device=CPU)
    return ckpts, rows


def _same(a, b, path: str = "") -> None:
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{path} differs"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture
def fake_gpus(monkeypatch):
    """n stand-in GPUs for a machine without one: torch's own torch.cuda.random code runs (get/set
    of one device's state, *_all over every visible device, manual_seed_all), against n CPU
    generators in the place of the GPUs' default generators. Mocks only where no real part can
    run: this machine has no GPU, and a GPU count cannot be changed inside one process anyway."""
    import torch.cuda.random as cuda_random

    def install(n: int) -> list[torch.Generator]:
        gens = [torch.Generator().manual_seed(1000 + i) for i in range(n)]  # a different state per GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "default_generators", tuple(gens), raising=False)
        monkeypatch.setattr(cuda_random, "device_count", lambda: n)
        monkeypatch.setattr(cuda_random, "current_device", lambda: 0)
        monkeypatch.setattr(cuda_random, "is_initialized", lambda: True)
        monkeypatch.setattr(cuda_random, "_lazy_init", lambda: None)
        monkeypatch.setattr(cuda_random, "_lazy_call", lambda cb, **kw: cb())
        return gens

    return install


# ---- hazard 4: the sampler's device generators; bitwise resume --------------------------------------


def test_resume_with_evaluations_is_bitwise_a_straight_run(tmp_path):
    """23 steps straight, and 10 + a resume from the step-10 checkpoint (mid log window, between
    evaluations, with an evaluator drawing from the global RNGs): the same rows after step 10, the
    same models, optimisers, sampler streams and global RNG state at the end."""
    cfg = load(None, [*TINY, "train.steps=23", "eval.metrics=[class_coverage,sample_diversity,fixed_z_flip_rate]"])
    data = load_dataset(cfg.data)
    straight, rows_a = _run(cfg, data, tmp_path / "straight")
    resumed, rows_b = _run(cfg, data, tmp_path / "resumed", resume=straight[10])  # as if killed after step 10
    assert [r["step"] for r in rows_a] == [4, 7, 8, 9, 10, 12, 14, 16, 18, 20, 21, 23]
    assert "fixed_z_flip_rate" in rows_a[-1]  # the evaluator ran, and judged against the step-18 baseline
    assert rows_b == [r for r in rows_a if r["step"] > 10]  # every logged mean and metric, exactly
    a, b = straight[23], resumed[23]
    for key in ("G", "D", "opt_G", "opt_D", "family_state", "evaluator", "rng_per_rank"):
        _same(a[key], b[key], key)
    untimed = lambda history: [{k: v for k, v in e.items() if k not in CLOCK_FIELDS} for e in history]  # noqa: E731
    assert untimed(a["history"]) == untimed(b["history"])
    assert set(a["rng_per_rank"][0]["sampler"]) == {"data", "z", "device_type"}


def test_sampler_draws_on_its_device_from_recorded_generators():
    """Indices and z come from generators on the sampler's device; its state continues the
    streams exactly, and on the CPU they are those of a plain CPU generator (the streams, and so
    every pinned number of a CPU run, are the ones before the change)."""
    data = load_dataset(load(None, ["data.n_train=400"]).data)
    s = Sampler(data, 8, 5, seed=3, device=CPU)
    assert s.g_data.device == s.g_z.device == CPU
    x, z = s.next_real(), s.sample_z(8)
    assert x.device == z.device == CPU and z.shape == (8, 5)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(s.last_idx, torch.randint(0, data.x.shape[0], (8,), generator=g))
    assert torch.equal(z, torch.randn(8, 5, generator=torch.Generator().manual_seed(3 + 1_000_003)))
    saved = s.state()
    after = (s.next_real(), s.sample_z(8))
    other = Sampler(data, 8, 5, seed=99, device=CPU)
    other.load_state(saved, step=1)
    assert torch.equal(other.next_real(), after[0]) and torch.equal(other.sample_z(8), after[1])


def test_sampler_streams_of_a_gpu_checkpoint_go_on_fresh_on_the_cpu(tmp_path, caplog):
    """A CUDA generator's state (Philox: 8 bytes of seed, 8 of offset) cannot be a CPU
    generator's: a GPU run's checkpoint resumed on the CPU trains on, with fresh streams seeded
    from the seed and step, and says so."""
    cfg = load(None, [*TINY, "train.steps=13", "eval.metrics=[]"])
    data = load_dataset(cfg.data)
    state = _run(cfg, data, tmp_path / "straight")[0][10]
    philox = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 48, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    state["rng_per_rank"][0]["sampler"] = {"data": philox, "z": philox.clone(), "device_type": "cuda"}
    with caplog.at_level(logging.WARNING, logger="ganray.train.sampling"):
        _, rows = _run(cfg, data, tmp_path / "resumed", resume=state)
    assert [r["step"] for r in rows] == [12, 13]
    assert "sampler streams of a cuda checkpoint cannot continue on cpu" in caplog.text
    fresh = Sampler(data.shard(0, 1), 8, cfg.model.z_dim, seed=0, device=CPU)
    fresh.load_state({"device_type": "cuda"}, step=10)
    straight = Sampler(data.shard(0, 1), 8, cfg.model.z_dim, seed=0, device=CPU)
    assert not torch.equal(fresh.sample_z(8), straight.sample_z(8))  # not the run's first batches again


# ---- hazard 5: the training device's CUDA RNG state only ---------------------------------------------


def test_a_checkpoint_holds_exactly_the_training_devices_cuda_state(tmp_path, fake_gpus):
    """In a process that sees 4 GPUs: training on cuda:2 saves cuda:2's state (one tensor, not a
    list of 4); training on the CPU saves none, in rng_state and in the loop's checkpoint."""
    gens = fake_gpus(4)
    cfg = load(None, [*TINY, "train.steps=10", "eval.metrics=[]"])
    ckpts, _ = _run(cfg, load_dataset(cfg.data), tmp_path / "run")
    assert "cuda" not in ckpts[10]["rng_per_rank"][0]["global"]  # before: the states of all 4 GPUs
    assert "cuda" not in rng_state(CPU)
    for i, g in enumerate(gens):  # the run's torch.manual_seed seeded every GPU alike
        g.manual_seed(2000 + i)
    s = rng_state(torch.device("cuda", 2))
    assert torch.is_tensor(s["cuda"]) and torch.equal(s["cuda"], gens[2].get_state())
    assert not torch.equal(s["cuda"], gens[0].get_state())


def test_a_checkpoint_written_with_4_visible_gpus_resumes_on_1(tmp_path, fake_gpus, caplog):
    """The checkpoints before this change held every visible GPU's state ("cuda": a list of 4);
    on a node with 1 GPU the old restore (set_rng_state_all) failed on GPU 1. Now such a state
    resumes: on cuda:0 the entry of device 0 is restored, on a device beyond the list it is
    skipped with a log line, on the CPU it is not needed, and the CPU run is bitwise a straight one."""
    cfg = load(None, [*TINY, "train.steps=13", "eval.metrics=[]"])
    data = load_dataset(cfg.data)
    straight, rows_a = _run(cfg, data, tmp_path / "straight")
    state = straight[10]
    fake_gpus(4)
    four = torch.cuda.get_rng_state_all()  # what the writer of a 4-GPU process saved
    assert len(four) == 4
    state["rng_per_rank"][0]["global"]["cuda"] = four
    state = checkpoint.load(checkpoint.save(state, tmp_path / "four_gpus.pt"))

    gens = fake_gpus(1)  # the resuming node: one GPU
    resumed, rows_b = _run(cfg, data, tmp_path / "resumed", resume=state)
    assert rows_b == [r for r in rows_a if r["step"] > 10]
    _same(straight[13]["G"], resumed[13]["G"], "G")
    _same(straight[13]["rng_per_rank"], resumed[13]["rng_per_rank"], "rng_per_rank")

    old = state["rng_per_rank"][0]["global"]
    set_rng_state(old, torch.device("cuda", 0))
    assert torch.equal(gens[0].get_state(), four[0])  # device 0's entry, onto device 0
    gens = fake_gpus(2)
    before = gens[1].get_state()
    with caplog.at_level(logging.INFO, logger="ganray.train.state"):
        set_rng_state({**old, "cuda": four[:1]}, torch.device("cuda", 1))  # a 1-GPU list, training on cuda:1
    assert "none for cuda:1: not restored" in caplog.text and torch.equal(gens[1].get_state(), before)
    new = rng_state(torch.device("cuda", 1))  # and the new format goes back onto its device
    gens[1].manual_seed(5)
    set_rng_state(new, torch.device("cuda", 1))
    assert torch.equal(gens[1].get_state(), new["cuda"])


# ---- on a real GPU (skipped without one) --------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampler_draws_on_the_gpu_without_a_host_sync():
    dev = torch.device("cuda", torch.cuda.current_device())
    data = load_dataset(load(None, ["data.n_train=400"]).data)
    s = Sampler(data, 8, 5, seed=3, device=dev)
    assert s.g_data.device.type == s.g_z.device.type == "cuda"
    s.next_real(), s.sample_z(8)  # first calls may allocate; then no step may wait for the host
    torch.cuda.set_sync_debug_mode("error")
    try:
        x, z = s.next_real(), s.sample_z(8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device == z.device == dev
    saved = s.state()
    assert saved["device_type"] == "cuda"
    after = (s.next_real(), s.sample_z(8))
    s.load_state(saved, step=1)
    assert torch.equal(s.next_real(), after[0]) and torch.equal(s.sample_z(8), after[1])
    assert torch.is_tensor(rng_state(dev)["cuda"])
