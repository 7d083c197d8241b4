"""The smaller things a new user met (issue 17, item 13), each as it was seen and fixed."""

import dataclasses
import json
import re
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from audit.spec.experiment import ExperimentSpec
from audit.spec.overrides import run_overrides, store_name
from audit.spec.run import USER_DATA_FIELDS, RunSpec
from cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_store_names_from_overrides_hold_no_colon_or_comma():
    experiment = ExperimentSpec(name="quick", store="quick", base={})
    name = store_name(experiment, run_overrides(variants="true,corrupt:0.5", lr=0.05))
    assert name == "quick_lr=0.05_variants=true+corrupt-0.5"
    assert re.fullmatch(r"[A-Za-z0-9=.+_-]+", name)


def readme_experiment_file() -> str:
    section = (ROOT / "README.md").read_text().split("### Your own experiment file", 1)[1]
    return section.split("```toml\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_documents_every_base_field_with_its_default(tmp_path):
    text = readme_experiment_file()
    base = tomllib.loads(text)["base"]
    for field in dataclasses.fields(RunSpec):
        if field.name not in USER_DATA_FIELDS:
            assert re.search(rf"^#? ?{field.name} = |[#,] {field.name} = ", text, re.M), field.name
        if field.name in base and field.name != "train_size":  # the one value the example sets on purpose
            assert base[field.name] == field.default, field.name
    path = tmp_path / "my.toml"
    path.write_text(text)
    result = runner.invoke(app, ["run", str(path), "--plan", "--json", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert len(runs) == 2 * 2 * 3 * 3  # [[runs]] × [sweep] lr × variants × seeds
    assert {r["spec"]["model"] for r in runs} == {"mlp-1x256", "mlp-3x512"}


def test_kernel_on_digits_works_by_default_on_its_whole_train_set():
    result = runner.invoke(app, ["kernel", "--dataset", "digits", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["train_size"] == 1347 and document["train_error"] == 0.0
