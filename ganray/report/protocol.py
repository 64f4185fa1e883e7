"""A published protocol's table: the paper's rows beside ganray's, from the trial records only.

    result = protocol_result(exp_uri, PACGAN_TABLE1)     # the trials' final metrics per variant
    text = render_markdown(result)                       # the markdown table and its checks
    write_protocol(exp_uri, PACGAN_TABLE1)               # <exp>/protocol.md; returns (uri, text)

A protocol (`Protocol`) names its paper rows, each with the sweep variant ganray runs for it
(`sweep.variants`, recorded as each trial's experiment.variant), the metric keys of its columns
and the key whose agreement is checked (modes covered). ganray's row of a variant is the mean and
sample standard deviation over its trials (one per seed) of each trial's final value: the value
of its last evaluation (the last metrics row that holds the key).

The papers print mean ± standard error over n runs (PacGAN: 10): a run's standard deviation is
then SE·√n. "Within 2 paper SDs" means |ganray's mean − the paper's mean| ≤ 2·SE·√n; a row the
paper prints without an error (VEEGAN's DCGAN on Stacked MNIST) has no such check. The
comparisons (PacGAN2 against the GAN) compare the means of modes covered.

jobs/protocol_pacgan.py and jobs/protocol_stacked_mnist.py write <exp>/protocol.md beside the
sweep's report; docs/protocols.md describes the protocols. Reads through ganray.artifacts.reader
and writes through ganray.storage: no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ganray import storage
from ganray.artifacts import reader

PROTOCOL_MD = "protocol.md"
WITHIN_SDS = 2.0  # the agreement check: ganray's mean within this many paper SDs of the paper's mean


@dataclass(frozen=True)
class Stat:
    """A paper's number: mean ± err (err: its standard error; None: printed without one), and
    `shown`, the number as the paper prints it."""

    mean: float
    err: float | None
    shown: str


@dataclass(frozen=True)
class Column:
    key: str  # the metric key in ganray's record (e.g. modes_covered)
    title: str  # the paper's column title
    decimals: int  # ganray's number is printed with these decimals
    percent: bool = False  # a share, printed as a percentage


@dataclass(frozen=True)
class PaperRow:
    group: str  # the paper's dataset column: "2D-ring"
    label: str  # the paper's row: "GAN", "PacGAN2"
    variant: str  # the sweep variant ganray runs for it: "ring8-gan"
    values: dict[str, Stat]  # metric key -> the paper's number


@dataclass(frozen=True)
class Protocol:
    title: str  # "PacGAN Table 1"
    source: str  # where the numbers are printed
    columns: tuple[Column, ...]
    rows: tuple[PaperRow, ...]
    check_key: str  # the key of the within-2-SD check (modes covered)
    comparisons: tuple[tuple[str, str, str], ...]  # (group, variant expected to cover more modes, baseline)
    n_runs: int  # the paper's runs per row (its errors are standard errors over these)
    authors_steps: int  # the length of the authors' runs in ganray's steps
    authors_length: str  # said beside it: "400 epochs"


MODES, HQ, REV_KL = Column("modes_covered", "modes", 2), Column("hq_share", "high quality", 1, True), \
    Column("reverse_kl_hq", "reverse KL", 3)

PACGAN_TABLE1 = Protocol(
    title="PacGAN Table 1: 2-D mixtures",
    source="Lin et al. 2018, PacGAN, Table 1 (mean ± standard error of 10 runs)",
    columns=(MODES, HQ, REV_KL),
    rows=(
        PaperRow("2D-ring", "GAN", "ring8-gan",
                 {"modes_covered": Stat(6.3, 0.5, "6.3 ± 0.5"),
                  "hq_share": Stat(0.982, 0.002, "98.2 ± 0.2%"),
                  "reverse_kl_hq": Stat(0.45, 0.09, "0.45 ± 0.09")}),
        PaperRow("2D-ring", "PacGAN2", "ring8-pacgan2",
                 {"modes_covered": Stat(7.9, 0.1, "7.9 ± 0.1"),
                  "hq_share": Stat(0.956, 0.020, "95.6 ± 2.0%"),
                  "reverse_kl_hq": Stat(0.07, 0.03, "0.07 ± 0.03")}),
        PaperRow("2D-grid", "GAN", "grid25-gan",
                 {"modes_covered": Stat(17.3, 0.8, "17.3 ± 0.8"),
                  "hq_share": Stat(0.948, 0.007, "94.8 ± 0.7%"),
                  "reverse_kl_hq": Stat(0.70, 0.07, "0.70 ± 0.07")}),
        PaperRow("2D-grid", "PacGAN2", "grid25-pacgan2",
                 {"modes_covered": Stat(23.8, 0.7, "23.8 ± 0.7"),
                  "hq_share": Stat(0.913, 0.008, "91.3 ± 0.8%"),
                  "reverse_kl_hq": Stat(0.13, 0.04, "0.13 ± 0.04")}),
    ),
    check_key="modes_covered",
    comparisons=(("2D-ring", "ring8-pacgan2", "ring8-gan"), ("2D-grid", "grid25-pacgan2", "grid25-gan")),
    n_runs=10,
    authors_steps=400_000,
    authors_length="400 epochs of 100,000 packs, 100 packs a step",
)

STACKED_MNIST = Protocol(
    title="PacGAN Table 2: Stacked MNIST",
    source="Lin et al. 2018, PacGAN, Table 2 (its own rows: mean ± standard error of 10 runs; "
           "DCGAN (VEEGAN's): quoted from Srivastava et al. 2017, VEEGAN, one number)",
    columns=(Column("classes_covered", "modes", 1), Column("kl_uniform", "KL", 3)),
    rows=(
        PaperRow("Stacked MNIST", "DCGAN (VEEGAN's)", "dcgan",
                 {"classes_covered": Stat(99.0, None, "99.0"),
                  "kl_uniform": Stat(3.40, None, "3.40")}),
        PaperRow("Stacked MNIST", "DCGAN (PacGAN's implementation)", "dcgan",
                 {"classes_covered": Stat(78.9, 6.46, "78.9 ± 6.46"),
                  "kl_uniform": Stat(4.50, 0.127, "4.50 ± 0.127")}),
        PaperRow("Stacked MNIST", "PacDCGAN2", "pacdcgan2",
                 {"classes_covered": Stat(1000.0, 0.0, "1000.0 ± 0.00"),
                  "kl_uniform": Stat(0.06, 0.003, "0.06 ± 0.003")}),
    ),
    check_key="classes_covered",
    comparisons=(("Stacked MNIST", "pacdcgan2", "dcgan"),),
    n_runs=10,
    authors_steps=100_000,
    authors_length="50 epochs of 128,000 packs, 64 packs a step",
)

PROTOCOLS = {"pacgan": PACGAN_TABLE1, "stacked-mnist": STACKED_MNIST}


@dataclass(frozen=True)
class Summary:
    """ganray's number for one variant and key: mean and sample SD (n − 1) over n trials."""

    mean: float
    sd: float | None  # None for one trial
    n: int


