"""Verdicts on synthetic run tables where the right answer is known, and the statistics against scipy."""

import itertools

import numpy as np
import pytest
from scipy import stats

import measures
from audit.judge.statistics import adjust, exact_null_range, pairwise_auc
from audit.judge.verdict import judge

P_OF = {"true": 0.0, "corrupt:0.5": 0.5, "random-labels": 1.0}


def family_rows(family, values_by_variant, gap_of=None, hyper=None):
    """Rows of one family; gap_of(variant, seed) gives the gap (default: the corruption p plus a little)."""
    rows = []
    for variant, values in values_by_variant.items():
        for seed, value in enumerate(values):
            p = P_OF.get(variant)
            gap = gap_of(variant, seed) if gap_of else (p if p is not None else 0.9) + 0.01 * seed
            rows.append({"run_id": f"{family}-{variant}-{seed}", "family": family, "variant": variant.split(":")[0],
                         "corrupt": p, "seed": seed, "status": "complete", "fitted": True, "gap": gap,
                         "test_size": 10000, "hyperparameters": dict(hyper or {}), "measures": {}, "seconds": {}})
    return rows


def with_measure(rows, name, value_of):
    for row in rows:
        row["measures"][name] = value_of(row)
    return rows


def synthetic():
    """Two families, 6 seeds per level, gap = p + noise; four measures with known verdicts."""
    rng = np.random.default_rng(0)
    rows = []
    for family in ("a", "b"):
        for variant, p in P_OF.items():
            for seed in range(6):
                gap = p * 0.8 + 0.02 * rng.standard_normal()
                rows.append({"run_id": f"{family}{variant}{seed}", "family": family, "variant": variant.split(":")[0],
                             "corrupt": p, "seed": seed, "status": "complete", "fitted": True, "gap": gap,
                             "test_size": 10000, "hyperparameters": {}, "measures": {}, "seconds": {}})
    for row in rows:
        row["measures"]["equals-gap"] = row["gap"]
        row["measures"]["independent"] = float(rng.standard_normal())
        row["measures"]["inverted"] = -row["gap"]
        row["measures"]["one-family"] = row["gap"] if row["family"] == "a" else float(rng.standard_normal())
    return rows


@pytest.fixture
def registered(monkeypatch):
    import dataclasses

    import measures

    base = measures.get("l2")
    for name in ("equals-gap", "independent", "inverted", "one-family"):
        monkeypatch.setitem(measures.MEASURES, name, dataclasses.replace(base, name=name))


def test_known_verdicts_on_synthetic_runs(registered):
    names = ["equals-gap", "independent", "inverted", "one-family"]
    judgement = judge(synthetic(), measures.judged(names))
    verdicts = {s["measure"]: s["verdict"] for s in judgement["summary"]}
    assert verdicts == {"equals-gap": "distinguishes", "independent": "fails", "inverted": "inverted",
                        "one-family": "unstable"}
    one = next(s for s in judgement["summary"] if s["measure"] == "one-family")
    assert one["families"] == {"a": "distinguishes", "b": "fails"}
    assert [s["measure"] for s in judgement["summary"]][0] == "equals-gap"  # sorted by verdict


def test_too_few_runs_is_insufficient_and_says_how_many_more(registered):
    rows = with_measure(family_rows("f", {"true": [1, 2], "random-labels": [5, 6, 7]}), "equals-gap",
                        lambda r: r["gap"])
    summary = judge(rows, measures.judged(["equals-gap"]))["summary"][0]
    assert summary["verdict"] == "insufficient"
    assert summary["notes"] == ["needs 1 more run of true (families with at least 2 of each count)"]


def test_separation_without_significance_is_insufficient_with_an_estimate(registered):
    rows = family_rows("f", {"true": [1, 2, 3], "random-labels": [5, 6, 7]})
    names = ["equals-gap", "independent", "inverted", "one-family"]
    for name in names:
        with_measure(rows, name, lambda r: r["gap"])  # four perfectly separating measures, 3 seeds each
    single = judge(rows, measures.judged(names[:1]))["summary"][0]
    assert single["verdict"] == "distinguishes" and single["trend_p_adj"] <= 0.05
    summary = judge(rows, measures.judged(names))["summary"]  # Holm over four tests: 3 vs 3 runs no longer suffice
    first = next(s for s in summary if s["measure"] == "equals-gap")
    assert first["trend_p_adj"] > 0.05
    assert first["verdict"] == "insufficient" and "more seed" in first["notes"][0]


def test_constant_measure_has_null_statistics_and_fails(registered):
    rows = with_measure(family_rows("f", {"true": [0] * 3, "random-labels": [0] * 3}), "equals-gap", lambda r: 5.0)
    judgement = judge(rows, measures.judged(["equals-gap"]))
    stat = judgement["verdicts"][0]
    assert stat["auc"] is None and stat["trend"] is None and stat["tau"] is None
    assert judgement["summary"][0]["verdict"] == "fails"


