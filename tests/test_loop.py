"""The Ray-free training loop: determinism, bitwise resume, incompatible checkpoints, divergence."""
from __future__ import annotations

import copy
import dataclasses
import math
import time

import pytest
import torch

from ganray import storage
from ganray.config import load
from ganray.data import Dataset, load_dataset
from ganray.train import checkpoint, train

TINY = ["model.width=0.125", "train.batch_size=8", "train.log_every=5", "train.eval_every=5",
        "train.sample_every=5", "train.checkpoint_every=10", "eval.metrics=[]", "data.n_train=400"]


def _run(cfg, resume=None, data=None):
    ckpts: dict[int, dict] = {}
    reports: list[tuple[int, dict]] = []
    result = train(cfg, report=lambda step, metrics, **kw: reports.append((step, dict(metrics))),
                   save_checkpoint=lambda step, state, metrics: ckpts.__setitem__(step, state),
                   should_stop=lambda step, metrics: False, resume_from=resume, data=data)
    return result, ckpts, reports


def _assert_same_state(a: dict, b: dict, path: str = "") -> None:
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same_state(a[k], b[k], f"{path}.{k}")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("family,extra", [
    ("gan", ["model.g_ema=true"]),
    ("gan", ["train.d_updates=simultaneous", "model.g_ema=true"]),
    ("gan", ["train.d_updates=fake_then_real", "model.bn_momentum=0.2", "model.bn_eps=1e-3", "model.leaky_slope=0.3"]),
    ("wgan-gp", ["train.n_critic=2"]),
    ("began", []),
    ("vae", []),
    ("cgan", []),
    ("stackgan", ["data.dataset=captioned-mnist", "model.ngf=8", "model.ndf=8", "train.lr_decay_steps=7"]),
    ("cyclegan", ["data.dataset=digits2inverse", "model.ngf=4", "model.ndf=4"]),
])
def test_resume_is_bitwise_equal_to_a_straight_run(tmp_path, family, extra):
    cfg = load(None, [*TINY, f"train.family={family}", "train.steps=20", *extra])
    data = load_dataset(cfg.data)
    straight, ckpts, _ = _run(cfg, data=data)
    assert straight.step == 20 and set(ckpts) == {10, 20}

    # the 20-step run cut off after step 10 (schedules such as cyclegan's learning-rate decay depend
    # on train.steps), its checkpoint through a real file, resumed for the 10 steps left
    ckpts_half: dict[int, dict] = {}
    train(cfg, report=lambda *a, **kw: None, save_checkpoint=lambda step, st, m: ckpts_half.__setitem__(step, st),
          should_stop=lambda step, metrics: step == 10, data=data)
    assert set(ckpts_half) == {10}
    path = checkpoint.save(ckpts_half[10], tmp_path / "step_10.pt")
    state = checkpoint.load(path)
    resumed, ckpts2, reports2 = _run(cfg, resume=state, data=data)
    assert resumed.step == 20
    assert [s for s, _ in reports2][0] == 15  # started after step 10
    a, b = ckpts[20], ckpts2[20]
    opts = sorted(k for k in a if k.startswith("opt_"))
    nets = ["G_AB", "G_BA", "D_A", "D_B"] if family == "cyclegan" else ["G", "D"]
    assert a["nets"] == b["nets"] == nets and opts == sorted(k for k in b if k.startswith("opt_"))
    assert opts == (["opt_G"] if family == "vae" else ["opt_D", "opt_G"])
    for key in (*nets, "G_ema", *opts, "family_state", "step"):
        _assert_same_state(a[key], b[key], key)
    if family == "cyclegan":  # both image pools, full (batch 8 x 20 steps > 50) and swapping: resumed as they were
        assert [len(a["family_state"][p]["images"]) for p in ("pool_A", "pool_B")] == [50, 50]
    if family == "began":
        assert 0.0 <= a["family_state"]["k_t"] <= 1.0
    # training seconds count on over the resume: the checkpoint's elapsed_sec, then this run's
    carried = state["elapsed_sec"]
    assert carried == ckpts_half[10]["elapsed_sec"] > 0
    assert all(m["elapsed_sec"] > carried for _, m in reports2)
    assert ckpts2[20]["elapsed_sec"] == [m for s, m in reports2 if s == 20][0]["elapsed_sec"]
    # and so do the training steps' seconds (train_sec), which are fewer: sample grids and reports are left out
    assert 0 < state["train_sec"] == ckpts_half[10]["train_sec"] < carried
    assert all(state["train_sec"] < m["train_sec"] < m["elapsed_sec"] for _, m in reports2)
    assert ckpts2[20]["train_sec"] == [m for s, m in reports2 if s == 20][0]["train_sec"]


