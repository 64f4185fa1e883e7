"""The report's section for conditional families (cgan, stackgan): per trial, one row per condition
(class) with its numbers and its row of the fixed grid; for a Stage-II StackGAN sweep, each trial's
Stage-I grid beside its Stage-II grid (the same captions in the rows, the same z in the columns);
for a sweep of conditioning augmentation (CA) on and off, the numbers that test the paper's claim
that CA adds variety among the images drawn for one caption, and a sentence computed from them.

Everything comes from the record: verdict.json's "conditions" (ganray.metrics.conditional: names, n,
hits, fidelity, spread_ratio, duplicate_share, fcd, coverage, expected_coverage per class, None where
left out), the metrics rows' condition_* values at the last evaluation, the sample grids (row r =
condition r, ganray.train.sampling.fixed_inputs) and, for Stage II, the Stage-I experiment that
train.stage1_checkpoint names.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganray import storage
from ganray.artifacts import layout, reader
from ganray.config import Config
from ganray.report.conditional_figures import (
    PER_CLASS_CAPTION,
    PER_CLASS_FIGURE,
    PER_CLASS_FIGURE_EXPLAIN,
    figure_per_class,
)
from ganray.report.conditions import (
    PER_CLASS_EXPLAIN,
    PER_CLASS_HEAD,
    collapsed_text,
    conditions_of,
    grid_row_classes,
    is_conditional,
    per_class_rows,
)
from ganray.report.grids import crop_rows, side_by_side
from ganray.report.model import VERDICT_LABEL, Experiment, Trial
from ganray.report.render import data_uri, image_size, last_grid_path
from ganray.report.tables import describe, fmt_metric, md_escape, name_axes

# What a Stage-II trial shares with the Stage-I trial it continues: ganray.families.stackgan.STAGE1_MATCH
STAGE1_MATCH = (("model", "z_dim"), ("model", "cond_augment"), ("experiment", "seed"), ("experiment", "variant"),
                ("train", "lr_g"), ("train", "lr_d"))
# The CA table: (metric key, label, which way is better), at each trial's last evaluation
CA_METRICS = (("condition_spread_ratio", "spread ratio within a condition, mean over conditions", "higher"),
              ("condition_spread_ratio_min", "spread ratio, worst condition", "higher"),
              ("condition_duplicate_share_max", "near-copies within a condition, worst condition", "lower"),
              ("condition_fidelity", "condition fidelity", "higher"),
              ("fcd", "FCD, all samples", "lower"),
              ("condition_fcd", "per-class FCD, mean", "lower"))
CA_DECIDING = "condition_spread_ratio"  # the numbers the CA sentence compares: the spread within a condition,
CA_COPIES = "condition_duplicate_share_max"  # and the near-copies within the worst condition
STAGES_EXPLAIN = ("Left: the Stage-I trial's last sample grid (its small images upsampled to Stage II's size); "
                  "right: the Stage-II trial's. Both grids hold the same captions in their rows and the same z "
                  "in their columns, so each cell on the right is Stage II's redrawing of the cell on the left.")


# ---- Stage I beside Stage II ------------------------------------------------------------------

@dataclass
class StagePair:
    stage2: Trial
    stage1_uri: str | None  # the Stage-I trial folder
    stage1_name: str | None
    stage1_step: int | None  # of its last grid
    stage1_numbers: dict[str, float | None] = field(default_factory=dict)
    stage1_verdict: str = ""
    png: bytes | None = None  # the two grids side by side
    note: str = ""


def _stage1_trial(cfg: Config) -> tuple[reader.TrialRecord | None, str]:
    """The Stage-I trial a Stage-II config continues (train.stage1_checkpoint: a checkpoint, a trial
    folder or a Stage-I experiment; in an experiment the trial with the same z_dim, CA, seed and
    variant), and a note when there is none."""
    uri = cfg.train.stage1_checkpoint.rstrip("/")
    if not uri:
        return None, "no train.stage1_checkpoint in its config"
    parts = uri.split("/")
    if uri.endswith(".pt") or parts[-1].startswith("checkpoint_"):
        parts = parts[:-2] if uri.endswith(".pt") else parts[:-1]
    if len(parts) >= 3 and parts[-2] == layout.TRIALS_DIR:  # a trial folder
        return reader.read_trial("/".join(parts[:-2]), parts[-1]), ""
    exp = "/".join(parts)
    try:
        _, records, _ = reader.read_experiment(exp)
    except reader.ExperimentNotFound:
        return None, f"Stage-I experiment {exp} not found"
    want = [getattr(getattr(cfg, s), k) for s, k in STAGE1_MATCH]
    found = [r for r in records if r.config is not None
             and [getattr(getattr(r.config, s), k) for s, k in STAGE1_MATCH] == want]
    if len(found) != 1:
        return None, f"{len(found)} Stage-I trials of {exp} match its z_dim, CA, seed and variant"
    return found[0], ""


STAGE_KEYS = ("condition_fidelity", "condition_spread_ratio", "condition_duplicate_share_max", "condition_fcd")


def stage_pairs(exp: Experiment) -> list[StagePair]:
    """One pair per Stage-II StackGAN trial: its Stage-I trial's last grid and numbers beside its own."""
    out = []
    for t in exp.trials:
        cfg = t.config
        if cfg is None or cfg.train.family != "stackgan" or cfg.train.stage != 2:
            continue
        rec, note = _stage1_trial(cfg)
        if rec is None:
            out.append(StagePair(t, None, None, None, note=note))
            continue
        png = None
        if rec.samples:
            try:
                png = storage.read_bytes(rec.samples[-1][1])
            except reader.READ_ERRORS as e:
                note = f"Stage-I grid unreadable ({reader.brief(e)})"
        s1 = Trial.from_record(rec, None)
        pair = StagePair(t, rec.uri, rec.name, rec.samples[-1][0] if rec.samples else None,
                         {k: s1.final(k) for k in STAGE_KEYS}, s1.status,
                         side_by_side(png, t.last_samples_png), note)
        if pair.png is None and not pair.note:
            pair.note = "no sample grid in " + ("the Stage-II trial" if png else "the Stage-I trial")
        out.append(pair)
    return out


