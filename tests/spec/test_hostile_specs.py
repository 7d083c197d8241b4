"""Hostile input at the boundary: experiment files, command-line values and a store's experiment.json that are
wrong end in one line (exit 2 for the user's input, exit 1 naming the file for the store's own), never in a
traceback; `audit run FILE --plan` plans or refuses any TOML document, and writes nothing."""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import experiments
from audit.errors import UsageError
from audit.pipeline.run import RunOptions, prepare_run
from audit.spec.experiment import GRID_KEYS, RUN_FIELDS, SWEEP_AXES
from audit.spec.overrides import check_out, check_path, run_overrides
from audit.spec.run import VARIANTS
from cli import app

VALID = 'name = "h"\n[base]\nmodel = "mlp-1x16"\ntrain_size = 100\nepochs = 1\n[grid]\nvariants = ["true"]\nseeds = 1\n'

TINY = ["run", "--model", "mlp-1x16", "--train-size", "100", "--variants", "true", "--seeds", "1", "--epochs", "1",
        "--measure", "l2"]


def invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def assert_one_line(result: Any, code: int, *needles: str) -> str:
    """The command exited with code, and stderr is exactly one line holding every needle, with no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    prefix = "audit: error: " if code == 2 else "audit: failed: "
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def plan(path: Path, *extra: str) -> Any:
    return invoke(["run", str(path), "--plan", *extra])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A current directory that must stay empty: --plan writes nothing, ./audit-runs included."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    yield tmp_path
    assert os.listdir(folder) == []


def test_a_valid_file_plans(workdir):
    path = workdir / "e.toml"
    path.write_text(VALID)
    result = plan(path)
    assert result.exit_code == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("data, needles", [
    ("\ufeffname = 'x'\n".encode("utf-16"), ["e.toml", "must be UTF-8 TOML", "UTF-16"]),
    (b"\x00\x9f\x92\x96binary", ["e.toml", "must be UTF-8 TOML"]),
    (("grid = 3\n" + VALID.split("[grid]")[0]).encode(), ["[grid] must be a table"]),
    (b"sweep = [1]\n" + VALID.encode(), ["[sweep] must be a table"]),
    (b"store = 5\n" + VALID.encode(), ["store must be a string, got 5"]),
    (VALID.replace('name = "h"', 'name = "a\\u0000b"').encode(), ["name holds a control character", "\\x00"]),
    (VALID.replace('model = "mlp-1x16"', 'model = "mlp\\u0000"').encode(), ["'model' holds a control character"]),
    (VALID.replace('["true"]', '["tr\\u0007ue"]').encode(), ["variant holds a control character"]),
    (b'store = "../../../x"\n' + VALID.encode(), ["store '../../../x'", "under ./audit-runs"]),
    (b'store = "/tmp/abs"\n' + VALID.encode(), ["store '/tmp/abs' is absolute"]),
    (b'store = ""\n' + VALID.encode(), ["store must be a non-empty string"]),
    (VALID.replace('name = "h"', 'name = ".."').encode(), ["name (the store's when none is given) '..'"]),
    (VALID.replace("seeds = 1", "seeds = [[1]]").encode(), ["grid axis 'seeds' holds [1]"]),
    (VALID.replace("seeds = 1", "seeds = [{a = 1}]").encode(), ["grid axis 'seeds' holds {'a': 1}"]),
    (VALID.replace("seeds = 1", "seeds = [1.5]").encode(), ["spec field 'seed' must be int, got 1.5"]),
    (VALID.replace("seeds = 1", "seeds = [true]").encode(), ["spec field 'seed' must be int, got True"]),
    (VALID.replace("seeds = 1", "seeds = 99999999999").encode(), ["seeds must be a positive count"]),
    (VALID.replace("epochs = 1", "epochs = 99999999999999999999").encode(), ["'epochs' is out of range"]),
    (VALID.replace("epochs = 1", "lr = 1" + "0" * 400).encode(), ["'lr' is out of range"]),
    (VALID.replace("epochs = 1", "lr = nan").encode(), ["'lr' must be a finite number, got nan"]),
    (VALID.replace("epochs = 1", "loss_target = inf").encode(), ["'loss_target' must be a finite number"]),
    (VALID.replace("epochs = 1", "epochs = 1" + "0" * 5000).encode(), ["e.toml is not valid TOML"]),
    (VALID.replace("epochs = 1", "lr = 1979-05-27").encode(), ["'lr' must be float"]),
    (VALID.replace("epochs = 1", 'dataset = ""').encode(), ["'dataset' must be a non-empty string"]),
    (VALID.replace("mlp-1x16", ":x").encode(), ["model ':x'", "module:function"]),
    (VALID.replace("mlp-1x16", ".rel:f").encode(), ["model '.rel:f'", "module:function"]),
    (b"sweep = {width = [true]}\n" + VALID.encode(), ["sweep axis 'width' takes positive integers"]),
    (b"sweep = {lr = 0.1}\n" + VALID.encode(), ["sweep axis 'lr' must be a non-empty list"]),
    (b"sweep = {lr = [[0.1]]}\n" + VALID.encode(), ["sweep axis 'lr' holds [0.1]"]),
    (b"description = 5\n" + VALID.encode(), ["description must be a string"]),
    (b"keep = [1]\n" + VALID.encode(), ["keep must be a list"]),
    (b"runs = [1]\n" + VALID.encode(), ["runs must be an array of tables"]),
    (f"sweep = {{lr = {[n / 10 for n in range(1, 11)]}, batch_size = {list(range(1, 12))}}}\n".encode()
     + VALID.replace("seeds = 1", "seeds = 1000").encode(), ["expands to 110000 runs"]),
])
def test_a_hostile_file_is_one_line_and_exit_2(workdir, data, needles):
    path = workdir / "e.toml"
    path.write_bytes(data)
    assert_one_line(plan(path), 2, *needles)


@pytest.mark.parametrize("extra, needles", [
    (["--out", ""], ["--out needs a directory path"]),
    (["--out", "x" * 300], ["cannot use store path", "File name too long"]),
    (["--variants", ","], ["--variants needs at least one variant"]),
    (["--variants", ""], ["--variants needs at least one variant"]),
    (["--variants", "true,true"], ["--variants lists 'true' twice"]),
    (["--variants", "true,corrupt:0"], ["'corrupt:0' beside 'true'"]),
    (["--seeds", "99999999999999"], ["--seeds must be positive"]),
    (["--lr", "nan"], ["'lr' must be a finite number"]),
    (["--epochs", "99999999999999999999"], ["'epochs' is out of range"]),
    (["--model", ":x"], ["model ':x'"]),
    (["--dataset", "digits\x00"], ["'dataset' holds a control character"]),
])
def test_a_hostile_option_is_one_line_and_exit_2(workdir, extra, needles):
    path = workdir / "e.toml"
    path.write_text(VALID)
    assert_one_line(plan(path, *extra), 2, *needles)


@pytest.mark.parametrize("out", ["", " ", "a\x00b"])
def test_an_empty_out_is_refused_before_any_work(out):
    with pytest.raises(UsageError, match="--out"):
        prepare_run(experiments.load("quick"), run_overrides(), RunOptions(out=out))
    with pytest.raises(UsageError, match="STORE needs a directory path"):
        check_path("", "STORE")
    assert check_out(None) is None and check_out("x") == Path("x") and check_path("/a/../b", "STORE") == Path("/a/../b")


def test_out_takes_any_other_path(workdir):
    path = workdir / "e.toml"
    path.write_text(VALID)
    assert plan(path, "--out", str(workdir / "a" / ".." / "elsewhere")).exit_code == 0


# ---------------------------------------------------------------- experiment.json of a store


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A real one-run store (mlp-1x16 on 100 digits, one epoch), built once."""
    root = tmp_path_factory.mktemp("store") / "s"
    result = invoke([*TINY, "--out", str(root)])
    assert result.exit_code == 0, result.stderr
    return root


