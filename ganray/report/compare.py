"""VAE vs GAN in numbers and words: when the trials span the vae family and at least one GAN
family (jobs/compare_vae_gan.py), the report puts the families side by side: mean ± spread
over seeds of class coverage, FCD, precision and recall, read in sentences. docs/compare.md
explains how to read it; compare_figures.py draws it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ganray.artifacts.layout import BAD_VERDICTS
from ganray.report.model import SUMMARY_LABEL, Experiment, Reconstruction, Trial

VAE_FAMILY = "vae"
FAMILY_LABEL = {"gan": "GAN", "wgan-gp": "WGAN-GP", "began": "BEGAN", VAE_FAMILY: "VAE"}
# Family colours of the comparison figures (Okabe-Ito blue for the VAE, greys for the GANs).
FAMILY_COLOUR = {VAE_FAMILY: "#0072B2", "gan": "#444444", "wgan-gp": "#7F7F7F", "began": "#56B4E9"}
# (metrics.jsonl key, label, which way is better)
COMPARE_METRICS = (
    ("classes_covered", "classes covered", "higher"),
    ("kl_uniform", "KL to uniform (nats)", "lower"),
    ("fcd", "FCD", "lower"),
    ("precision", "precision (sharpness/realism)", "higher"),
    ("recall", "recall (coverage)", "higher"),
)
# Supporting numbers, in the table only: where precision and recall disagree with the eye, these tell why.
SUPPORT_METRICS = (
    ("coverage", "PRDC coverage (real samples with a generated one in their k-NN ball)", "higher"),
    ("near_real_share", "near-real share (realism with one global radius)", "higher"),
    ("spread_ratio", "pixel spread ratio (1 = like the data; smooth, blurred samples < 1)", "closer to 1"),
    ("mean_confidence", "classifier confidence", "higher"),
)
PRECISION_RECALL_TEXT = (
    "Precision is the share of generated samples that land inside the k-nearest-neighbour ball of some real "
    "sample in the reference classifier's feature space: it measures sharpness/realism (samples unlike any "
    "real one fall outside every ball). Recall is the share of real samples that land inside the k-NN ball of "
    "some generated sample: it measures coverage (a dropped mode leaves its real samples unrecalled). "
    "k-NN precision can be fooled by the few real outliers whose k-NN balls are huge (docs/metrics.md); the "
    "near-real share, with one global radius, is the sturdier realism number. "
    "Classes covered and KL to uniform come from the classifier's labels of the generated samples, over the "
    "classes the data holds; FCD is the Fréchet distance of the classifier features (lower is closer to the "
    "real data).")


@dataclass
class Spread:
    """One number per seed, summarised: mean ± sample standard deviation (0 for a single seed)."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def sd(self) -> float:
        # s = sqrt(Σ_i (v_i − mean)² / (n − 1)), the spread over seeds; 0 when there is one seed
        if len(self.values) < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))


@dataclass
class FamilyNumbers:
    """The final metrics of one family's trials (one per seed)."""

    family: str
    trials: list[str]
    metrics: dict[str, Spread]  # COMPARE_METRICS and SUPPORT_METRICS keys logged by at least one trial
    verdicts: list[str] = field(default_factory=list)
    recon_mse: Spread | None = None  # VAE: held-out reconstruction MSE (Σ over pixels, per image)

    @property
    def label(self) -> str:
        return FAMILY_LABEL.get(self.family, self.family)


@dataclass
class Comparison:
    families: dict[str, FamilyNumbers]  # the VAE first, then the GAN families
    sentences: list[str]  # the numbers read in words
    n_classes: int | None  # K of "classes covered ... of K"
    reconstructions: list[Reconstruction] = field(default_factory=list)
    figures: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file name -> (caption, PNG)
    notes: list[str] = field(default_factory=list)


def family_of(t: Trial) -> str | None:
    f = t.params.get("family")
    return f if isinstance(f, str) else None


