"""Claim checks on constructed data where the answer is known: a clear winner is supported, the
reverse is contradicted, overlapping seeds are inconclusive, one seed is inconclusive; the
statistics against reference values (Welch's t-test as R's t.test computes it)."""

from __future__ import annotations

import json
from itertools import count

import pytest

from orchestrator.report.aggregate import Group, RunRecord, Stat
from orchestrator.report.claims import (
    RULES,
    Candidate,
    bootstrap_interval,
    check_best,
    check_better,
    check_equal,
    check_most_wins,
    check_ratio,
    check_within,
    claims_json,
    claims_markdown,
    paper_claims,
    welch_p,
)
from orchestrator.report.context import ReportContext

_ids = count()

CLEAR = [80.0, 80.2, 79.8]
BEHIND = [75.0, 75.3, 74.8]
OVERLAP_A = [78.0, 80.0, 76.0]
OVERLAP_B = [77.5, 79.5, 76.5]


def candidate(name: str, values: list[float]) -> Candidate:
    return Candidate(name, Stat.of(values), "value" if values else "failed")


def group(attention: str, metrics_per_seed: list[dict[str, float]], *, rank_k: int | None = None,
          placement: str = "stem", dataset: str = "cifar100", dataset_name: str | None = None,
          task: str = "classification", backbone: str = "resnet18", detector: str | None = None,
          statuses: list[str] | None = None) -> Group:
    runs = [RunRecord(key=f"k{next(_ids)}", run_id=f"r{next(_ids)}", status=(statuses or [])[i] if statuses else "FINISHED",
                      seed=i, metrics=metrics) for i, metrics in enumerate(metrics_per_seed)]
    axes = {"dataset": dataset, "task": task, "backbone": backbone, "stem": "cifar", "detector": detector,
            "attention": attention, "rank_k": rank_k if attention == "sna" else None, "placement": placement,
            "recipe": "r"}
    return Group(axes=axes, dataset_name=dataset_name or dataset, recipe_label="", grid="g", config=None, runs=runs)


def seeds(**series: list[float]) -> list[dict[str, float]]:
    """seeds(final_top1=[...], params=[...]) → one metrics dict per seed."""
    length = max(len(values) for values in series.values())
    return [{name: values[i] for name, values in series.items() if i < len(values)} for i in range(length)]


# --------------------------------------------------------------------------------------------
# Statistics


def test_welch_p_matches_r() -> None:
    # R: t.test(c(1, 2, 3), c(4, 5, 6)) → t = -3.6742, df = 4, p-value = 0.02131
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.02131, abs=5e-5)
    # By hand: means 11.75 and 9, variances 8.75/3 and 1 → t = 2.75 / sqrt(8.75/12 + 1/3) = 2.668,
    # Welch–Satterthwaite df = 4.85, two-sided p = 0.0459.
    from scipy.stats import t as student_t

    se2 = 8.75 / 3 / 4 + 1 / 3
    df = se2**2 / ((8.75 / 3 / 4) ** 2 / 3 + (1 / 3) ** 2 / 2)
    assert df == pytest.approx(4.85, abs=0.01)
    expected = 2 * student_t.sf(2.75 / se2**0.5, df)
    assert welch_p([10, 12, 11, 14], [9, 8, 10]) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.0459, abs=1e-4)
    assert welch_p([1.0], [2.0, 3.0]) is None  # one seed: undefined
    assert welch_p([1.0, 1.0], [2.0, 2.0]) is None  # no spread: undefined


def test_bootstrap_interval_is_reproducible_and_bounded() -> None:
    first = bootstrap_interval(CLEAR, BEHIND)
    assert first == bootstrap_interval(CLEAR, BEHIND)
    low, high = first
    observed = sum(CLEAR) / 3 - sum(BEHIND) / 3
    assert min(CLEAR) - max(BEHIND) <= low <= observed <= high <= max(CLEAR) - min(BEHIND)
    ratio_low, ratio_high = bootstrap_interval([97.0, 98.0, 96.0], [100.0, 101.0, 99.0], "ratio")
    assert 0.94 < ratio_low < 0.97 < ratio_high < 1.0
    assert bootstrap_interval([1.0], [2.0, 3.0]) is None


# --------------------------------------------------------------------------------------------
# Rules


@pytest.mark.parametrize(("subject", "others", "verdict", "words"), [
    (CLEAR, [BEHIND, [76.0, 76.2, 75.9]], "supported", "runner-up"),
    (BEHIND, [CLEAR, [76.0, 76.2, 75.9]], "contradicted", "leader"),
    (OVERLAP_A, [OVERLAP_B, BEHIND], "inconclusive", "Welch p"),
    ([80.0], [BEHIND], "inconclusive", "too few seeds"),
    ([], [BEHIND], "inconclusive", "no finished runs"),
    ([80.0, 80.0], [[75.0, 75.0]], "inconclusive", "no spread"),
])
def test_best_rule(subject: list[float], others: list[list[float]], verdict: str, words: str) -> None:
    result, reason, numbers = check_best(candidate("SNA", subject), [candidate(f"M{i}", v) for i, v in enumerate(others)])
    assert result == verdict, reason
    assert words in reason
    if subject and len(subject) > 1 and verdict != "inconclusive":
        assert numbers["p"] < 0.05 and len(numbers["ci95_difference"]) == 2


