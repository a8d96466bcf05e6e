"""The paper's claims checked against a sweep, with the seeds' spread.

Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional learners"
(Neurocomputing 511, 2022) claims, among others: SNA has the best Top-1/Top-5 on CIFAR-100 with
ResNet-18 and DenseNet-121 (Table 1) and the best Top-1 on ImageNet (Table 2); it "does not add
additional network parameters and has the same FLOPs" and its inference speed "is almost the
same" as the backbone's (Table 1); rank-2 "can bring the most gain" (Fig. 4); SNA before the
blocks is the most effective placement (§4.3.2); SNA has the best AP with Faster/Mask R-CNN
(Table 3) and the best total AP on VinDr-CXR (Table 4); on VinDr-CXR classification SNA is best
on the most classes and AA has the lowest average AUROC (Fig. 5).

Each claim the grid covers is evaluated within one comparison (same dataset, task, stem,
placement, recipe, backbone and detector) by one of the rules in :data:`RULES`, and gets a
verdict — supported, contradicted or inconclusive — with the numbers behind it: means, standard
deviations (ddof = 1), n, Welch's t-test p (scipy, two-sided) and a 95 % percentile bootstrap
interval (resampling each method's seeds; seeded, so reproducible). No correction for multiple
comparisons is applied: with many claims at α = 0.05 a few "supported"/"contradicted" verdicts
can be chance.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.report.aggregate import Group, Stat, attention_sort_key, label
from orchestrator.report.context import ReportContext, Skipped
from orchestrator.report.quantities import (
    AP_FAMILY,
    AP_SCALE,
    QUANTITIES,
    Quantity,
    per_class_metrics,
)
from orchestrator.report.tables import is_per_class_detection

__all__ = [
    "ALPHA",
    "FLOPS_TOLERANCE",
    "RULES",
    "THROUGHPUT_TOLERANCE",
    "VERDICTS",
    "Claim",
    "bootstrap_interval",
    "check_best",
    "check_better",
    "check_equal",
    "check_most_wins",
    "check_ratio",
    "check_within",
    "claims_json",
    "claims_markdown",
    "paper_claims",
    "welch_p",
]

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
ALPHA = 0.05
THROUGHPUT_TOLERANCE = 0.10  # "almost the same" inference speed: within 10 % (Table 1: 217 vs 225, 51 vs 56)
FLOPS_TOLERANCE = 0.01  # "the same FLOPs": within 1 % in correct units (SNA's products are counted)
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

RULES: dict[str, str] = {
    "best": ("Supported: the subject's mean is the best of the compared methods and Welch's two-sided t-test "
             "against the runner-up gives p < α. Contradicted: another method's mean is better and Welch's test "
             "of that method against the subject gives p < α. Otherwise inconclusive — also when either side has "
             "fewer than 2 finished seeds (too few seeds) or neither varies over seeds (p undefined)."),
    "worst": "As 'best' with the order reversed: the subject has the lowest mean, significantly below the next.",
    "better": ("Supported: subject mean better than the reference's and Welch's two-sided p < α. Contradicted: "
               "worse with p < α. Otherwise inconclusive (or too few seeds: n < 2 on either side)."),
    "equal": ("Supported: every finished run of subject and reference logged the same count (parameters are "
              "deterministic, one seed suffices). Contradicted: the counts differ."),
    "within": (f"Supported: |subject − reference| / reference ≤ tolerance (FLOPs are deterministic). "
               f"Contradicted: the relative difference exceeds it. Default tolerance {FLOPS_TOLERANCE:.0%}."),
    "ratio": ("A 95 % bootstrap interval of mean(subject) / mean(reference). Supported: its lower end ≥ "
              "1 − tolerance. Contradicted: its upper end < 1 − tolerance. Otherwise inconclusive; n < 2 on "
              f"either side: too few seeds. Default tolerance {THROUGHPUT_TOLERANCE:.0%}."),
    "most_wins": ("Per class, the method with the best mean wins; the win is significant when Welch's p < α "
                  "against the class's runner-up. Supported: the subject has strictly more significant wins than "
                  "any other method. Contradicted: another method has more significant wins than the subject has "
                  "wins at all. Otherwise inconclusive (or too few seeds: some method with n < 2)."),
}


@dataclass
class Claim:
    id: str
    text: str  # the claim as checked on this grid
    source: str  # where the paper makes it
    rule: str  # a key of RULES
    verdict: str  # supported | contradicted | inconclusive
    reason: str  # one line with the numbers
    numbers: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Statistics


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's two-sided t-test p-value; None when undefined (n < 2, or no spread at all)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        return None  # scipy says 0 (or nan) here; identical seeds tell nothing about the spread
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy warns and returns nan
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def bootstrap_interval(a: Sequence[float], b: Sequence[float], statistic: str = "difference",
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of mean(a) − mean(b) (or mean(a) / mean(b) for "ratio")."""
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    mean_x = x[rng.integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
    mean_y = y[rng.integers(0, len(y), (BOOTSTRAP_RESAMPLES, len(y)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = mean_x - mean_y if statistic == "difference" else mean_x / mean_y
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _summary(name: str, stat: Stat, scale: float) -> dict[str, Any]:
    return {"name": name, "mean": None if stat.mean is None else stat.mean * scale,
            "std": None if stat.std is None else stat.std * scale, "n": stat.n,
            "values": [value * scale for value in stat.values]}


def _describe(summary: dict[str, Any], digits: int) -> str:
    if summary["mean"] is None:
        return f"{summary['name']} (no finished value)"
    spread = f" ± {summary['std']:.{digits}f}" if summary["std"] is not None else ""
    return f"{summary['name']} {summary['mean']:.{digits}f}{spread} (n={summary['n']})"


def _p_text(p: float | None) -> str:
    return "p undefined" if p is None else f"Welch p = {p:.3g}"


def _ci_text(ci: tuple[float, float] | None, digits: int, what: str = "difference") -> str:
    return "" if ci is None else f", 95% bootstrap CI of the {what} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class Candidate:
    """One method in a comparison: its name, its values (already scaled) and its state."""

    name: str
    stat: Stat
    state: str = "value"


def _candidate(group: Group, name: str, quantity: Quantity, at: str) -> Candidate:
    names = quantity.candidates(at)
    stat = group.stat(names)
    scaled = Stat.of(value * quantity.scale for value in stat.values)
    return Candidate(name, scaled, group.state(names))


def _as_dict(candidate: Candidate) -> dict[str, Any]:
    return _summary(candidate.name, candidate.stat, 1.0) | {"state": candidate.state}


def check_best(subject: Candidate, others: Sequence[Candidate], *, mode: str = "max", alpha: float = ALPHA,
               digits: int = 2) -> tuple[str, str, dict[str, Any]]:
    """The 'best' rule (or 'worst' with ``mode="min"`` meaning lowest); see :data:`RULES`."""
    numbers: dict[str, Any] = {"alpha": alpha, "test": "Welch two-sided", "mode": mode,
                               "methods": [_as_dict(c) for c in (subject, *others)]}
    if subject.stat.n == 0:
        return INCONCLUSIVE, f"{subject.name}: no finished runs ({subject.state})", numbers
    valued = [c for c in others if c.stat.n]
    if not valued:
        return INCONCLUSIVE, "no other method has finished runs: " + ", ".join(
            f"{c.name} ({c.state})" for c in others), numbers
    better = (lambda x, y: x > y) if mode == "max" else (lambda x, y: x < y)
    rival = max(valued, key=lambda c: c.stat.mean) if mode == "max" else min(valued, key=lambda c: c.stat.mean)
    subject_leads = better(subject.stat.mean, rival.stat.mean)
    first, second = (subject, rival) if subject_leads else (rival, subject)
    p = welch_p(first.stat.values, second.stat.values)
    ci = bootstrap_interval(first.stat.values, second.stat.values)
    numbers |= {"compared_with": rival.name, "leader": first.name, "p": p, "ci95_difference": ci}
    word = "runner-up" if subject_leads else "leader"
    text = (f"{_describe(_summary(subject.name, subject.stat, 1), digits)} vs {word} "
            f"{_describe(_summary(rival.name, rival.stat, 1), digits)}: {_p_text(p)}"
            + _ci_text(ci, digits, f"difference {first.name} − {second.name}"))
    if min(subject.stat.n, rival.stat.n) < 2:
        return INCONCLUSIVE, "too few seeds — " + text, numbers
    if p is None:
        return INCONCLUSIVE, "no spread over seeds — " + text, numbers
    if p < alpha:
        return (SUPPORTED if subject_leads else CONTRADICTED), text, numbers
    return INCONCLUSIVE, text, numbers


def check_better(subject: Candidate, reference: Candidate, *, mode: str = "max", alpha: float = ALPHA,
                 digits: int = 2) -> tuple[str, str, dict[str, Any]]:
    numbers: dict[str, Any] = {"alpha": alpha, "test": "Welch two-sided",
                               "methods": [_as_dict(subject), _as_dict(reference)]}
    for side in (subject, reference):
        if side.stat.n == 0:
            return INCONCLUSIVE, f"{side.name}: no finished runs ({side.state})", numbers
    p = welch_p(subject.stat.values, reference.stat.values)
    ci = bootstrap_interval(subject.stat.values, reference.stat.values)
    difference = subject.stat.mean - reference.stat.mean
    numbers |= {"difference": difference, "relative": difference / reference.stat.mean if reference.stat.mean else None,
                "p": p, "ci95_difference": ci}
    text = (f"{_describe(_summary(subject.name, subject.stat, 1), digits)} vs "
            f"{_describe(_summary(reference.name, reference.stat, 1), digits)}: difference {difference:+.{digits}f}, "
            f"{_p_text(p)}" + _ci_text(ci, digits))
    if min(subject.stat.n, reference.stat.n) < 2:
        return INCONCLUSIVE, "too few seeds — " + text, numbers
    if p is None:
        return INCONCLUSIVE, "no spread over seeds — " + text, numbers
    ahead = difference > 0 if mode == "max" else difference < 0
    if p < alpha:
        return (SUPPORTED if ahead else CONTRADICTED), text, numbers
    return INCONCLUSIVE, text, numbers


def check_equal(subject: Candidate, reference: Candidate) -> tuple[str, str, dict[str, Any]]:
    numbers: dict[str, Any] = {"methods": [_as_dict(subject), _as_dict(reference)]}
    for side in (subject, reference):
        if side.stat.n == 0:
            return INCONCLUSIVE, f"{side.name}: no finished runs ({side.state})", numbers
    mine, theirs = sorted({int(v) for v in subject.stat.values}), sorted({int(v) for v in reference.stat.values})
    numbers |= {"subject_counts": mine, "reference_counts": theirs}
    text = f"{subject.name} {', '.join(f'{v:,}' for v in mine)} vs {reference.name} {', '.join(f'{v:,}' for v in theirs)}"
    if mine == theirs and len(mine) == 1:
        return SUPPORTED, text, numbers
    if len(mine) == 1 and len(theirs) == 1:
        text += f" (difference {mine[0] - theirs[0]:+,})"
    return CONTRADICTED, text, numbers


def check_within(subject: Candidate, reference: Candidate, tolerance: float, digits: int = 3,
                 unit: str = "") -> tuple[str, str, dict[str, Any]]:
    numbers: dict[str, Any] = {"tolerance": tolerance, "methods": [_as_dict(subject), _as_dict(reference)]}
    for side in (subject, reference):
        if side.stat.n == 0:
            return INCONCLUSIVE, f"{side.name}: no finished runs ({side.state})", numbers
    relative = (subject.stat.mean - reference.stat.mean) / reference.stat.mean if reference.stat.mean else math.inf
    numbers["relative"] = relative
    text = (f"{subject.name} {subject.stat.mean:.{digits}f}{unit} vs {reference.name} "
            f"{reference.stat.mean:.{digits}f}{unit}: {relative:+.2%} (tolerance ±{tolerance:.0%})")
    return (SUPPORTED if abs(relative) <= tolerance else CONTRADICTED), text, numbers


def check_ratio(subject: Candidate, reference: Candidate, tolerance: float) -> tuple[str, str, dict[str, Any]]:
    numbers: dict[str, Any] = {"tolerance": tolerance, "methods": [_as_dict(subject), _as_dict(reference)]}
    for side in (subject, reference):
        if side.stat.n == 0:
            return INCONCLUSIVE, f"{side.name}: no finished runs ({side.state})", numbers
    ratio = subject.stat.mean / reference.stat.mean if reference.stat.mean else math.inf
    ci = bootstrap_interval(subject.stat.values, reference.stat.values, "ratio")
    numbers |= {"ratio": ratio, "ci95_ratio": ci}
    text = (f"{_describe(_summary(subject.name, subject.stat, 1), 1)} vs "
            f"{_describe(_summary(reference.name, reference.stat, 1), 1)}: ratio {ratio:.3f}"
            + ("" if ci is None else f", 95% bootstrap CI [{ci[0]:.3f}, {ci[1]:.3f}]")
            + f" (needs ≥ {1 - tolerance:.2f})")
    if ci is None:
        return INCONCLUSIVE, "too few seeds — " + text, numbers
    if ci[0] >= 1 - tolerance:
        return SUPPORTED, text, numbers
    if ci[1] < 1 - tolerance:
        return CONTRADICTED, text, numbers
    return INCONCLUSIVE, text, numbers


def check_most_wins(subject: str, per_class: dict[str, list[Candidate]], *, alpha: float = ALPHA,
                    digits: int = 2) -> tuple[str, str, dict[str, Any]]:
    """``per_class``: class name → one candidate per method (names shared across classes)."""
    wins: dict[str, int] = {}
    significant: dict[str, int] = {}
    few_seeds = False
    detail = {}
    for class_name, candidates in per_class.items():
        valued = [c for c in candidates if c.stat.n]
        if len(valued) < 2:
            continue
        ranked = sorted(valued, key=lambda c: c.stat.mean, reverse=True)
        leader, runner = ranked[0], ranked[1]
        p = welch_p(leader.stat.values, runner.stat.values)
        few_seeds |= min(leader.stat.n, runner.stat.n) < 2
        wins[leader.name] = wins.get(leader.name, 0) + 1
        if p is not None and p < alpha:
            significant[leader.name] = significant.get(leader.name, 0) + 1
        detail[class_name] = {"leader": leader.name, "mean": leader.stat.mean, "runner_up": runner.name,
                              "runner_up_mean": runner.stat.mean, "p": p}
    numbers = {"alpha": alpha, "wins": wins, "significant_wins": significant, "classes": detail}
    if not detail:
        return INCONCLUSIVE, "no class has two methods with finished values", numbers
    mine, mine_significant = wins.get(subject, 0), significant.get(subject, 0)
    others = {name: count for name, count in significant.items() if name != subject}
    text = (f"wins per method: {', '.join(f'{k} {v}' for k, v in sorted(wins.items(), key=lambda kv: -kv[1]))} "
            f"of {len(detail)} classes; significant (p < {alpha}): "
            + (", ".join(f"{k} {v}" for k, v in sorted(significant.items(), key=lambda kv: -kv[1])) or "none"))
    if few_seeds:
        return INCONCLUSIVE, "too few seeds — " + text, numbers
    if mine_significant > 0 and all(mine_significant > count for count in others.values()):
        return SUPPORTED, text, numbers
    if any(count > mine for count in others.values()):
        return CONTRADICTED, text, numbers
    return INCONCLUSIVE, text, numbers


# ---------------------------------------------------------------------------------------------
# The paper's claims on a grid

_MAIN = {"classification": ("top1", "top5"), "multilabel": ("auroc",)}
_SOURCE = {"cifar100": "Table 1 (CIFAR-100)", "imagenet": "Table 2 (ImageNet)"}
_COMPARISON_AXES = ("dataset", "task", "stem", "placement", "recipe", "backbone", "detector")


def _by(groups: Sequence[Group], *axes: str) -> dict[tuple, list[Group]]:
    out: dict[tuple, list[Group]] = {}
    for group in groups:
        out.setdefault(tuple(group.axes[axis] for axis in axes), []).append(group)
    return out


def _methods(members: Sequence[Group]) -> list[Group]:
    """One group per attention: SNA at its lowest rank (rank 1), sorted in the paper's order."""
    ranks = [g.axes["rank_k"] for g in members if g.axes["rank_k"] is not None]
    lowest = min(ranks) if ranks else None
    kept = [g for g in members if g.axes["rank_k"] in (None, lowest)]
    return sorted(kept, key=lambda g: attention_sort_key(g.axes["attention"]))


def _where(group: Group) -> str:
    parts = [f"on {group.axes['dataset']}", f"with {label(group.axes['backbone'])}"]
    if group.axes["detector"]:
        parts.append(f"and {label(group.axes['detector'])}")
    parts.append(f"(placement {group.axes['placement']}" + (f", {group.recipe_label}" if group.recipe_label else "") + ")")
    return " ".join(parts)


def _slug(*parts: object) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", "_".join(str(p) for p in parts if p not in (None, ""))).strip("-").lower()


def _claim(claim_id: str, text: str, source: str, rule: str, result: tuple[str, str, dict[str, Any]]) -> Claim:
    verdict, reason, numbers = result
    return Claim(claim_id, text, source, rule, verdict, reason, numbers)


def _classification_claims(groups: Sequence[Group], context: ReportContext, alpha: float) -> list[Claim]:
    claims: list[Claim] = []
    chosen = [g for g in groups if g.axes["task"] in _MAIN]
    for key, members in _by(chosen, *_COMPARISON_AXES).items():
        methods = _methods(members)
        sna = next((g for g in methods if g.axes["attention"] == "sna"), None)
        others = [g for g in methods if g.axes["attention"] != "sna"]
        if sna is None or not others:
            continue
        where, task = _where(sna), sna.axes["task"]
        source = _SOURCE.get(sna.dataset_name, "Tables 1–2 (same comparison on this grid's data)")
        for name in _MAIN[task]:
            if sna.dataset_name == "imagenet" and name == "top5":
                continue  # the paper claims only second-best Top-5 on ImageNet
            quantity = QUANTITIES[name]
            subject = _candidate(sna, "SNA", quantity, context.at)
            rivals = [_candidate(g, g.method(), quantity, context.at) for g in others]
            claims.append(_claim(_slug("best", name, *key), f"SNA has the best {quantity.label.split(' (')[0]} {where}",
                                 source, "best", check_best(subject, rivals, alpha=alpha)))
        baseline = next((g for g in others if g.axes["attention"] == "none"), None)
        if baseline is None:
            continue
        main = QUANTITIES[_MAIN[task][0]]
        claims.append(_claim(
            _slug("beats-baseline", main.name, *key),
            f"SNA improves {main.label.split(' (')[0]} over {label(sna.axes['backbone'])} without attention {where}",
            "Table 2 text (+1.54 % Top-1 on ImageNet); Table 1", "better",
            check_better(_candidate(sna, "SNA", main, context.at), _candidate(baseline, "none", main, context.at),
                         alpha=alpha)))
        counts = Quantity("params", "parameters", summary=True)  # raw counts: compared exactly
        speed = QUANTITIES["throughput_img_s"]
        claims.append(_claim(_slug("no-extra-params", *key), f"SNA adds no parameters {where}",
                             "§4.2.1, Tables 1–2", "equal",
                             check_equal(_candidate(sna, "SNA", counts, "final"),
                                         _candidate(baseline, "none", counts, "final"))))
        flops_result = check_within(
            _candidate(sna, "SNA", Quantity("flops", "FLOPs", scale=1e-9, summary=True), "final"),
            _candidate(baseline, "none", Quantity("flops", "FLOPs", scale=1e-9, summary=True), "final"),
            FLOPS_TOLERANCE, digits=4, unit=" GFLOPs")
        paper_units = (context.paper_flops.get(sna.id), context.paper_flops.get(baseline.id))
        if None not in paper_units:
            verdict, reason, numbers = flops_result
            numbers["paper_units_g"] = {"SNA": paper_units[0], "none": paper_units[1]}
            flops_result = (verdict, reason + f"; paper units (torchstat @244²): {paper_units[0]:.2f} vs "
                                              f"{paper_units[1]:.2f} G", numbers)
        claims.append(_claim(_slug("same-flops", *key), f"SNA has the same FLOPs as the backbone {where}",
                             "§4.2.1, Tables 1–2", "within", flops_result))
        claims.append(_claim(
            _slug("throughput", *key),
            f"SNA's inference throughput is within {THROUGHPUT_TOLERANCE:.0%} of the backbone's {where}",
            "§4.2.1, Table 1 (217 vs 225, 51 vs 56 FPS)", "ratio",
            check_ratio(_candidate(sna, "SNA", speed, "final"), _candidate(baseline, "none", speed, "final"),
                        THROUGHPUT_TOLERANCE)))
    return claims


def _rank_claims(groups: Sequence[Group], context: ReportContext, alpha: float) -> tuple[list[Claim], list[Skipped]]:
    claims: list[Claim] = []
    skipped: list[Skipped] = []
    sna = [g for g in groups if g.axes["attention"] == "sna" and g.axes["task"] == "classification"]
    for key, members in _by(sna, *_COMPARISON_AXES).items():
        ranks = {g.axes["rank_k"] for g in members}
        if len(ranks) < 2:
            continue
        subject = next((g for g in members if g.axes["rank_k"] == 2), None)
        if subject is None:
            skipped.append(Skipped(f"Claim 'rank-2 is best' {_where(members[0])}", "rank_k 2 is not in the grid"))
            continue
        for name in ("top1", "top5"):
            quantity = QUANTITIES[name]
            others = [_candidate(g, f"k={g.axes['rank_k']}", quantity, context.at)
                      for g in sorted(members, key=lambda g: g.axes["rank_k"]) if g is not subject]
            claims.append(_claim(_slug("rank2-best", name, *key),
                                 f"rank-2 gives SNA's best {quantity.label.split(' (')[0]} {_where(subject)}",
                                 "Fig. 4", "best", check_best(_candidate(subject, "k=2", quantity, context.at), others,
                                                              alpha=alpha)))
    return claims, skipped


def _placement_claims(groups: Sequence[Group], context: ReportContext, alpha: float) -> list[Claim]:
    claims: list[Claim] = []
    sna = [g for g in groups if g.axes["attention"] == "sna" and g.axes["task"] in _MAIN]
    for key, members in _by(sna, "dataset", "task", "stem", "recipe", "backbone", "detector").items():
        ranks = [g.axes["rank_k"] for g in members if g.axes["rank_k"] is not None]
        lowest = min(ranks) if ranks else None
        members = [g for g in members if g.axes["rank_k"] == lowest]
        subject = next((g for g in members if g.axes["placement"] == "stem"), None)
        if subject is None or len(members) < 2:
            continue
        quantity = QUANTITIES[_MAIN[subject.axes["task"]][0]]
        others = [_candidate(g, g.axes["placement"], quantity, context.at) for g in members if g is not subject]
        claims.append(_claim(_slug("placement-stem-best", *key),
                             f"SNA before the first stage (stem) is its most effective placement on "
                             f"{subject.axes['dataset']} with {label(subject.axes['backbone'])} "
                             f"({quantity.label.split(' (')[0]})",
                             "§4.3.2 (placement ablation)", "best",
                             check_best(_candidate(subject, "stem", quantity, context.at), others, alpha=alpha)))
    return claims


def _ap_quantity(members: Sequence[Group], column: str) -> Quantity | None:
    logged = {name for g in members for run in g.runs for name in run.metrics}
    names = dict(AP_FAMILY)[column]
    found = next((n for n in names if {n, f"final_{n}", f"best_{n}"} & logged), None)
    return None if found is None else Quantity(found, column, scale=AP_SCALE, better="max")


def _detection_claims(groups: Sequence[Group], context: ReportContext, alpha: float) -> list[Claim]:
    claims: list[Claim] = []
    detection = [g for g in groups if g.axes["task"] == "detection"]
    for key, members in _by(detection, *_COMPARISON_AXES).items():
        methods = _methods(members)
        sna = next((g for g in methods if g.axes["attention"] == "sna"), None)
        others = [g for g in methods if g.axes["attention"] != "sna"]
        if sna is None or not others:
            continue
        per_class = is_per_class_detection(members)
        if per_class:
            quantities = [Quantity("ap40", "total AP (IoU > 0.4)", scale=AP_SCALE, better="max")]
            source = "Table 4"
        else:
            columns = ["AP", "AP50"] if sna.dataset_name == "voc2012" else ["AP"]
            quantities = [q for column in columns if (q := _ap_quantity(members, column)) is not None]
            quantities = quantities or [Quantity(dict(AP_FAMILY)["AP"][0], "AP", scale=AP_SCALE, better="max")]
            source = "Table 3"
        for quantity in quantities:
            subject = _candidate(sna, "SNA", quantity, context.at)
            rivals = [_candidate(g, g.method(), quantity, context.at) for g in others]
            claims.append(_claim(_slug("best", quantity.name, *key), f"SNA has the best {quantity.label} {_where(sna)}",
                                 source, "best", check_best(subject, rivals, alpha=alpha)))
        baseline = next((g for g in others if g.axes["attention"] == "none"), None)
        if baseline is not None:
            quantity = quantities[0]
            claims.append(_claim(_slug("beats-baseline", quantity.name, *key),
                                 f"SNA improves {quantity.label} over the backbone without attention {_where(sna)}",
                                 source + " text (+12.45 % / +15.53 % total AP)" if per_class else source, "better",
                                 check_better(_candidate(sna, "SNA", quantity, context.at),
                                              _candidate(baseline, "none", quantity, context.at), alpha=alpha)))
    return claims


def _auroc_claims(groups: Sequence[Group], context: ReportContext, alpha: float) -> list[Claim]:
    claims: list[Claim] = []
    chosen = [g for g in groups if g.axes["task"] == "multilabel"]
    for key, members in _by(chosen, *_COMPARISON_AXES).items():
        methods = _methods(members)
        if len(methods) < 2:
            continue
        where = _where(methods[0])
        mean = QUANTITIES["auroc"]
        aa = next((g for g in methods if g.axes["attention"] == "aa"), None)
        if aa is not None:
            claims.append(_claim(_slug("aa-lowest", *key), f"AA has the lowest mean AUROC {where}",
                                 "§4.2.3, Fig. 5 (AA 85.62 vs DenseNet-121 87.41)", "worst",
                                 check_best(_candidate(aa, "AA", mean, context.at),
                                            [_candidate(g, g.method(), mean, context.at) for g in methods if g is not aa],
                                            mode="min", alpha=alpha)))
        sna = next((g for g in methods if g.axes["attention"] == "sna"), None)
        logged = {name for g in members for run in g.runs for name in run.metrics}
        indices = per_class_metrics(logged, "auroc")
        if sna is not None and indices:
            names = context.class_names(sna.dataset_name, max(indices) + 1)
            per_class = {names[i]: [_candidate(g, g.method(), Quantity(f"auroc_class{i}", "", scale=100.0), context.at)
                                    for g in methods] for i in indices}
            claims.append(_claim(_slug("sna-most-classes", *key), f"SNA is best on the most classes (AUROC) {where}",
                                 "Fig. 5 (SNA best on 7 of 15 classes)", "most_wins",
                                 check_most_wins("SNA", per_class, alpha=alpha)))
    return claims


def paper_claims(groups: Sequence[Group], context: ReportContext, alpha: float = ALPHA) -> tuple[list[Claim], list[Skipped]]:
    """Every claim of the paper this grid covers, evaluated; and the ones it cannot check."""
    claims = _classification_claims(groups, context, alpha)
    rank_claims, skipped = _rank_claims(groups, context, alpha)
    claims += rank_claims
    claims += _placement_claims(groups, context, alpha)
    claims += _detection_claims(groups, context, alpha)
    claims += _auroc_claims(groups, context, alpha)
    if not claims:
        skipped.append(Skipped("Claim checks", "no comparison in the grid has SNA next to another method, "
                                               "two ranks or two placements"))
    return claims, skipped


# ---------------------------------------------------------------------------------------------
# Output


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def claims_json(claims: Sequence[Claim], skipped: Sequence[Skipped], alpha: float = ALPHA) -> str:
    counts = {verdict: sum(claim.verdict == verdict for claim in claims) for verdict in VERDICTS}
    document = {"alpha": alpha, "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
                "rules": RULES, "counts": counts, "claims": [_clean(asdict(claim)) for claim in claims],
                "skipped": [skip.line() for skip in skipped]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def claims_markdown(claims: Sequence[Claim], skipped: Sequence[Skipped], alpha: float = ALPHA) -> str:
    counts = {verdict: sum(claim.verdict == verdict for claim in claims) for verdict in VERDICTS}
    lines = ["# Claim checks", "",
             f"{len(claims)} claims of Fang et al. (2022) checked on this grid: "
             + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + f". α = {alpha}; Welch's two-sided t-test; "
             f"95 % percentile bootstrap over seeds ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); "
             "no multiple-comparison correction.", "",
             "| verdict | claim | source | rule | numbers |", "|---|---|---|---|---|"]
    for claim in claims:
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in (
            f"**{claim.verdict}**", claim.text, claim.source, claim.rule, claim.reason)) + " |")
    lines += ["", "## Rules", ""]
    lines += [f"- **{name}**: {text}" for name, text in RULES.items()]
    if skipped:
        lines += ["", "## Not checked", ""]
        lines += [f"- {skip.line()}" for skip in skipped]
    return "\n".join(lines) + "\n"