def compares_vae_with_gan(exp: Experiment) -> bool:
    """True when the trials span the vae family and at least one GAN family."""
    families = {family_of(t) for t in exp.trials} - {None}
    return VAE_FAMILY in families and bool(families - {VAE_FAMILY})


def family_numbers(exp: Experiment) -> dict[str, FamilyNumbers]:
    """{family: its trials' final metrics}, the VAE first; trials that logged nothing count in no mean."""
    order = [VAE_FAMILY] + [f for f in FAMILY_LABEL if f != VAE_FAMILY]
    out: dict[str, FamilyNumbers] = {}
    for fam in sorted({family_of(t) for t in exp.trials} - {None},
                      key=lambda f: (order.index(f) if f in order else len(order), f)):
        trials = [t for t in exp.trials if family_of(t) == fam]
        metrics = {}
        for key, _label, _better in COMPARE_METRICS + SUPPORT_METRICS:
            values = [v for t in trials if (v := t.final(key)) is not None and math.isfinite(v)]
            if values:
                metrics[key] = Spread(values)
        out[fam] = FamilyNumbers(fam, [t.name for t in trials], metrics, [t.verdict_name for t in trials])
    return out


def fmt_spread(s: Spread | None) -> str:
    """"0.62 ± 0.03 (2 seeds)", "1437 ± 28 (2 seeds)", "0.62 (1 seed)"."""
    if s is None:
        return "n/a"
    seeds = f"{s.n} seed" + ("s" if s.n != 1 else "")
    return f"{num(s.mean)} ± {num(s.sd)} ({seeds})" if s.n > 1 else f"{num(s.mean)} ({seeds})"


RECALL_FLOOR = 0.05  # below this recall for every family, no sample resembles the real data yet
LEVEL_GAP = 0.01  # a precision/recall gap below this is no gap


def num(v: float) -> str:
    """2 decimals below 10, 1 below 100, none above: "0.62", "45.3", "1437"."""
    return f"{v:.2f}" if abs(v) < 10 else (f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}")


def relation(a: Spread, b: Spread) -> str:
    """">", "<" or "≈" (level: a gap below LEVEL_GAP, or within the two seeds' spreads together)."""
    gap = a.mean - b.mean
    if abs(gap) < LEVEL_GAP or (a.n > 1 and b.n > 1 and abs(gap) <= a.sd + b.sd):
        return "≈"
    return ">" if gap > 0 else "<"


# (VAE recall vs GAN, VAE precision vs GAN) -> what the numbers say ({G}: the GAN family's name)
TRADE_OFF_READING = {
    (">", "<"): "the VAE covers the modes but blurs; the {G} is sharper but covers less",
    ("≈", "<"): "the VAE covers the data as well as the {G} but blurs; the {G} is sharper",
    ("<", "<"): "the {G} is ahead on both: its samples are more realistic and cover more of the real data",
    (">", ">"): "the VAE is ahead on both: the {G} is neither sharper nor more diverse at this budget",
    (">", "≈"): "the VAE covers more of the data and is as realistic: the {G} is not sharper at this budget",
    ("≈", ">"): "the VAE is more realistic and covers as much: the {G} is not sharper at this budget",
    ("<", ">"): ("the reverse of the textbook trade-off: the VAE's samples land inside the real data's k-NN balls "
                 "but bunch in a small part of it, the {G}'s spread over more of it with more samples off it"),
    ("<", "≈"): "the {G} covers more of the real data at the same realism",
    ("≈", "≈"): "the two families are level on precision and recall at this budget",
}