def test_train_sec_leaves_out_the_cadence_steps_work():
    # a report that takes 0.25 s: wall seconds (elapsed_sec) count it, the training steps' (train_sec) do not
    cfg = load(None, [*TINY, "train.steps=15", "train.checkpoint_every=10"])
    rows: list[dict] = []
    ckpts: dict[int, dict] = {}

    def slow_report(step, metrics, **kw):
        rows.append(dict(metrics))
        time.sleep(0.25)

    train(cfg, report=slow_report, save_checkpoint=lambda step, st, m: ckpts.__setitem__(step, st),
          should_stop=lambda *a: False)
    assert [r["step"] for r in rows] == [5, 10, 15]
    gaps = [r["elapsed_sec"] - r["train_sec"] for r in rows]
    assert gaps[0] == 0.0  # nothing paused before the first cadence step
    # each earlier cadence step's report is left out of train_sec (0.25 s each, plus its sample grid
    # and checkpoint: the upper bounds leave a loaded machine a second)
    assert 0.25 <= gaps[1] < 1.25 and 0.5 <= gaps[2] < 1.5
    assert 0 < rows[0]["train_sec"] < rows[1]["train_sec"] < rows[2]["train_sec"]
    # a checkpoint written before train_sec existed: the clock goes on from its elapsed_sec
    old = {k: v for k, v in ckpts[10].items() if k != "train_sec"}
    rows.clear()
    train(cfg, report=slow_report, save_checkpoint=lambda *a: None, should_stop=lambda *a: False, resume_from=old)
    assert [r["step"] for r in rows] == [15] and rows[0]["train_sec"] > old["elapsed_sec"]


def test_same_seed_same_run_other_seed_other_run():
    cfg = load(None, [*TINY, "train.steps=5"])
    _, c1, _ = _run(cfg)
    _, c2, _ = _run(cfg)
    _, c3, _ = _run(cfg.replace(**{"experiment.seed": 1}))
    _assert_same_state(c1[5]["G"], c2[5]["G"])
    first = next(iter(c1[5]["G"]))
    assert not torch.equal(c1[5]["G"][first], c3[5]["G"][first])


def test_incompatible_checkpoint_is_refused_with_a_clear_message(tmp_path):
    cfg = load(None, [*TINY, "train.steps=10"])
    _, ckpts, _ = _run(cfg)
    path = checkpoint.save(ckpts[10], tmp_path / "c.pt")
    state = checkpoint.load(path)
    other = cfg.replace(**{"model.z_dim": 3, "train.family": "wgan-gp"})
    with pytest.raises(checkpoint.CheckpointError) as e:
        _run(other, resume=state)
    msg = str(e.value)
    assert "model.z_dim: checkpoint has 10, config has 3" in msg
    assert "train.family: checkpoint has 'gan', config has 'wgan-gp'" in msg