@dataclass
class VariantResult:
    variant: str
    trials: list[str] = field(default_factory=list)  # the trials with a final value of the check key
    seeds: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # the step of each trial's final evaluation
    values: dict[str, list[float]] = field(default_factory=dict)  # key -> final values, one per trial

    def summary(self, key: str) -> Summary | None:
        return summarise(self.values.get(key, []))


@dataclass
class ProtocolResult:
    protocol: Protocol
    exp_uri: str
    variants: dict[str, VariantResult]
    notes: list[str] = field(default_factory=list)


def summarise(values: list[float]) -> Summary | None:
    """Mean and sample standard deviation, √(Σ(x − x̄)² / (n − 1)); None without values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    n = len(finite)
    mean = sum(finite) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
    return Summary(mean, sd, n)


def final_values(rows: list[dict], keys: tuple[str, ...]) -> tuple[dict[str, float], int | None]:
    """Each key's value in the last row that holds it (the last evaluation), and that row's step."""
    out: dict[str, float] = {}
    step = None
    for row in reversed(rows):
        for k in keys:
            if k not in out and isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool):
                out[k] = float(row[k])
                if step is None:
                    step = int(row.get("step", 0))
        if len(out) == len(keys):
            break
    return out, step


def protocol_result(exp_uri: str, protocol: Protocol) -> ProtocolResult:
    """The final metrics of the experiment's trials, per variant of the protocol's rows."""
    _cfg, trials, notes = reader.read_experiment(exp_uri)
    keys = tuple(c.key for c in protocol.columns)
    wanted = list(dict.fromkeys(r.variant for r in protocol.rows))
    result = ProtocolResult(protocol, exp_uri, {v: VariantResult(v) for v in wanted}, list(notes))
    for t in trials:
        variant = t.config.experiment.variant if t.config is not None else None
        if variant not in result.variants:
            continue
        values, step = final_values(t.rows, keys)
        if protocol.check_key not in values:
            result.notes.append(f"{t.name}: no evaluation yet (still running or failed); not counted")
            continue
        v = result.variants[variant]
        v.trials.append(t.name)
        v.seeds.append(t.config.experiment.seed)
        v.steps.append(step or 0)
        for k, x in values.items():
            v.values.setdefault(k, []).append(x)
    for name, v in result.variants.items():
        if not v.trials:
            result.notes.append(f"variant {name}: no trial with an evaluation in {exp_uri}")
    return result


def paper_sd(stat: Stat, n_runs: int) -> float | None:
    """A run's standard deviation from the printed standard error: SE·√n."""
    return None if stat.err is None else stat.err * math.sqrt(n_runs)


