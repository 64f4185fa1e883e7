"""The conditional families in the loop: cgan's (z, class) grid, StackGAN's two stages (Stage II
on a frozen Stage I loaded by URI, resumed bitwise), and the configs they refuse."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ganray.config import ConfigError, load
from ganray.data import load_dataset
from ganray.data.captioned import encode
from ganray.train import checkpoint, train
from ganray.train.sampling import eval_conditions, fixed_inputs, grid_captions

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.width=0.125", "train.batch_size=8", "train.log_every=5", "train.eval_every=5",
        "train.sample_every=5", "train.checkpoint_every=7", "eval.metrics=[]", "data.n_train=300"]
STACK = [*TINY, "train.family=stackgan", "data.dataset=captioned-mnist", "model.ngf=8", "model.ndf=8",
         "model.z_dim=6"]


def _run(cfg, resume=None, data=None):
    ckpts, reports = {}, []
    result = train(cfg, report=lambda step, metrics, **kw: reports.append((step, dict(metrics), kw.get("samples"))),
                   # a copy: state_dict() holds the live parameters, which train on
                   save_checkpoint=lambda step, state, metrics: ckpts.__setitem__(step, copy.deepcopy(state)),
                   should_stop=lambda step, metrics: False, resume_from=resume, data=data)
    return result, ckpts, reports


def test_cgan_fixed_grid_rows_are_classes_and_columns_the_same_z():
    cfg = load(None, [*TINY, "train.family=cgan", "data.classes=[1,4,7]"])
    data = load_dataset(cfg.data)
    z, y = fixed_inputs(cfg, data, torch.device("cpu"))
    assert y.tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7]  # row r: class r
    assert torch.equal(z[0:3], z[3:6]) and torch.equal(z[0:3], z[6:9])  # column j: one z in every row
    assert not torch.equal(z[0], z[1])
    cond, asked, attributes = eval_conditions(cfg, data, 11, seed=3)
    assert asked.tolist() == [1, 4, 7, 1, 4, 7, 1, 4, 7, 1, 4] and torch.equal(cond, asked)  # a balanced request
    assert attributes is None
    _, _, reports = _run(cfg.replace(**{"train.steps": 5}), data=data)
    samples = reports[-1][2]
    assert samples.shape == (9, 1, 28, 28)


def test_stackgan_text_conditions_come_from_the_captions_of_the_asked_class():
    cfg = load(None, STACK)
    data = load_dataset(cfg.data)
    cond, asked, attributes = eval_conditions(cfg, data, 25, seed=5)
    assert asked.tolist() == [k % 10 for k in range(25)]
    assert cond.shape == (25, data.c.shape[-1]) and attributes.shape == (25, 3)  # the buckets each caption names
    # every condition is one of the captions of an example of the asked digit
    for e, k in zip(cond, asked):
        rows = data.c[data.y == k]  # [n_k, T, E]
        assert (rows == e).all(-1).any()
    z, c = fixed_inputs(cfg, data, torch.device("cpu"))
    assert z.shape == (100, 6) and c.shape == (100, data.c.shape[-1])
    assert torch.equal(c[0], c[9]) and not torch.equal(c[0], c[10])  # row r: one caption
    captions = grid_captions(cfg, data)  # what the report prints beside each row
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert len(captions) == 10 and all(captions[k].split()[-1] == words[k] for k in range(10))
    assert torch.equal(c[0], encode([captions[0]])[0])


def test_stage2_trains_on_a_frozen_stage1_loaded_by_uri_and_resumes_bitwise(tmp_path):
    data = load_dataset(load(None, STACK).data)
    s1_cfg = load(None, [*STACK, "train.steps=7"])
    _, ck1, reports1 = _run(s1_cfg, data=data)
    assert reports1[-1][2].shape == (100, 1, 28, 28)  # Stage I draws 14x14: shown at the data's size
    path = checkpoint.save(ck1[7], tmp_path / "s1" / "checkpoint_000007" / "checkpoint.pt")
    stage1 = {k: v.clone() for k, v in ck1[7]["G"].items()}

    s2 = load(None, [*STACK, "train.stage=2", f"train.stage1_checkpoint={tmp_path / 's1'}", "train.steps=14",
                     "train.lr_decay_steps=5"])
    _, ck2, _ = _run(s2, data=data)
    g2 = ck2[14]["G"]
    for k, v in stage1.items():  # Stage II's embedded Stage I: loaded, and bitwise unchanged by 14 steps
        assert torch.equal(g2[f"stage1.{k}"], v), k
    own = [k for k in g2 if not k.startswith("stage1.")]
    assert own and any(not torch.equal(g2[k], ck2[7]["G"][k]) for k in own)

    # resume Stage II at step 7 (lr halved after steps 5 and 10: 2e-4 / 4 in the last): the same as straight
    half = checkpoint.load(checkpoint.save(ck2[7], tmp_path / "s2.pt"))
    (tmp_path / "s1").rename(tmp_path / "s1-moved")  # a resume needs no Stage-I source: its checkpoint holds Stage I
    _, ck2b, _ = _run(s2, resume=half, data=data)
    for key in ("G", "D", "opt_G", "opt_D"):
        a, b = ck2[14][key], ck2b[14][key]
        if key.startswith("opt_"):
            assert [g["lr"] for g in a["param_groups"]] == [g["lr"] for g in b["param_groups"]] == [5e-5]
            a, b = a["state"], b["state"]
            for p in a:
                for name in a[p]:
                    assert torch.equal(torch.as_tensor(a[p][name]), torch.as_tensor(b[p][name])), (key, p, name)
        else:
            for name in a:
                assert torch.equal(a[name], b[name]), (key, name)
    assert Path(str(path).replace("/s1/", "/s1-moved/")).is_file()


@pytest.mark.parametrize("over,needle", [
    (["train.family=cgan", "data.dataset=ring8"], "train.family: cgan conditions on class labels"),
    (["train.family=cgan", "data.dataset=stacked-mnist"], "train.family: cgan conditions on class labels"),
    (["train.family=stackgan", "data.dataset=mnist5k"], "train.family: stackgan conditions on captions"),
    (["train.family=stackgan", "data.dataset=captioned-mnist", "train.stage=2"], "train.stage1_checkpoint: Stage II"),
    (["train.family=gan", "train.stage1_checkpoint=/x"], "train.stage1_checkpoint: only for train.family stackgan"),
    (["train.family=stackgan", "data.dataset=captioned-mnist", "train.batch_size=1"], "train.batch_size: stackgan"),
    (["train.family=cgan", "model.spectral_norm=true"], "model.spectral_norm: the cgan family does not take it"),
    (["train.family=cgan", "data.classes=[3,5]", "eval.n=39"], "eval.n: 39 samples give 19 per condition for 2 classes"),
    (["train.family=cyclegan", "data.dataset=cyclegan:horse2zebra", "data.load_size=34", "data.crop_size=30"],
     "data.crop_size: cyclegan's generators halve the image twice: the images drawn (30x30)"),
    (["train.family=cyclegan", "data.dataset=digits2inverse", "data.crop_size=26"],
     "data.crop_size: applies to cyclegan:<name>; digits2inverse would ignore it"),
    (["data.load_size=64"], "data.load_size: applies to cub200 and cyclegan:<name>; mnist5k would ignore it"),
])
def test_conditional_configs_refused_with_the_key(over, needle):
    with pytest.raises(ConfigError) as e:
        load(None, over)
    assert needle in str(e.value)


def test_stage2_refuses_a_stage1_of_another_model(tmp_path):
    data = load_dataset(load(None, STACK).data)
    _, ck1, _ = _run(load(None, [*STACK, "train.steps=7"]), data=data)
    checkpoint.save(ck1[7], tmp_path / "s1.pt")
    s2 = load(None, [*STACK, "train.stage=2", f"train.stage1_checkpoint={tmp_path / 's1.pt'}", "model.z_dim=5",
                     "train.steps=2"])
    with pytest.raises(ConfigError, match=r"model.z_dim: Stage I has 6, this config 5"):
        _run(s2, data=data)


def test_ganray_eval_of_a_cgan_checkpoint_asks_for_every_class_and_judges_the_condition(tmp_path, capsys):
    import json

    from ganray import evaluate

    cfg = load(None, [*TINY, "train.family=cgan", "train.steps=7", "eval.metrics=[class_coverage,condition_fidelity]"])
    _, ck, _ = _run(cfg)
    path = checkpoint.save(ck[7], tmp_path / "cgan.pt")
    assert evaluate.main([str(path), "--n", "230", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    m = payload["metrics"]
    assert payload["n"] == 230 and 0 <= m["condition_fidelity"] <= 1 and "condition_fidelity_min" in m


def test_ganray_eval_of_a_cyclegan_checkpoint_says_it_has_no_sampler(tmp_path, capsys):
    from ganray import evaluate

    cfg = load(None, [*TINY, "train.family=cyclegan", "data.dataset=digits2inverse", "model.ngf=4", "model.ndf=4",
                      "train.steps=7"])
    _, ck, _ = _run(cfg)
    path = checkpoint.save(ck[7], tmp_path / "cyclegan.pt")
    assert evaluate.main([str(path), "--n", "200"]) == 2
    assert "translates between two domains" in capsys.readouterr().err


def test_the_cub_preset_trains_in_stage_i_the_stage_i_its_stage_ii_holds():
    """Stage I on CUB images loaded at 64 draws 64x64; Stage II at 256 (jobs/sweep_stackgan.py's load
    size) embeds a 64x64 Stage I: the Stage-I run's G loads into it (tiny channels, no CUB files)."""
    from ganray.families import get_family
    from ganray.families.stackgan import load_stage1_

    small = ["--set", "model.ngf=2", "--set", "model.ndf=2"]
    s1 = load(str(ROOT / "configs" / "stackgan_cub.yaml"), [o for o in small if o != "--set"])
    s2 = s1.replace(**{"train.stage": 2, "train.stage1_checkpoint": "unused", "data.load_size": 256})
    G1 = get_family("stackgan").build(s1, (3, 64, 64)).G_module
    G2 = get_family("stackgan").build(s2, (3, 256, 256)).G_module
    assert G1.size == 64 and G2.stage1.size == 64 and G2.size == 256
    load_stage1_(G2, G1.state_dict())