# ---- CA on / off --------------------------------------------------------------------------------

def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = float(np.mean(values))
    return mean, (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def _fmt_ms(values: list[float]) -> str:
    mean, sd = _mean_sd(values)
    if mean is None:
        return "—"
    return fmt_metric(mean) + (f" ± {fmt_metric(sd)}" if sd is not None else "")


def _ca(t: Trial) -> bool | None:
    return t.config.model.cond_augment if t.config is not None else None


def ca_trials(exp: Experiment) -> list[Trial]:
    """The StackGAN trials of a sweep that has both CA on and CA off; [] otherwise."""
    trials = [t for t in exp.trials if t.params.get("family") == "stackgan" and _ca(t) is not None]
    return trials if {_ca(t) for t in trials} == {True, False} else []


def ca_table(exp: Experiment) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, sentences): per z_dim a row for CA on and one for CA off, mean ± sd over
    seeds of each CA_METRICS number and the verdicts; one sentence per z_dim that says which had the
    higher within-condition spread (CA_DECIDING), then one over all z_dims."""
    trials = ca_trials(exp)
    head = ["z_dim", "CA", "seeds", *(label for _, label, _ in CA_METRICS), "verdicts"]
    rows, sentences, wins, z_seen = [], [], [], []
    for z in sorted({t.params.get("z_dim") for t in trials}, key=lambda v: (v is None, v or 0)):
        group = {ca: [t for t in trials if t.params.get("z_dim") == z and _ca(t) is ca] for ca in (True, False)}
        for ca in (True, False):
            ts = group[ca]
            verdicts: dict[str, int] = {}
            for t in ts:
                verdicts[VERDICT_LABEL[t.verdict_name]] = verdicts.get(VERDICT_LABEL[t.verdict_name], 0) + 1
            rows.append([fmt_metric(z) if isinstance(z, (int, float)) else str(z), "on" if ca else "off",
                         ", ".join(str(t.params.get("seed")) for t in ts),
                         *(_fmt_ms([v for t in ts if (v := t.final(k)) is not None]) for k, _, _ in CA_METRICS),
                         ", ".join(f"{n} {v}" for v, n in verdicts.items())])
        text, win = ca_sentence(z, group[True], group[False])
        sentences.append(text)
        if win is not None:
            wins.append(win)
            z_seen.append(z)
    if len(wins) > 1:
        at = [fmt_metric(z) for z, w in zip(z_seen, wins) if w]
        sentences.append(f"Across z_dims: CA added diversity for a fixed text (a higher within-condition spread and "
                         f"no more near-copies) at {len(at)} of {len(wins)} z_dims"
                         + (f" ({', '.join(at)})." if at else ": at this scale it did not, on both counts."))
    return head, rows, sentences


def _means(trials: list[Trial], key: str) -> float | None:
    vals = [v for t in trials if (v := t.final(key)) is not None]
    return float(np.mean(vals)) if vals else None


def ca_sentence(z: Any, on: list[Trial], off: list[Trial]) -> tuple[str, bool | None]:
    """"z_dim 10: CA added diversity for a fixed text: a higher within-condition spread (spread ratio 0.62
    on vs 0.41 off, mean over conditions) and fewer near-copies (10% on vs 30% off, worst condition)." and
    whether it did, on both counts (None: no numbers). A higher spread with more near-copies, or the
    reverse, is said to be mixed."""
    label = f"z_dim {fmt_metric(z)}" if isinstance(z, (int, float)) else "all trials"
    ma, mb = _means(on, CA_DECIDING), _means(off, CA_DECIDING)
    if ma is None or mb is None:
        return f"{label}: no within-condition spread to compare (a trial without an evaluation).", None
    ca, cb = _means(on, CA_COPIES), _means(off, CA_COPIES)
    over = "mean over conditions" + (" and seeds" if len(on) + len(off) > 2 else "")
    spread = f"spread ratio {fmt_metric(ma)} on vs {fmt_metric(mb)} off, {over}"
    seeds = _paired_seeds(on, off, CA_DECIDING)
    if len(seeds) > 1:
        spread += f"; CA on higher in {sum(seeds)} of {len(seeds)} seeds"
    copies = "" if ca is None or cb is None else f"{ca:.0%} on vs {cb:.0%} off, worst condition"
    more_spread, fewer_copies = ma > mb, ca is None or cb is None or ca <= cb
    if more_spread and fewer_copies:
        head = f"CA added diversity for a fixed text: a higher within-condition spread ({spread})"
        tail = f" and no more near-copies ({copies})" if copies else ""
    elif not more_spread and (ca is None or cb is None or ca >= cb):
        head = f"CA did not add diversity for a fixed text here: a lower or equal within-condition spread ({spread})"
        tail = f" and no fewer near-copies ({copies})" if copies else ""
    elif more_spread:
        head = f"mixed: CA on had the higher within-condition spread ({spread})"
        tail = f" but more near-copies ({copies})"
    else:
        head = f"mixed: CA on had fewer near-copies within a condition ({copies})"
        tail = f" but a lower spread ({spread})"
    return f"{label}: {head}{tail}.", more_spread and fewer_copies


def _paired_seeds(on: list[Trial], off: list[Trial], key: str) -> list[bool]:
    """Per seed that both have (and a value): was CA on's `key` higher than CA off's?"""
    by = {t.params.get("seed"): t.final(key) for t in off}
    return [v > by[s] for t in on if (s := t.params.get("seed")) in by
            and (v := t.final(key)) is not None and by[s] is not None]


# ---- the section ----------------------------------------------------------------------------

@dataclass
class ConditionalSection:
    exp: Experiment
    trials: list[Trial]  # conditional ones with a conditions record
    pairs: list[StagePair]
    ca: tuple[list[str], list[list[str]], list[str]] | None
    figures: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # written under figures/

    def markdown(self) -> list[str]:
        return conditional_markdown(self)

    def html(self) -> list[str]:
        return conditional_html(self)


def conditional_section(exp: Experiment) -> ConditionalSection | None:
    """The section, or None when no trial is of a conditional family. Call after attach_media."""
    cond = [t for t in exp.trials if is_conditional(t)]
    if not cond:
        return None
    pairs = stage_pairs(exp)
    sec = ConditionalSection(exp, [t for t in cond if conditions_of(t) is not None], pairs,
                             ca_table(exp) if ca_trials(exp) else None)
    png = figure_per_class(exp, sec.trials)
    if png is not None:
        sec.figures[PER_CLASS_FIGURE] = (PER_CLASS_CAPTION, png)
    for p in pairs:
        if p.png is not None:
            sec.figures[f"stages_{p.stage2.name}.png"] = (f"{p.stage2.name}: Stage I beside Stage II", p.png)
    return sec


def _label(sec: ConditionalSection, t: Trial) -> str:
    return describe(t, name_axes(sec.exp.trials)) or t.name


def _pair_numbers(p: StagePair) -> str:
    t = p.stage2
    return "Stage I → Stage II: " + "; ".join(f"{k.removeprefix('condition_').replace('_', ' ')} {fmt_metric(p.stage1_numbers.get(k))} → "
                     f"{fmt_metric(t.final(k))}" for k in STAGE_KEYS
                     if p.stage1_numbers.get(k) is not None or t.final(k) is not None)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(md_escape(x) for x in r) + " |" for r in rows] + [""])


def conditional_markdown(sec: ConditionalSection) -> list[str]:
    lines = ["## Conditions", ""]
    if sec.ca is not None:
        head, rows, sentences = sec.ca
        lines += ["### Conditioning augmentation on vs off", ""] + [x for s in sentences for x in (s, "")]
        lines += _md_table(head, rows)
        lines += [CA_EXPLAIN, ""]
    if sec.pairs:
        lines += ["### Stage I beside Stage II", "", STAGES_EXPLAIN, ""]
        for p in sec.pairs:
            lines += [f"**{p.stage2.name}** ({p.stage2.status}; Stage I {p.stage1_name or '?'}: "
                      f"{p.stage1_verdict or 'not found'}). {_pair_numbers(p)}", ""]
            lines += ([f"![{p.stage2.name}: Stage I beside Stage II](figures/stages_{p.stage2.name}.png)", ""]
                      if p.png else [f"- note: {p.note}", ""])
    lines += ["### Per condition", "", PER_CLASS_EXPLAIN, ""]
    if PER_CLASS_FIGURE in sec.figures:
        lines += [PER_CLASS_FIGURE_EXPLAIN, "", f"![{PER_CLASS_CAPTION}](figures/{PER_CLASS_FIGURE})", ""]
    for t in sec.trials:
        lines += [f"#### {_label(sec, t)} ({t.status})", "", collapsed_text(t), ""] + _md_table(PER_CLASS_HEAD,
                                                                                              per_class_rows(t))
        if t.samples:
            lines += [f"![sample grid of {t.name}: one row per condition]({last_grid_path(t)})", ""]
    return lines


CA_EXPLAIN = ("Mean ± sample standard deviation over seeds at each trial's last evaluation. StackGAN's claim: CA "
              "(c = μ + σ·ε) adds variety among the images drawn for one text, so with CA on the spread ratio "
              "within a condition should be higher and the near-copies fewer, at no loss of fidelity.")


def _img(png: bytes, alt: str) -> str:
    """An inline PNG at its own size, never wider than its column (a phone's width)."""
    size = image_size(png)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return (f'<img alt="{html.escape(alt)}"{dims} style="max-width:100%;height:auto" '
            f'src="{data_uri(png, "image/png")}">')


def _html_table(head: list[str], rows: list[list[str]], raw_last: bool = False) -> str:
    e = html.escape
    body = "".join("<tr>" + "".join(f'<td data-label="{e(h)}">{x if raw_last and i == len(r) - 1 else e(x)}</td>'
                                    for i, (h, x) in enumerate(zip(head, r))) + "</tr>" for r in rows)
    return (f'<table class="seeds-table"><thead><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def conditional_html(sec: ConditionalSection) -> list[str]:
    e = html.escape
    out = ['<h2 id="conditions">Conditions</h2>']
    if sec.ca is not None:
        head, rows, sentences = sec.ca
        out += ["<h3>Conditioning augmentation on vs off</h3>"] + [f'<p class="summary">{e(s)}</p>' for s in sentences]
        out += [_html_table(head, rows), f'<p class="explain">{e(CA_EXPLAIN)}</p>']
    if sec.pairs:
        out += ["<h3>Stage I beside Stage II</h3>", f'<p class="explain">{e(STAGES_EXPLAIN)}</p>']
        for p in sec.pairs:
            out.append(f"<figure><figcaption><b>{e(p.stage2.name)}</b> ({e(p.stage2.status)}; Stage I "
                       f"{e(p.stage1_name or '?')}: {e(p.stage1_verdict or 'not found')}). {e(_pair_numbers(p))}"
                       "</figcaption>" + (_img(p.png, f"{p.stage2.name}: Stage I beside Stage II") if p.png
                                          else f'<p class="note">{e(p.note)}</p>') + "</figure>")
    out += ["<h3>Per condition</h3>", f'<p class="explain">{e(PER_CLASS_EXPLAIN)}</p>']
    if PER_CLASS_FIGURE in sec.figures:
        out.append(f'<figure><figcaption><b>{e(PER_CLASS_CAPTION)}</b><p class="explain">'
                   f'{e(PER_CLASS_FIGURE_EXPLAIN)}</p></figcaption>'
                   + _img(sec.figures[PER_CLASS_FIGURE][1], PER_CLASS_CAPTION) + "</figure>")
    for t in sec.trials:
        crops = _row_crops(t, len(conditions_of(t)["names"]))
        head = [*PER_CLASS_HEAD, "samples"]
        body = []
        for r in per_class_rows(t):
            row = int(r[1].split()[0]) - 1 if r[1] else None  # "3" or '3 “a thick three”': grid row 3
            crop = crops.get(row) if row is not None else None
            body.append([*r, _img(crop, f"{t.name}: row {row + 1}") if crop else ""])
        out += [f"<h4>{e(_label(sec, t))} ({e(t.status)})</h4>", f"<p>{e(collapsed_text(t))}</p>",
                _html_table(head, body, raw_last=True)]
    return out


def _row_crops(t: Trial, n_classes: int) -> dict[int, bytes]:
    """{grid row: that row of the trial's last grid as PNG}."""
    n_rows = len(grid_row_classes(n_classes)) if n_classes else 0
    out = {}
    for r in range(n_rows):
        png = crop_rows(t.last_samples_png, n_rows, r, r + 1)
        if png is not None:
            out[r] = png
    return out