def commands(root: Path) -> list[list[str]]:
    """The commands that read a store, each of which must exit 0 or 1 with experiment.json named."""
    run_id = next((root / "runs").glob("*.h5")).stem
    return [["report", str(root), "--json"], ["score", str(root), "--measure", "l2", "--json"],
            ["show", str(root), run_id],
            [*TINY, "--out", str(root)]]


def check_store_commands(root: Path, names: list[list[str]]) -> list[int]:
    codes = []
    for args in names:
        result = invoke(args)
        if result.exit_code != 0:
            assert_one_line(result, 1, str(root / "experiment.json"))
        codes.append(result.exit_code)
    return codes


@pytest.mark.parametrize("text, needle", [
    ("[1,2]", "it must be a JSON object, found a JSON array"),
    ('{"run_ids": 5}', "'run_ids' must be an array of run ids, found a JSON number"),
    ('{"run_ids": [1]}', "'run_ids' must hold run ids (strings)"),
    ('{"imported": "abc"}', "'imported' must be an array"),
    ('{"kernel_runs": [null]}', "'kernel_runs' must hold run ids"),
    ('{"runs": []}', "'runs' must be an object"),
    ('{"runs": {"abc": 1}}', "'runs' entry 'abc' must be an object"),
    ('{"experiment": "x"}', "'experiment' must be an object"),
    ('{"audit_version": 1}', "'audit_version' must be a string"),
    ('{"x": ' + "[" * 80 + "]" * 80 + "}", "nested over 64 deep"),
    ("[" * 100000, "not JSON"),
    ("1" * 5000, "not JSON"),
    ("{", "not JSON"),
])
def test_experiment_json_of_a_wrong_shape_is_named(tiny_store, text, needle):
    path = tiny_store / "experiment.json"
    kept = path.read_bytes()
    try:
        path.write_text(text)
        for args in ([*TINY, "--out", str(tiny_store)], ["kernel", "--dataset", "digits", "--train-size", "50",
                                                          "--out", str(tiny_store)]):
            assert_one_line(invoke(args), 1, str(path), needle)
        assert path.read_text() == text  # left as it is
    finally:
        path.write_bytes(kept)


