"""audit/registry.py, the one registry mechanism, and every registry built on it."""

import subprocess
import sys
from pathlib import Path

import pytest

import measures
from audit.data.preprocess import PREPROCESSINGS
from audit.data.sources import DATASETS
from audit.data.variants import VARIANTS
from audit.errors import UsageError
from audit.judge.paper import PAPERS
from audit.models.registry import MODELS
from audit.registry import DuplicateName, Registry
from audit.spec.run import VARIANTS as SPEC_VARIANTS
from audit.theory.kernel import KERNELS
from audit.train.state import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = {"measure": measures.MEASURES, "model": MODELS, "dataset": DATASETS, "variant": VARIANTS,
              "preprocessing": PREPROCESSINGS, "kernel": KERNELS, "optimizer": OPTIMIZERS, "paper comparison": PAPERS}
ENTRIES = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


def test_a_duplicate_name_is_an_error_naming_both_definitions():
    registry = Registry("widget")

    @registry.register("spoke", description="first")
    def first() -> int:
        return 1

    def second() -> int:
        return 2

    with pytest.raises(DuplicateName) as caught:
        registry.add("spoke", second)
    message = str(caught.value)
    assert f"{__file__}:{first.__code__.co_firstlineno}" in message
    assert f"{__file__}:{second.__code__.co_firstlineno}" in message
    assert message.count("\n") == 0 and "widget 'spoke' is registered twice" in message
    assert registry.get("spoke") is first  # the first definition stays


def test_a_duplicate_measure_names_both_files():
    with pytest.raises(DuplicateName, match=r"measure 'l2' is registered twice: at .*measures/norms\.py:\d+ and at "
                                            rf"{__file__}:\d+"):
        @measures.measure("l2", family="norm", needs=("weights",), direction=1, cost="instant", reference="",
                          formula="")
        def l2_again(ctx):
            return 0.0


def test_unknown_names_are_one_line_with_the_closest_match():
    registry = Registry("widget")
    registry.add("gear", 1)
    registry.pattern("cog-N", lambda name: int(name[4:]) if name.startswith("cog-") and name[4:].isdigit() else None)
    assert registry.get("cog-12") == 12 and registry.knows("cog-3") and not registry.knows("cog-x")
    with pytest.raises(UsageError, match=r"^unknown widget 'geer': did you mean 'gear'\?"):
        registry.get("geer")
    with pytest.raises(UsageError, match=r"known: cog-N, gear"):
        registry.get("zzzz")
    assert registry.get("zzzz", None) is None  # dict-like with a default
    assert registry.labels() == ["gear", "cog-N"]


@pytest.mark.parametrize("kind,name", ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_every_entry_resolves_and_a_near_miss_suggests_it(kind, name):
    registry = REGISTRIES[kind]
    assert registry.get(name) is registry[name]
    assert registry.entry(name).origin.rsplit(":", 1)[1].isdigit()
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    if registry.knows(typo):  # a pattern takes it (mlp-1x51x is no mlp, but mlp-1x51 is)
        return
    with pytest.raises(UsageError) as caught:
        registry.get(typo)
    assert f"unknown {kind} '{typo}'" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name,kind", [("mlp-2x7", MODELS), ("folder:/any/where", DATASETS),
                                       ("imagenet:64", PREPROCESSINGS), ("imagenet", PREPROCESSINGS)])
def test_name_grammars_resolve_through_patterns(name, kind):
    assert kind.knows(name) and name not in kind.names()


def test_bad_pattern_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="image size must be a positive integer"):
        PREPROCESSINGS.get("imagenet:big")
    with pytest.raises(UsageError, match="depth must lie in 1..64"):
        MODELS.get("mlp-0x8")
    with pytest.raises(UsageError, match="unknown dataset 'folder:'"):
        DATASETS.get("folder:")


def test_the_variant_registry_covers_the_spec_grammar():
    assert set(VARIANTS.names()) == set(SPEC_VARIANTS)
    assert {e.meta["axis"] for e in VARIANTS.entries()} == {"label", "input"}


def test_measure_metadata_is_checked_without_assert_even_under_python_O():
    code = ("import measures\n"
            "try:\n"
            "    measures.measure('x', family='norm', needs=('weights',), direction=0, cost='instant',"
            " reference='', formula='')\n"
            "except measures.UsageError as err:\n"
            "    print(err)\n")
    code = code.replace("measures.UsageError", "__import__('audit.errors').errors.UsageError")
    result = subprocess.run([sys.executable, "-O", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "measure 'x': direction must be 1 (larger = more complex) or -1, got 0", result.stderr
