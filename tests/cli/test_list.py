"""`audit list KIND` for every registry: the registered names (then the patterns' labels), as a table or JSON;
every kind an unknown-name error points at (audit.errors.LISTED) has its listing."""

import json

import pytest
from typer.testing import CliRunner

import measures
from audit.data.preprocess import PREPROCESSINGS
from audit.data.sources import DATASETS
from audit.data.variants import VARIANTS
from audit.errors import LISTED, unknown_name
from audit.models.registry import MODELS
from audit.theory.kernel import KERNELS
from audit.train.state import OPTIMIZERS
from cli import app

runner = CliRunner()


def listed(kind: str) -> list[dict]:
    result = runner.invoke(app, ["list", kind, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("kind, registry", [("kernels", KERNELS), ("optimizers", OPTIMIZERS),
                                            ("preprocessings", PREPROCESSINGS), ("datasets", DATASETS)])
def test_a_listing_names_every_entry_then_every_pattern(kind, registry):
    items = listed(kind)
    assert [i["name"] for i in items] == registry.labels()
    table = runner.invoke(app, ["list", kind]).stdout
    assert all(label in table for label in registry.labels())


def test_kernels_show_their_formulas_and_the_others_their_descriptions():
    assert {i["name"]: i["formula"] for i in listed("kernels")} == {e.name: e.meta["formula"] for e in KERNELS.entries()}
    for kind, registry in (("optimizers", OPTIMIZERS), ("preprocessings", PREPROCESSINGS)):
        assert [i["description"] for i in listed(kind)] == [e.meta["description"] for e in registry.entries()] + [
            p.meta["description"] for p in registry.patterns()]


def test_variants_come_from_the_variant_registry():
    items = listed("variants")
    assert items == [{"name": e.meta["label"], "axis": e.meta["axis"], "description": e.meta["description"]}
                     for e in VARIANTS.entries()]
    assert [i["name"] for i in items] == ["true", "corrupt:P", "random-labels", "shuffled-pixels", "random-pixels",
                                          "gaussian"]


def test_models_and_measures_list_the_registered_names():
    assert [i["name"] for i in listed("models")] == MODELS.names()
    assert [i["name"] for i in listed("measures")] == measures.names()


@pytest.mark.parametrize("kind", LISTED)
def test_every_kind_an_error_points_at_has_its_listing(kind):
    assert f"audit list {kind}s" in str(unknown_name(kind, "x", ["y"]))
    assert listed(f"{kind}s")