def within(ganray: Summary | None, stat: Stat, n_runs: int) -> bool | None:
    """|ganray's mean − the paper's| ≤ 2 paper SDs; None when either side has no number to compare."""
    sd = paper_sd(stat, n_runs)
    if ganray is None or sd is None:
        return None
    return abs(ganray.mean - stat.mean) <= WITHIN_SDS * sd + 1e-12


def covers_more(result: ProtocolResult, better: str, baseline: str, key: str) -> bool | None:
    """Does `better` cover more modes than `baseline` on ganray's means? None without both."""
    a, b = result.variants[better].summary(key), result.variants[baseline].summary(key)
    return None if a is None or b is None else a.mean > b.mean


SPREAD_LEVEL = 0.95  # the two-sided level of the seeds'-spread check (Welch's t test)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below the mean
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile for p in (0.5, 1): P(T <= t) = p with T ~ t(df), by bisection on
    P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2)."""
    target = 2.0 * (1.0 - p)
    lo, hi = 0.0, 1.0
    while _betainc(df / 2, 0.5, df / (df + hi * hi)) > target:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _betainc(df / 2, 0.5, df / (df + mid * mid)) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def spread_note(a: Summary, b: Summary, col: Column) -> str:
    """Whether a − b stands out from the seeds' spread: Welch's t = (a − b) / SE with SE =
    sqrt(sd_a²/n_a + sd_b²/n_b) on the Welch–Satterthwaite degrees of freedom, two-sided at
    SPREAD_LEVEL; unknown with one seed on a side, undecidable when every seed of each agrees."""
    if a.sd is None or b.sd is None:
        return "one seed on a side: the seeds' spread is not known"
    d = a.mean - b.mean
    va, vb = a.sd ** 2 / a.n, b.sd ** 2 / b.n
    shown = f"{'+' if d >= 0 else '-'}{_num(abs(d), col)}"
    if va + vb == 0:
        return ("every seed gave the same number" if d == 0 else
                f"{shown}, and every seed of each gave the same number: no spread to test it against")
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0))
    crit = t_quantile(1 - (1 - SPREAD_LEVEL) / 2, df)
    where = "beyond the seeds' spread" if abs(d) > crit * se else "within the seeds' spread, not settled"
    return (f"{shown} is {abs(d) / se:.2f} standard errors over the seeds, against Welch's {crit:.2f} at "
            f"{SPREAD_LEVEL:.0%} (df {df:.1f}): {where}")


# -- rendering ----------------------------------------------------------------------------------

def _num(x: float, col: Column, decimals: int | None = None) -> str:
    d = col.decimals if decimals is None else decimals
    return f"{100 * x:.{d}f}" if col.percent else f"{x:.{d}f}"


def fmt_paper(stat: Stat | None) -> str:
    return "—" if stat is None else stat.shown


def fmt_ganray(s: Summary | None, col: Column) -> str:
    if s is None:
        return "—"
    pct = "%" if col.percent else ""
    if s.sd is None:  # one seed: its value alone
        return f"{_num(s.mean, col)}{pct}"
    return f"{_num(s.mean, col)} ± {_num(s.sd, col)}{pct}"


def _check_cell(g: Summary | None, stat: Stat | None, n_runs: int, col: Column) -> str:
    if stat is None or g is None:
        return "—"
    sd = paper_sd(stat, n_runs)
    if sd is None:
        return "n/a (the paper gives no error)"
    ok = within(g, stat, n_runs)
    delta = g.mean - stat.mean
    ratio = f"{abs(delta) / sd:.1f} SD" if sd > 0 else ("0 SD" if delta == 0 else "∞ SD (the paper's SD is 0)")
    return f"{'yes' if ok else 'no'} (Δ {delta:+.{col.decimals}f}, {ratio})"


def _steps_line(result: ProtocolResult) -> str:
    p = result.protocol
    steps = sorted({s for v in result.variants.values() for s in v.steps})
    seeds = sorted({s for v in result.variants.values() for s in v.seeds})
    if not steps:
        return f"ganray: no trial has been evaluated yet (the authors ran {p.authors_steps:,} steps: {p.authors_length})."
    ran = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,}"
    share = steps[-1] / p.authors_steps
    return (f"ganray: final evaluation at step {ran} of the authors' {p.authors_steps:,} ({p.authors_length}; "
            f"{share:.1%} of their training), seeds {', '.join(map(str, seeds))}.")


def render_markdown(result: ProtocolResult) -> str:
    """The table (one line per paper row, the paper's numbers beside ganray's) and its checks."""
    p = result.protocol
    check = next(c for c in p.columns if c.key == p.check_key)
    head = ["dataset", "paper's row", "ganray variant (seeds)"] + [f"{c.title}: paper / ganray" for c in p.columns] \
        + [f"{check.title} within {WITHIN_SDS:g} paper SDs"]
    lines = [f"# {p.title}", "", f"Paper: {p.source}; a run's SD = SE × √{p.n_runs}. "
             "ganray: mean ± sample SD over its seeds (one seed: its value), of each trial's last evaluation.", "",
             _steps_line(result), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in p.rows:
        v = result.variants[row.variant]
        cells = [row.group, row.label, f"{row.variant} ({len(v.trials)})"]
        for c in p.columns:
            cells.append(f"{fmt_paper(row.values.get(c.key))} / {fmt_ganray(v.summary(c.key), c)}")
        cells.append(_check_cell(v.summary(p.check_key), row.values.get(p.check_key), p.n_runs, check))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *comparison_lines(result)]
    if result.notes:
        lines += ["", "Notes:", *[f"- {n}" for n in result.notes]]
    return "\n".join(lines) + "\n"


def comparison_lines(result: ProtocolResult) -> list[str]:
    """'- 2D-ring: PacGAN2 covers more modes than GAN in ganray: yes (7.70 vs 6.00; +1.70 is 3.10 standard
    errors over the seeds, against Welch's 2.78 at 95% (df 4.0): beyond the seeds' spread); in the
    paper: yes (7.9 vs 6.3).'"""
    p = result.protocol
    col = next(c for c in p.columns if c.key == p.check_key)
    label = {r.variant: r.label for r in p.rows}  # the last paper row of a variant names it
    paper = {r.variant: r.values[p.check_key] for r in p.rows if r.values[p.check_key].err is not None}
    out = []
    for group, better, base in p.comparisons:
        ok = covers_more(result, better, base, p.check_key)
        a, b = result.variants[better].summary(p.check_key), result.variants[base].summary(p.check_key)
        ours = "not known yet" if ok is None else \
            f"{'yes' if ok else 'no'} ({_num(a.mean, col)} vs {_num(b.mean, col)}; {spread_note(a, b, col)})"
        pa, pb = paper.get(better), paper.get(base)
        theirs = "" if pa is None or pb is None else \
            f"; in the paper: {'yes' if pa.mean > pb.mean else 'no'} ({pa.mean:g} vs {pb.mean:g})"
        out.append(f"- {group}: {label[better]} covers more {col.title} than {label[base]} in ganray: {ours}{theirs}.")
    return out


def write_protocol(exp_uri: str, protocol: Protocol) -> tuple[str, str]:
    """<exp>/protocol.md from the experiment's records; returns (its URI, the markdown)."""
    text = render_markdown(protocol_result(exp_uri, protocol))
    uri = storage.join(exp_uri, PROTOCOL_MD)
    storage.put_bytes(uri, text.encode("utf-8"))
    return uri, text