def test_worst_rule_is_best_reversed() -> None:
    assert check_best(candidate("AA", BEHIND), [candidate("SE", CLEAR)], mode="min")[0] == "supported"
    assert check_best(candidate("AA", CLEAR), [candidate("SE", BEHIND)], mode="min")[0] == "contradicted"


@pytest.mark.parametrize(("subject", "reference", "verdict"), [
    (CLEAR, BEHIND, "supported"),
    (BEHIND, CLEAR, "contradicted"),
    (OVERLAP_A, OVERLAP_B, "inconclusive"),
    ([80.0], BEHIND, "inconclusive"),
])
def test_better_rule(subject: list[float], reference: list[float], verdict: str) -> None:
    result, reason, numbers = check_better(candidate("SNA", subject), candidate("none", reference))
    assert result == verdict, reason
    assert numbers["difference"] == pytest.approx(sum(subject) / len(subject) - sum(reference) / len(reference))


def test_equal_within_and_ratio_rules() -> None:
    same = check_equal(candidate("SNA", [11_220_132.0] * 3), candidate("none", [11_220_132.0]))
    assert same[0] == "supported" and "11,220,132" in same[1]
    differ = check_equal(candidate("SE", [11_309_124.0]), candidate("none", [11_220_132.0]))
    assert differ[0] == "contradicted" and "+88,992" in differ[1]
    assert check_within(candidate("SNA", [1.001]), candidate("none", [1.0]), 0.01)[0] == "supported"
    assert check_within(candidate("SA", [1.05]), candidate("none", [1.0]), 0.01)[0] == "contradicted"
    assert check_ratio(candidate("SNA", [97.0, 98.0, 96.0]), candidate("none", [100.0, 101.0, 99.0]), 0.1)[0] == "supported"
    assert check_ratio(candidate("AA", [50.0, 51.0, 49.0]), candidate("none", [100.0, 101.0, 99.0]), 0.1)[0] == "contradicted"
    assert check_ratio(candidate("SA", [60.0, 120.0, 90.0]), candidate("none", [100.0, 101.0, 99.0]), 0.1)[0] == "inconclusive"
    one_seed = check_ratio(candidate("SNA", [97.0]), candidate("none", [100.0, 101.0]), 0.1)
    assert one_seed[0] == "inconclusive" and one_seed[1].startswith("too few seeds")


def test_most_wins_rule() -> None:
    def classes(winner: str, wins: int, other_wins: int) -> dict[str, list[Candidate]]:
        table = {}
        for index in range(wins + other_wins):
            leader = winner if index < wins else "SE"
            table[f"class {index}"] = [candidate(name, CLEAR if name == leader else BEHIND) for name in ("SNA", "SE", "AA")]
        return table

    verdict, _reason, numbers = check_most_wins("SNA", classes("SNA", 3, 1))
    assert verdict == "supported" and numbers["significant_wins"] == {"SNA": 3, "SE": 1}
    assert check_most_wins("SNA", classes("SE", 0, 3))[0] == "contradicted"
    one_seed = {"c": [candidate("SNA", [80.0]), candidate("SE", BEHIND)]}
    assert check_most_wins("SNA", one_seed)[0] == "inconclusive"


# --------------------------------------------------------------------------------------------
# The paper's claims on a grid


def find(claims: list, prefix: str):
    found = [claim for claim in claims if claim.id.startswith(prefix)]
    assert len(found) == 1, (prefix, [claim.id for claim in claims])
    return found[0]


TABLE1_CLAIMS = ("best-top1", "best-top5", "beats-baseline-top1", "no-extra-params", "same-flops", "throughput")


def table1_groups(sna_top1: list[float]) -> list[Group]:
    params = {"none": 11_220_132.0, "se": 11_309_124.0, "aa": 13_700_000.0, "sna": 11_220_132.0}
    speed = {"none": [225.0, 226.0, 224.0], "se": [186.0, 187.0, 185.0], "aa": [76.0, 77.0, 75.0],
             "sna": [217.0, 218.0, 216.0]}
    flops = {"none": 1.111e9, "se": 1.1111e9, "aa": 1.9e9, "sna": 1.1125e9}
    top1 = {"none": BEHIND, "se": [76.0, 76.2, 75.9], "aa": [77.0, 77.3, 76.8], "sna": sna_top1}
    out = []
    for attention in ("none", "se", "aa", "sna"):
        runs = seeds(final_top1=top1[attention], final_top5=[v + 15 for v in top1[attention]],
                     params=[params[attention]] * 3, flops=[flops[attention]] * 3, throughput_img_s=speed[attention])
        out.append(group(attention, runs, rank_k=1))
    return out