@pytest.mark.parametrize("text", ["[1,2]", '{"run_ids": 5}'])
def test_commands_that_do_not_need_experiment_json_work_without_it(tiny_store, text):
    path = tiny_store / "experiment.json"
    kept = path.read_bytes()
    try:
        path.write_text(text)
        assert check_store_commands(tiny_store, commands(tiny_store)) == [0, 0, 0, 1]  # run needs it
    finally:
        path.write_bytes(kept)


def test_unknown_keys_of_experiment_json_are_kept(tiny_store):
    path = tiny_store / "experiment.json"
    kept = path.read_bytes()
    try:
        path.write_text(json.dumps({**json.loads(kept), "from_the_future": {"a": [1, None]}}))
        assert invoke([*TINY, "--out", str(tiny_store)]).exit_code == 0
        assert json.loads(path.read_text())["from_the_future"] == {"a": [1, None]}
    finally:
        path.write_bytes(kept)


# ---------------------------------------------------------------- property-based: any TOML document, any JSON

EXPERIMENT_KEYS = ["name", "description", "store", "base", "grid", "sweep", "keep", "runs"]

KEYS = st.sampled_from(sorted({*EXPERIMENT_KEYS, *RUN_FIELDS, *GRID_KEYS, *SWEEP_AXES})) | st.text(max_size=6)

SCALARS = (st.text(max_size=8) | st.integers() | st.sampled_from([2 ** 63, -2 ** 63 - 1, 10 ** 30, 0, -1])
           | st.floats() | st.booleans() | st.datetimes() | st.dates() | st.times()
           | st.datetimes(timezones=st.just(datetime.UTC)))

TOML_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8)

GOOD = {
    "dataset": st.sampled_from(["digits", "mnist", "cifar10", "imagenet", "folder:/nonexistent", "digitz"]),
    "train_size": st.integers(1, 2000), "split_seed": st.integers(0, 5), "seed": st.integers(0, 5),
    "preprocess": st.sampled_from(["standard", "paper", "none", "imagenet", "imagenet:64", "imagenet:x"]),
    "variant": st.sampled_from(VARIANTS), "corrupt": st.floats(0, 1), "corrupt_test": st.booleans(),
    "model": st.sampled_from(["mlp-1x16", "mlp-2x8", "mlp-0x5", "alexnet-small", "kernel-gaussian",
                              "kernel-gaussian,ridge=0.1", "kernel-bogus", ":x", ".a:b", "nosuchmodule:f"]),
    "optimizer": st.sampled_from(["sgd", "adam", "nosuch"]), "lr": st.floats(1e-4, 1), "lr_decay": st.floats(0.5, 1),
    "momentum": st.floats(0, 0.99), "weight_decay": st.floats(0, 0.1), "batch_size": st.integers(1, 256),
    "epochs": st.integers(1, 5), "fit_target": st.floats(0.5, 1), "loss_target": st.floats(0.01, 1),
    "augment": st.sampled_from(["none", "crop", "flip", "crop+flip", "rotate"]), "dropout": st.floats(0, 0.5),
    "batchnorm": st.booleans(),
}