def test_statistics_equal_scipy_and_an_explicit_pair_count(registered):
    rows = synthetic()
    judgement = judge(rows, measures.judged(["independent"]), correction="none")
    for stat in judgement["verdicts"]:
        mine = [r for r in rows if r["family"] == stat["family"]]
        random_values = [r["measures"]["independent"] for r in mine if r["variant"] == "random-labels"]
        true_values = [r["measures"]["independent"] for r in mine if r["variant"] == "true"]
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in random_values for b in true_values)
        assert stat["auc"] == pytest.approx(wins / (len(random_values) * len(true_values)))
        label = [r for r in mine if r["corrupt"] is not None]
        tau = stats.kendalltau([r["measures"]["independent"] for r in label], [r["corrupt"] for r in label])
        assert stat["trend"] == pytest.approx(tau.statistic)
        gap_tau = stats.kendalltau([r["measures"]["independent"] for r in mine], [r["gap"] for r in mine])
        assert stat["tau"] == pytest.approx(gap_tau.statistic)
        assert stat["tau_p"] == pytest.approx(gap_tau.pvalue)
        mw = stats.mannwhitneyu(random_values, true_values, alternative="greater")
        assert stat["auc_p"] == pytest.approx(mw.pvalue)
        assert stat["auc_interval_kind"] == "bootstrap"


def test_holm_matches_its_definition():
    ps = [0.01, 0.04, 0.03, 0.005, None]
    adjusted = adjust(ps, "holm")
    order = sorted(range(4), key=lambda i: ps[i])
    expected, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * ps[i]))
        expected[i] = running
    assert adjusted[:4] == pytest.approx([expected[i] for i in range(4)])
    assert adjusted[4] is None
    assert adjust(ps, "none") == ps
    assert adjust([0.01, 0.02], "bh") == pytest.approx(list(stats.false_discovery_control([0.01, 0.02])))


def test_exact_null_range_covers_the_central_95_percent():
    # 3 vs 3: auc 0 and auc 1 each have null probability 1/20 > 0.025, so chance alone spans [0, 1]
    assert exact_null_range(3, 3) == [0.0, 1.0]
    for n_random, n_true in ((4, 4), (4, 6)):
        low, high = exact_null_range(n_random, n_true)
        total = n_random + n_true
        aucs = np.array([pairwise_auc([float(i) for i in chosen], [float(i) for i in range(total) if i not in chosen])
                         for chosen in itertools.combinations(range(total), n_random)])
        assert (aucs < low).mean() <= 0.025 < (aucs <= low).mean()
        assert (aucs > high).mean() <= 0.025 < (aucs >= high).mean()


def sweep_rows():
    """True-label runs over two axes (width, lr) and two seeds; gap and measures constructed per axis."""
    rows = []
    for width, lr, seed in itertools.product((64, 128, 256), (0.01, 0.1), (0, 1)):
        gap = 0.3 * (width / 256) - 0.1 * lr + 0.001 * seed
        rows.append({"run_id": f"{width}-{lr}-{seed}", "family": f"w{width}-lr{lr}", "variant": "true",
                     "corrupt": 0.0, "seed": seed, "status": "complete", "fitted": True, "gap": gap,
                     "test_size": 1_000_000, "hyperparameters": {"width": width, "lr": lr},
                     "measures": {"equals-gap": gap, "width-only": float(width), "inverted": -gap}, "seconds": {}})
    return rows


def test_psi_sign_error_and_cmi_on_a_sweep(registered):
    judgement = judge(sweep_rows(), measures.judged(["equals-gap", "inverted"]))
    by_name = {s["measure"]: s for s in judgement["summary"]}
    good, bad = by_name["equals-gap"], by_name["inverted"]
    assert good["axes"] == ["lr", "width"]
    assert good["psi"] == {"lr": 1.0, "width": 1.0} and good["psi_overall"] == 1.0
    assert bad["psi_overall"] == -1.0
    assert good["sign_error_mean"] == 0.0 and bad["sign_error_worst"] == 1.0
    assert good["cmi"] == pytest.approx(1.0) and good["cmi_sign"] == 1 and bad["cmi_sign"] == -1
    # pairs per axis: width groups have 3 runs (3 pairs) × 2 lr × 2 seeds; lr groups 1 pair × 3 widths × 2 seeds
    assert good["sign_error_pairs"] == 12 + 6


def test_pairs_within_test_noise_are_dropped(registered):
    rows = sweep_rows()
    for row in rows:
        row["test_size"] = 100  # Hoeffding: 2·sqrt(ln 40 / 200) ≈ 0.27 > every gap difference here
    summary = judge(rows, measures.judged(["equals-gap"]))["summary"][0]
    assert summary["sign_error_pairs"] == 0 and summary["sign_error_mean"] is None