def trade_off_sentence(vae: FamilyNumbers, gan: FamilyNumbers) -> str:
    """The precision/recall numbers of the VAE and one GAN family, read in words."""
    G = gan.label
    rv, rg = vae.metrics.get("recall"), gan.metrics.get("recall")
    pv, pg = vae.metrics.get("precision"), gan.metrics.get("precision")
    if None in (rv, rg, pv, pg):
        return (f"VAE vs {G}: no precision/recall for both families (add prdc to eval.metrics), so the "
                "sharpness/coverage trade-off cannot be read.")
    head = (f"VAE recall {rv.mean:.2f} {'≥' if rv.mean >= rg.mean else '<'} {G} {rg.mean:.2f}, "
            f"VAE precision {pv.mean:.2f} {'<' if pv.mean < pg.mean else '≥'} {G} {pg.mean:.2f}")
    if max(rv.mean, rg.mean) < RECALL_FLOOR:
        return (f"{head}: recall is near 0 for both, so neither family's samples cover the real data yet; "
                "train longer before reading the trade-off.")
    rel = (relation(rv, rg), relation(pv, pg))
    reading = TRADE_OFF_READING[rel].format(G=G)
    bad = [v for v in gan.verdicts if v in (*BAD_VERDICTS, "partial_collapse")]
    if bad and rel in ((">", ">"), (">", "≈"), ("≈", ">")):  # the VAE ahead: say what became of the GAN
        reading += f" ({len(bad)} of {len(gan.verdicts)} {G} trials {SUMMARY_LABEL[bad[0]]})"
    level = [name for name, r in zip(("recall", "precision"), rel) if r == "≈"
             and not (abs(vae.metrics[name].mean - gan.metrics[name].mean) < LEVEL_GAP)]
    caveat = f" (the {' and '.join(level)} gap is within the seeds' spread)" if level else ""
    return f"{head}: {reading}{caveat}."


def coverage_sentence(nums: dict[str, FamilyNumbers], n_classes: int | None) -> str | None:
    """"Classes covered: VAE 2.00 of 2 (KL to uniform 0.01 nats), GAN 1.50 of 2 (...); FCD: VAE 45 vs GAN 30"."""
    of = f" of {n_classes}" if n_classes else ""
    parts = []
    for f in nums.values():
        c, kl = f.metrics.get("classes_covered"), f.metrics.get("kl_uniform")
        if c is not None:
            parts.append(f"{f.label} {c.mean:.2f}{of}" + (f" (KL to uniform {kl.mean:.2f} nats)" if kl else ""))
    fcd = [f"{f.label} {num(f.metrics['fcd'].mean)}" for f in nums.values() if "fcd" in f.metrics]
    text = []
    if parts:
        text.append("Classes covered: " + ", ".join(parts))
    if fcd:
        text.append("FCD (lower is closer to the real data): " + " vs ".join(fcd))
    return "; ".join(text) + "." if text else None


PRECISION_OVERSTATES_GAP = 0.3  # precision this far above the near-real share: it overstates realism


def precision_caveat(f: FamilyNumbers) -> str | None:
    """A sentence when k-NN precision and the near-real share disagree by PRECISION_OVERSTATES_GAP or more."""
    p, near = f.metrics.get("precision"), f.metrics.get("near_real_share")
    if p is None or near is None or p.mean - near.mean < PRECISION_OVERSTATES_GAP:
        return None
    # share inside some real k-NN ball AND farther than q95 from every real sample ≥ precision − near_real_share
    return (f"{f.label} precision {p.mean:.2f} but near-real share {near.mean:.2f}: at least "
            f"{p.mean - near.mean:.0%} of its samples lie inside some real sample's k-NN ball yet farther from every "
            "real sample than 95% of real samples lie from their nearest neighbour, so here precision overstates "
            "realism.")


def support_sentence(vae: FamilyNumbers, gan: FamilyNumbers) -> str | None:
    """"Supporting numbers: pixel spread ratio VAE 0.54 vs GAN 1.08, ..." for the SUPPORT_METRICS both logged."""
    parts = [f"{label.split(' (')[0]} VAE {vae.metrics[key].mean:.2f} vs {gan.label} {gan.metrics[key].mean:.2f}"
             for key, label, _better in SUPPORT_METRICS if key in vae.metrics and key in gan.metrics]
    return f"Supporting numbers (VAE vs {gan.label}): " + "; ".join(parts) + "." if parts else None