VARIANT_TEXT = st.sampled_from(["true", "corrupt:0.2", "random-labels", "gaussian", "shuffled-pixels", "corrupt:2"])


@st.composite
def valid_ish(draw: Any) -> dict[str, Any]:
    """A document close to a valid one: a valid base and grid, a few good fields, a sweep axis, sometimes a
    field or a key replaced by an arbitrary value."""
    base = {"model": "mlp-1x16", "train_size": 100, "epochs": 1}
    for name in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=2, unique=True)):
        base[name] = draw(GOOD[name])
    document: dict[str, Any] = {"name": "h", "base": base,
                                "grid": {"variants": draw(st.lists(VARIANT_TEXT, min_size=1, max_size=2)),
                                         "seeds": draw(st.integers(1, 2))}}
    if draw(st.booleans()):
        document["sweep"] = {draw(st.sampled_from(["lr", "width", "batch_size"])): [1, 2]}
    if draw(st.booleans()):
        document["keep"] = [draw(st.sampled_from(["epoch:1", "loss:0.1", "epoch:0.5", "loss:x"]))]
    if draw(st.integers(0, 2)) == 0:
        section = draw(st.sampled_from(["base", "grid", "."]))
        target = document if section == "." else document[section]
        target[draw(KEYS)] = draw(TOML_VALUES)
    return document


def toml_key(key: str) -> str:
    return toml_string(key)


def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        else:
            out.append(f"\\U{ord(char):08X}")
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """value as a TOML inline value (tables inline, floats with nan and inf)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> bytes:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in document.items()).encode("utf-8")


TOML_FILES = st.one_of(
    valid_ish().map(toml_document), valid_ish().map(toml_document),
    st.dictionaries(KEYS, TOML_VALUES, max_size=4).map(toml_document),
    st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)


def test_any_toml_document_plans_or_is_one_line_exit_2(workdir):
    outcomes: list[int] = []
    path = workdir / "any.toml"

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=TOML_FILES)
    def check(data: bytes) -> None:
        path.write_bytes(data)
        result = plan(path)
        if result.exit_code != 0:
            assert_one_line(result, 2)
        assert os.listdir(".") == []
        outcomes.append(result.exit_code)

    check()
    assert outcomes.count(0) >= 15 and outcomes.count(2) >= 15, outcomes


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=10)

JSON_KEYS = st.sampled_from(["run_ids", "imported", "kernel_runs", "runs", "experiment", "audit_version"])


@st.composite
def json_documents(draw: Any, real: dict[str, Any]) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        document: Any = draw(JSON_VALUES)
    elif kind == 1:  # the real document, a known key replaced by anything
        document = {**real, draw(JSON_KEYS): draw(JSON_VALUES)}
    elif kind == 2:  # a plausible shape, items of any type
        document = {"run_ids": draw(st.lists(st.text(max_size=4) | JSON_VALUES, max_size=2)),
                    "runs": draw(st.dictionaries(st.text(max_size=4), st.dictionaries(st.text(max_size=4), JSON_VALUES)
                                                 | JSON_VALUES, max_size=2)),
                    draw(st.text(max_size=5)): draw(JSON_VALUES)}
    else:
        return draw(st.binary(max_size=30))
    return json.dumps(document).encode()


def test_any_json_as_experiment_json_works_or_is_named(tiny_store):
    path = tiny_store / "experiment.json"
    kept = path.read_bytes()
    names = [["report", str(tiny_store), "--json"], [*TINY, "--out", str(tiny_store)]]
    outcomes: list[tuple[int, ...]] = []

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=json_documents(json.loads(kept)))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        outcomes.append(tuple(check_store_commands(tiny_store, names)))

    try:
        check()
    finally:
        path.write_bytes(kept)
    assert (0, 0) in outcomes and (0, 1) in outcomes, outcomes
