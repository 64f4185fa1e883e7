"""The cases the verdict thresholds were calibrated on, and the table docs/metrics.md quotes.

    python -m ganray.metrics.calibrate            # prints a Markdown table (about a minute on 2 cores)

The table's last column is each case's margin (docs/metrics.md, "Margins"): the deciding
statistic, its 95% interval and the threshold, **borderline** where the interval straddles it.

Every case is built from data that ships or is generated offline: mnist5k (reference = its
"train" split, 4,500 digits; generated stand-ins from its held-out "test" split, 500 digits,
drawn with replacement where a case needs more), stacked MNIST built from those digits, and
the 2D mixtures drawn from `sample_mixture`. The tests in tests/test_collapse.py assert the
verdict of each acceptance case; this module shows the numbers around the thresholds.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ganray.config import TWO_D_DATASETS, Config, DataConfig, from_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    name: str
    dataset: str
    expect: tuple[str, ...]  # acceptable verdicts
    make: Callable[[torch.Generator], Tensor]
    metrics: tuple[str, ...] = ()  # () = the config's default eval.metrics


def _mnist5k(split: str):
    from ganray.data import load_dataset  # noqa: PLC0415

    return load_dataset(DataConfig(dataset="mnist5k"), split)


def with_replacement(x: Tensor, n: int, g: torch.Generator) -> Tensor:
    return x[torch.randint(x.shape[0], (n,), generator=g)]


def jittered(x: Tensor, n: int, g: torch.Generator) -> Tensor:
    """n digits drawn with replacement from x, each randomly shifted (±2 px) and rotated (±10°):
    more held-out digits than there are, without exact copies."""
    from ganray.metrics.classifier.training import augment  # noqa: PLC0415

    return augment(with_replacement(x, n, g), g)


def digits_of(x: Tensor, y: Tensor, classes: tuple[int, ...]) -> Tensor:
    return x[torch.isin(y, torch.tensor(classes))]


def stacked_from(x: Tensor, y: Tensor, n: int, g: torch.Generator, triples: Tensor | None = None) -> Tensor:
    """n stacked-MNIST samples [n, 3, 28, 28] from digits x [N, 1, 28, 28]: each channel a random
    digit; with `triples` [T, 3], each sample's classes are a random row of it (a collapsed G)."""
    if triples is None:
        idx = torch.randint(x.shape[0], (n, 3), generator=g)
    else:
        by_class = [torch.nonzero(y == c).flatten() for c in range(10)]
        want = triples[torch.randint(triples.shape[0], (n,), generator=g)]  # [n, 3] classes
        idx = torch.empty(n, 3, dtype=torch.long)
        for c in range(10):
            hit = want == c
            pool = by_class[c]
            idx[hit] = pool[torch.randint(pool.numel(), (int(hit.sum()),), generator=g)]
    return x[:, 0][idx]  # [n, 3, 28, 28]


def image_cases() -> list[Case]:
    te, tr = _mnist5k("test"), _mnist5k("train")
    x, y = te.x, te.y
    x_all, y_all = torch.cat([tr.x, te.x]), torch.cat([tr.y, te.y])
    ok = ("healthy",)
    return [
        Case("mnist5k held-out, balanced (500)", "mnist5k", ok, lambda g: x),
        Case("mnist5k held-out, jittered (2,000)", "mnist5k", ok, lambda g: jittered(x, 2000, g)),
        Case("mnist5k held-out, exact copies (2,000 drawn from 500)", "mnist5k", ("collapsed",),
             lambda g: with_replacement(x, 2000, g)),
        Case("nine digits (no 5s)", "mnist5k", ("partial_collapse",), lambda g: digits_of(x, y, (0, 1, 2, 3, 4, 6, 7, 8, 9))),
        Case("digit 0 at 2x its share (jittered, 1,100)", "mnist5k", ok,
             lambda g: torch.cat([jittered(x, 1000, g), jittered(digits_of(x, y, (0,)), 100, g)])),
        Case("digits 0, 1 at 4x their share (jittered, 1,600)", "mnist5k", ("partial_collapse",),
             lambda g: torch.cat([jittered(x, 1000, g), jittered(digits_of(x, y, (0, 1)), 600, g)])),
        Case("a quarter near-copies (375 held-out + 5 copies of 25)", "mnist5k", ("partial_collapse",),
             lambda g: (lambda p: torch.cat([x[p[:375]], x[p[375:400]].repeat(5, 1, 1, 1)]))(
                 torch.randperm(len(x), generator=g))),
        Case("three digits (1, 4, 7)", "mnist5k", ("partial_collapse", "collapsed"),
             lambda g: jittered(digits_of(x, y, (1, 4, 7)), 500, g)),
        *[Case(f"one digit ({d}): its 500 mnist5k digits", "mnist5k", ("collapsed",),
               lambda g, d=d: digits_of(x_all, y_all, (d,))) for d in range(10)],
        Case("one digit (2), held-out, jittered", "mnist5k", ("collapsed",), lambda g: jittered(digits_of(x, y, (2,)), 500, g)),
        Case("uniform noise U(-1, 1)", "mnist5k", ("garbage",), lambda g: torch.rand(500, 1, 28, 28, generator=g) * 2 - 1),
        Case("Gaussian noise", "mnist5k", ("garbage",), lambda g: (torch.randn(500, 1, 28, 28, generator=g) * 0.5).clamp(-1, 1)),
        Case("one image repeated", "mnist5k", ("collapsed",), lambda g: x[7:8].repeat(500, 1, 1, 1)),
        Case("mean image repeated (constant G)", "mnist5k", ("collapsed",),
             lambda g: tr.x.mean(0, keepdim=True).repeat(500, 1, 1, 1)),
        Case("ten images (one per class) repeated", "mnist5k", ("collapsed",),
             lambda g: x[[50 * c for c in range(10)]].repeat(50, 1, 1, 1)),
        Case("held-out + N(0, 0.3²) pixel noise", "mnist5k", ok,
             lambda g: (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)),
        Case("held-out, blurred 5x5", "mnist5k", ok, lambda g: torch.nn.functional.avg_pool2d(x, 5, 1, 2)),
    ]