def test_table1_claims_on_a_clear_winner() -> None:
    claims, skipped = paper_claims(table1_groups(CLEAR), ReportContext())
    assert len(claims) == len(TABLE1_CLAIMS) and not skipped
    assert {prefix: find(claims, prefix).verdict for prefix in TABLE1_CLAIMS} == dict.fromkeys(TABLE1_CLAIMS, "supported")
    best = find(claims, "best-top1")
    assert best.numbers["compared_with"] == "AA" and best.source == "Table 1 (CIFAR-100)"
    assert "SNA 80.00 ± 0.20 (n=3) vs runner-up AA 77.03" in best.reason


def test_table1_claims_reversed_and_with_one_seed() -> None:
    reversed_claims, _ = paper_claims(table1_groups([70.0, 70.2, 69.8]), ReportContext())
    assert find(reversed_claims, "best-top1").verdict == "contradicted"
    assert find(reversed_claims, "beats-baseline-top1").verdict == "contradicted"
    one_seed, _ = paper_claims(table1_groups([80.0]), ReportContext())
    best = find(one_seed, "best-top1")
    assert best.verdict == "inconclusive" and best.reason.startswith("too few seeds")


def test_rank_placement_detection_and_auroc_claims() -> None:
    rank = [group("sna", seeds(final_top1=values, final_top5=values), rank_k=k)
            for k, values in ((1, BEHIND), (2, CLEAR), (4, [76.0, 76.1, 75.9]))]
    placement = [group("sna", seeds(final_top1=values), rank_k=1, placement=where)
                 for where, values in (("blocks", CLEAR),)]
    vindr = [group(attention, seeds(final_ap40=values), dataset="vindr_cxr_det", dataset_name="vindr_cxr",
                   task="detection", detector="faster_rcnn", placement="stem+blocks")
             for attention, values in (("none", [0.55, 0.56, 0.555]), ("se", [0.57, 0.572, 0.568]),
                                       ("sna", [0.63, 0.625, 0.628]))]
    auroc = []
    for attention, shift in (("none", 0.0), ("aa", -0.1), ("sna", 0.05)):
        per_seed = [{"final_auroc": 0.8 + shift + d, **{f"final_auroc_class{i}": 0.8 + shift + d + 0.01 * i for i in range(3)}}
                    for d in (0.0, 0.004, -0.003)]
        auroc.append(group(attention, per_seed, dataset="vindr_cxr_cls", dataset_name="vindr_cxr", task="multilabel",
                           backbone="densenet121", placement="stem+blocks"))
    claims, skipped = paper_claims(rank + placement + vindr + auroc, ReportContext())
    assert find(claims, "rank2-best-top1").verdict == find(claims, "rank2-best-top5").verdict == "supported"
    # SNA at the stem (BEHIND, rank 1) is worse than in the blocks (CLEAR): contradicted.
    stem_claim = find(claims, "placement-stem-best")
    assert stem_claim.verdict == "contradicted" and stem_claim.source.startswith("§4.3.2")
    total_ap = find(claims, "best-ap40")
    assert total_ap.verdict == "supported" and total_ap.source == "Table 4"
    assert "62.77" in total_ap.reason  # fractions are shown in %
    assert find(claims, "beats-baseline-ap40").verdict == "supported"
    assert find(claims, "aa-lowest").verdict == "supported"
    assert find(claims, "sna-most-classes").verdict == "supported"
    assert find(claims, "sna-most-classes").numbers["significant_wins"] == {"SNA": 3}
    assert not [line for line in skipped if "rank" in line.what]


def test_rank2_not_in_grid_is_skipped_with_a_reason() -> None:
    rank = [group("sna", seeds(final_top1=BEHIND), rank_k=k) for k in (1, 4)]
    claims, skipped = paper_claims(rank, ReportContext())
    assert not [claim for claim in claims if claim.id.startswith("rank2")]
    assert any("rank_k 2 is not in the grid" in skip.line() for skip in skipped)


def test_claims_markdown_and_json_carry_rules_and_numbers() -> None:
    claims, skipped = paper_claims(table1_groups(OVERLAP_A), ReportContext())
    document = json.loads(claims_json(claims, skipped))
    assert document["rules"] == RULES and document["alpha"] == 0.05
    assert sum(document["counts"].values()) == len(claims) == len(document["claims"])
    best = next(c for c in document["claims"] if c["id"].startswith("best-top1"))
    assert best["verdict"] == "inconclusive" and 0.05 <= best["numbers"]["p"] <= 1
    assert [m["n"] for m in best["numbers"]["methods"]] == [3, 3, 3, 3]
    markdown = claims_markdown(claims, skipped)
    assert markdown.count("\n| **") == len(claims) and "## Rules" in markdown and "**most_wins**" in markdown
