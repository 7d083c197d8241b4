import pytest
from scipy import stats

from audit.verdict import judge_family, pairwise_auc, verdict_of


def rows(values_by_variant, gaps=None):
    out = []
    p_of = {"true": 0.0, "corrupt:0.5": 0.5, "random-labels": 1.0, "gaussian": None}
    for variant, values in values_by_variant.items():
        for seed, value in enumerate(values):
            p = p_of[variant]
            gap = gaps[variant][seed] if gaps else (p if p is not None else 0.9)
            out.append({"run_id": f"{variant}{seed}", "family": "f", "variant": variant.split(":")[0],
                        "corrupt": p, "seed": seed, "status": "complete", "gap": gap,
                        "measures": {"m": value}})
    return out


def test_auc_counts_pairs_with_ties_as_half():
    assert pairwise_auc([3, 2], [1, 2]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert pairwise_auc([], [1]) is None


def test_a_measure_growing_with_corruption_distinguishes():
    family = rows({"true": [1, 2, 3], "corrupt:0.5": [4, 5, 6], "random-labels": [7, 8, 9]})
    result = judge_family(family, "m", direction=1)
    assert result["auc"] == 1.0 and result["verdict"] == "distinguishes"
    ps = [r["corrupt"] for r in family]
    values = [r["measures"]["m"] for r in family]
    assert result["trend"] == pytest.approx(stats.kendalltau(values, ps).statistic)
    assert result["medians"] == {"true": 2, "corrupt:0.5": 5, "random-labels": 8}


def test_constant_measure_has_null_statistics_and_fails():
    result = judge_family(rows({"true": [5, 5], "random-labels": [5, 5]}), "m", direction=1)
    assert result["auc"] is None and result["trend"] is None and result["tau"] is None
    assert result["verdict"] == "fails"


def test_inverted_and_oriented_measures():
    falling = rows({"true": [9, 8], "corrupt:0.5": [5, 4], "random-labels": [1, 2]})
    assert judge_family(falling, "m", direction=1)["verdict"] == "inverted"
    assert judge_family(falling, "m", direction=-1)["verdict"] == "distinguishes"


def test_separating_without_trend_fails():
    family = rows({"true": [1, 2], "corrupt:0.5": [10, 11], "random-labels": [3, 4]})
    result = judge_family(family, "m", direction=1)
    assert result["auc"] == 1.0 and result["verdict"] == "fails"


def test_tau_is_scipys_kendall_against_the_gap_over_all_runs():
    family = rows({"true": [1, 3], "random-labels": [2, 4], "gaussian": [0.5, 6]})
    result = judge_family(family, "m", direction=1)
    values = [r["measures"]["m"] for r in family]
    gaps = [r["gap"] for r in family]
    assert result["tau"] == pytest.approx(stats.kendalltau(values, gaps).statistic)


def test_verdict_thresholds():
    assert verdict_of(None, None, 1) == "fails"
    assert verdict_of(0.95, 0.6, 1) == "distinguishes"
    assert verdict_of(0.05, -0.6, -1) == "distinguishes"
    assert verdict_of(0.5, 0.9, 1) == "fails"