def stacked_cases() -> list[Case]:
    te = _mnist5k("test")
    triples = lambda g: torch.randint(10, (50, 3), generator=g)  # noqa: E731
    # PRDC on 26,000 samples would need a 26,000² distance matrix: the paper protocol is the histogram
    metrics = ("class_coverage", "fcd", "sample_diversity")
    return [
        Case("stacked, real digits (26,000)", "stacked-mnist", ("healthy",), lambda g: stacked_from(te.x, te.y, 26_000, g),
             metrics),
        Case("stacked, 50 fixed triples (26,000)", "stacked-mnist", ("collapsed",),
             lambda g: stacked_from(te.x, te.y, 26_000, g, triples(g)), metrics),
        Case("stacked, real digits (2,000)", "stacked-mnist", ("healthy",), lambda g: stacked_from(te.x, te.y, 2_000, g)),
    ]


def mixture_cases() -> list[Case]:
    from ganray.data.mixtures import mixture_spec, sample_mixture  # noqa: PLC0415

    def only(name: str, modes: tuple[int, ...]) -> Callable[[torch.Generator], Tensor]:
        def make(g: torch.Generator) -> Tensor:
            means, sigma = mixture_spec(name)
            pick = torch.tensor(modes)[torch.randint(len(modes), (2500,), generator=g)]
            return means[pick] + sigma * torch.randn(2500, 2, generator=g)
        return make

    out = []
    for name in TWO_D_DATASETS:
        out += [
            Case(f"{name}, true mixture (2,500)", name, ("healthy",), lambda g, name=name: sample_mixture(name, 2500, g)[0]),
            Case(f"{name}, 3 of the modes", name, ("collapsed",), only(name, (0, 1, 2))),
            Case(f"{name}, one point repeated", name, ("collapsed",), lambda g, name=name: mixture_spec(name)[0][:1].repeat(2500, 1)),
            Case(f"{name}, N(0, 2²) noise", name, ("garbage",), lambda g: 2 * torch.randn(2500, 2, generator=g)),
        ]
    return out


def evaluate_cases(cases: list[Case], seed: int = 0) -> list[tuple[Case, object]]:
    """(case, EvalResult) for each case, one Evaluator per dataset."""
    from ganray.collapse import Evaluator  # noqa: PLC0415
    from ganray.data import load_dataset  # noqa: PLC0415

    evaluators: dict[tuple, Evaluator] = {}
    real = {}
    out = []
    for case in cases:
        key = (case.dataset, case.metrics)
        if key not in evaluators:
            raw: dict = {"data": {"dataset": case.dataset}}
            if case.metrics:
                raw["eval"] = {"metrics": list(case.metrics)}
            cfg: Config = from_dict(raw)
            if case.dataset not in real:
                real[case.dataset] = load_dataset(cfg.data, "train")
            evaluators[key] = Evaluator(cfg, real[case.dataset], "cpu")
        g = torch.Generator().manual_seed(seed)
        out.append((case, evaluators[key](case.make(g), None, 0, [])))
    return out


COLUMNS = ("classes_covered", "modes_covered", "kl_uniform", "reverse_kl", "hq_share", "fcd", "precision", "recall",
           "density", "coverage", "near_real_share", "spread_ratio", "duplicate_share", "mean_confidence")


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:.3g}"


def _margin(margin: dict | None) -> str:
    """The margin column: "kl_uniform 0.0277 (0.0146–0.0417) vs 0.1", **borderline** when it straddles."""
    if not margin:
        return ""
    text = (f"{margin['statistic']} {_fmt(margin['value'])} ({_fmt(margin['low'])}–{_fmt(margin['high'])}) "
            f"vs {_fmt(margin['threshold'])}")
    return text + (" **borderline**" if margin["borderline"] else "")


def table(results) -> str:
    cols = [c for c in COLUMNS if any(c in r.metrics for _, r in results)]
    lines = ["| case | verdict | expected | " + " | ".join(cols) + " | margin (95% interval) vs threshold |",
             "|---" * (len(cols) + 4) + "|"]
    for case, r in results:
        cells = [_fmt(r.metrics[c]) if c in r.metrics and not math.isnan(r.metrics[c]) else "" for c in cols]
        flag = "" if r.verdict in case.expect else " **(!)**"
        lines.append(f"| {case.name} | {r.verdict}{flag} | {' or '.join(case.expect)} | " + " | ".join(cells)
                     + f" | {_margin(r.margin)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganray.metrics.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("image", "stacked", "2d"), default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    groups = {"image": image_cases, "stacked": stacked_cases, "2d": mixture_cases}
    wrong = []
    for name, make in groups.items():
        if args.only not in (None, name):
            continue
        results = evaluate_cases(make(), args.seed)
        print(f"\n{name}:\n\n{table(results)}")
        for c, r in results:
            if r.verdict not in c.expect:
                wrong.append(c.name)
                print(f"\n{c.name}: {r.verdict}: " + "; ".join(r.reasons), file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
