import pytest

import experiments
from audit.errors import UsageError
from audit.spec.experiment import experiment_from_dict
from audit.spec.names import parse_variant
from audit.spec.run import RunSpec, derive_seed


def test_run_id_is_a_stable_hash_of_the_settings():
    assert RunSpec().run_id == RunSpec().run_id
    assert RunSpec(seed=1).run_id != RunSpec(seed=0).run_id
    assert len(RunSpec().run_id) == 12
    assert RunSpec.from_dict(RunSpec(lr=0.05).to_dict()) == RunSpec(lr=0.05)


def test_family_ignores_variant_and_seed_only():
    base = RunSpec()
    assert RunSpec(variant="random-labels", corrupt=1.0, seed=3).family_key() == base.family_key()
    assert RunSpec(lr=0.01).family_key() != base.family_key()


@pytest.mark.parametrize("text, expected", [
    ("true", ("true", 0.0)), ("corrupt:0.2", ("corrupt", 0.2)), ("corrupt:0", ("true", 0.0)),
    ("corrupt:1", ("random-labels", 1.0)), ("random-labels", ("random-labels", 1.0)),
    ("gaussian", ("gaussian", None)), ("shuffled-pixels", ("shuffled-pixels", None)),
])
def test_parse_variant(text, expected):
    assert parse_variant(text) == expected


@pytest.mark.parametrize("text", ["corrupt:1.5", "corrupt:-0.1", "corrupt:x", "corrupt", "true:3", "Gaussian",
                                  "my variant", "gaussian:2"])
def test_bad_variants_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_variant(text)


def test_an_unregistered_variant_name_is_refused_where_specs_enter_with_the_closest_name():
    from audit.pipeline.names import check_run

    assert parse_variant("gausian") == ("gausian", None)  # well formed: a plugin's variant, on the input axis
    with pytest.raises(UsageError, match="unknown variant 'gausian'.*gaussian"):
        check_run(RunSpec(variant="gausian", corrupt=None))


def test_validation_names_the_field():
    with pytest.raises(UsageError, match="batch_size"):
        RunSpec(batch_size=0)
    with pytest.raises(UsageError, match="epochs"):
        RunSpec(epochs=-1)
    with pytest.raises(UsageError, match="lr"):
        RunSpec(lr=float("nan"))
    with pytest.raises(UsageError, match="spec field"):
        RunSpec.from_dict({"learning_rate": 0.1})
    with pytest.raises(UsageError, match="corrupt"):
        RunSpec(variant="gaussian", corrupt=0.5)


def test_derived_seeds_are_distinct_and_stable():
    assert derive_seed(0, "labels") == derive_seed(0, "labels")
    assert len({derive_seed(s, p) for s in range(3) for p in ("labels", "init", "order")}) == 9


def test_quick_experiment_expands_to_27_runs():
    spec = experiments.load("quick")
    runs = spec.expand()
    assert len(runs) == 27 and len({r.run_id for r in runs}) == 27
    assert {r.variant_label for r in runs} == {"true", "corrupt:0.2", "corrupt:0.4", "corrupt:0.6", "corrupt:0.8",
                                               "random-labels", "shuffled-pixels", "random-pixels", "gaussian"}
    assert {r.seed for r in runs} == {0, 1, 2}
    assert len({r.family_key() for r in runs}) == 1


def test_experiment_rejects_unknown_keys():
    with pytest.raises(UsageError, match="did you mean 'lr'"):
        experiment_from_dict({"base": {"lrr": 0.1}}, "x.toml")
    with pytest.raises(UsageError, match="grid axis"):
        experiment_from_dict({"grid": {"colours": [1]}}, "x.toml")