def test_unreadable_checkpoint_is_bad_input(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable ganray checkpoint"):
        checkpoint.load(bad)
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    checkpoint.save({"config": {}, "step": 1, "G": {}, "D": {}}, target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)  # fail between write and rename
    with pytest.raises(storage.StorageError, match="disk full"):
        checkpoint.save({"config": {}, "step": 2, "G": {}, "D": {}}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp file left behind


def test_nan_data_is_reported_diverged_and_keeps_last_good_checkpoint():
    cfg = load(None, [*TINY, "train.steps=30", "train.checkpoint_every=5"])
    good = load_dataset(cfg.data)
    x = good.x.clone()
    poisoned = dataclasses.replace(good, x=x)
    # the data turn into NaN after the first checkpoint: steps 6.. see NaN reals
    orig_report_ckpts: dict[int, dict] = {}
    reports: list = []

    def save_checkpoint(step, st, metrics):
        orig_report_ckpts[step] = st
        if step == 5:
            x.fill_(float("nan"))

    result = train(cfg, report=lambda s, m, **kw: reports.append((s, m, kw.get("verdict"))),
                   save_checkpoint=save_checkpoint, should_stop=lambda s, m: False, data=poisoned)
    assert result.diverged
    assert result.verdict["verdict"] == "diverged"
    assert "non-finite" in result.verdict["reasons"][0]
    assert result.step == 10
    assert list(orig_report_ckpts) == [5]  # no checkpoint written from the diverged state
    assert reports[-1][2]["verdict"] == "diverged"


def test_data_shards_are_disjoint():
    ds = load_dataset(load(None, TINY).data)
    a, b = ds.shard(0, 2), ds.shard(1, 2)
    assert len(a) + len(b) == len(ds)
    assert isinstance(ds, Dataset)
    assert not torch.equal(a.x[:10], b.x[:10])


# ---- divergence seen by one rank only: every rank must stop at the same step -------------------

def _diverge_on_rank1(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist

    import ganray.train.loop as loop

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        if rank == 1:  # a non-finite value that only this rank sees (say, an inf in a rank-local statistic)
            orig, calls = loop._finite_params, [0]

            def finite_params(module):  # called for G, then D, at every logged step
                calls[0] += 1
                return orig(module) and calls[0] < 6  # D's parameters, from the 3rd logged step on

            loop._finite_params = finite_params
        cfg = load(None, [*TINY, "train.steps=30", "train.checkpoint_every=100", "train.eval_every=100",
                          "train.sample_every=100", "eval.metrics=[]"])
        reports = []
        result = train(cfg, report=lambda s, m, **kw: reports.append((s, (kw.get("verdict") or {}).get("verdict"))),
                       save_checkpoint=lambda *a: None, should_stop=lambda s, m: False, rank=rank, world_size=2,
                       wrap=lambda mod: torch.nn.parallel.DistributedDataParallel(mod, broadcast_buffers=False))
        results[rank] = {"diverged": result.diverged, "reasons": result.verdict["reasons"], "reports": reports}
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_divergence_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_diverge_on_rank1, args=(str(tmp_path / "store"), results), nprocs=2,
                           start_method="spawn", join=True)
        r0, r1 = dict(results[0]), dict(results[1])
    assert r0["diverged"] and r1["diverged"]
    assert r0["reports"] == r1["reports"] == [(5, None), (10, None), (15, "diverged")]
    assert "on another rank" in r0["reasons"][0]
    assert "D's parameters" in r1["reasons"][0]


# ---- the statistics window -----------------------------------------------------------------------


def test_logged_means_are_exact_when_cadences_do_not_align(monkeypatch):
    """ring8 with log_every 10, eval_every 25, sample_every 35, checkpoint_every 40: every
    reported loss is the mean of the per-step values since the last log step, whichever cadence
    asked for it (before the fix, loss_D at step 75 was 5x the mean and at 80 half of it)."""
    import ganray.train.state as state_mod
    from ganray.families import get_family

    real = get_family("gan")
    per_step: list[dict[str, float]] = []

    def recording_step(*args, **kwargs):
        stats = real.step(*args, **kwargs)
        per_step.append({k: float(v) for k, v in stats.items()})
        return stats

    monkeypatch.setattr(state_mod, "get_family", lambda name: dataclasses.replace(real, step=recording_step))
    cfg = load(None, ["data.dataset=ring8", "data.n_train=2000", "train.steps=83", "train.batch_size=32",
                      "train.log_every=10", "train.eval_every=25", "train.sample_every=35",
                      "train.checkpoint_every=40", "eval.metrics=[]", "eval.n_fixed_z=8"])
    _, _, reports = _run(cfg)
    steps = [s for s, _ in reports]
    assert steps == [10, 20, 25, 30, 35, 40, 50, 60, 70, 75, 80, 83]
    last_log = 0
    for step, metrics in reports:
        window = per_step[last_log:step]  # steps last_log+1 .. step
        for key in ("loss_D", "loss_G", "d_acc_real"):
            expected = sum(w[key] for w in window) / len(window)
            assert metrics[key] == pytest.approx(expected, rel=1e-5, abs=1e-7), (step, key)
        if step % 10 == 0 or step == 83:
            last_log = step
    # the two steps of the bug report, by hand: 75 = mean of 71..75, 80 = mean of 71..80
    by_step = dict(reports)
    assert by_step[75]["loss_D"] == pytest.approx(sum(w["loss_D"] for w in per_step[70:75]) / 5, rel=1e-5)
    assert by_step[80]["loss_D"] == pytest.approx(sum(w["loss_D"] for w in per_step[70:80]) / 10, rel=1e-5)


def test_stats_window_counts_what_it_sums():
    from ganray.train.stats import StatsWindow

    w = StatsWindow()
    for v in (1.0, 2.0, 6.0):
        w.add({"a": torch.tensor(v)})
    w.add({"b": torch.tensor(4.0)})  # a key seen once is divided by one, not by the cadence
    assert w.means() == {"a": 3.0, "b": 4.0}
    again = StatsWindow()
    again.load_state_dict(w.state_dict(), torch.device("cpu"))
    again.add({"a": torch.tensor(3.0)})
    assert again.means() == {"a": 3.0, "b": 4.0}
    w.reset()
    assert w.means() == {}


def test_history_kept_for_training_signals_is_bounded():
    """A long run keeps (and checkpoints) only the logged entries training_signals can read."""
    from ganray.train.stats import history_keep

    cfg = load(None, [*TINY, "data.dataset=ring8", "train.steps=300", "train.log_every=2", "train.eval_every=300",
                      "train.checkpoint_every=300", "train.sample_every=300", "train.batch_size=16"])
    _, ckpts, _ = _run(cfg)
    kept = ckpts[300]["history"]
    assert len(kept) == history_keep(cfg) == 50 < 300 // 2
    assert [e["step"] for e in kept] == [float(s) for s in range(202, 301, 2)]  # the newest, in order


# ---- bf16 autocast (issue 17, hazard 1) ----------------------------------------------------------


def test_bf16_region_of_a_step_serves_the_weights_of_now():
    """A layer stepped inside one autocast region: with autocast's weight cache on (torch's
    default) the next forward returns the pre-step output; in the loop's region it returns the
    output of the stepped weights, the same as a fresh region's."""
    from ganray.train.loop import step_precision

    torch.manual_seed(0)
    x = torch.randn(8, 16)
    outputs = {}
    for name, region in (("cached", lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
                         ("loop", lambda: step_precision(load(None, ["train.bf16=true"]).train, torch.device("cpu")))):
        torch.manual_seed(1)
        layer = torch.nn.Linear(16, 4)
        opt = torch.optim.SGD(layer.parameters(), lr=0.5)
        with region():
            before = layer(x)
            before.float().sum().backward()
            opt.step()
            after = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fresh = layer(x)
        assert after.dtype == torch.bfloat16
        outputs[name] = (before, after, fresh)
    before, after, fresh = outputs["cached"]
    assert torch.equal(after, before) and not torch.equal(after, fresh)  # the hazard, reproduced on the CPU
    before, after, fresh = outputs["loop"]
    assert torch.equal(after, fresh) and not torch.equal(after, before)


def test_bf16_training_every_critic_forward_reads_the_current_weights():
    """The real loop, wgan-gp with n_critic 3, bf16 on the CPU: every D forward (the 3 critic
    steps and the G step of each step) equals a fresh autocast forward of D's weights at that
    moment on the same input (dropout's mask replayed from the RNG state). Before the fix the
    2nd and 3rd critic forwards of each step read D's weights from before the 1st opt_D.step().
    Losses stay finite; the samples and metrics the loop hands out are float32."""
    cfg = load(None, [*TINY, "train.family=wgan-gp", "train.n_critic=3", "train.steps=4", "train.bf16=true",
                      "train.lr_d=1e-2", "train.lr_g=1e-2", "train.device=cpu", "train.sample_every=4"])
    calls: list[dict] = []
    modules: list[torch.nn.Module] = []

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        modules.append(module)
        if len(modules) == 2:  # the loop wraps G, then D
            def before(mod, args):
                calls.append({"x": args[0].detach().clone(), "rng": torch.get_rng_state(), "training": mod.training,
                              "weights": {k: v.detach().clone() for k, v in mod.state_dict().items()}})

            def after(mod, args, out):
                calls[-1]["out"] = out.detach().clone()

            module.register_forward_pre_hook(before)
            module.register_forward_hook(after)
        return module

    reports: list[tuple[int, dict, torch.Tensor | None]] = []
    train(cfg, report=lambda step, metrics, samples=None, **kw: reports.append((step, dict(metrics), samples)),
          save_checkpoint=lambda *a: None, should_stop=lambda *a: False, wrap=wrap)

    assert len(calls) == 4 * (3 + 1)  # per step: n_critic critic forwards, one in the G step
    probe = copy.deepcopy(modules[1])
    probe._forward_hooks.clear()
    probe._forward_pre_hooks.clear()
    stale = []
    for i, call in enumerate(calls):
        probe.load_state_dict(call["weights"])
        probe.train(call["training"])
        torch.set_rng_state(call["rng"])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            fresh = probe(call["x"])
        assert call["out"].dtype == torch.bfloat16, "bf16 autocast did not run"
        if not torch.equal(call["out"], fresh):
            stale.append(i)
    assert stale == [], f"D forwards {stale} (of {len(calls)}; 4 per step) read stale weights"

    assert [s for s, _, _ in reports] == [4]
    _, metrics, samples = reports[-1]
    assert samples is not None and samples.dtype == torch.float32
    for key in ("loss_D", "loss_G", "wasserstein", "gp"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key


@pytest.mark.parametrize("family", ["gan", "wgan-gp", "began", "vae"])
def test_bf16_step_computes_losses_and_statistics_in_float32(family):
    """Under bf16 the networks compute in bf16, but each family takes their outputs to float32
    before its losses and statistics: a difference of two bf16 means (the Wasserstein estimate)
    or a bf16 KL would be quantised to bf16's spacing, and on CUDA autocast keeps sums in float32."""
    from ganray.train.loop import step_precision
    from ganray.train.state import TrainingState

    cfg = load(None, [*TINY, f"train.family={family}", "train.bf16=true", "train.n_critic=1"])
    data = load_dataset(cfg.data)
    s = TrainingState.build(cfg, data, 0, 1, torch.device("cpu"))
    with step_precision(cfg.train, torch.device("cpu")):
        probe = s.m.G_module(s.sampler.sample_z(2)) if family != "vae" else None
        stats = s.family.step(s.m, s.sampler.next_real, s.sampler.sample_z, s.family_state, cfg.train)
    assert probe is None or probe.dtype == torch.bfloat16  # the networks did run in bf16
    assert stats and {k: v.dtype for k, v in stats.items() if v.dtype != torch.float32} == {}
