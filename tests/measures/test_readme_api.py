"""The README's Python API example runs as printed: every name, value (to 1e-6) and reason."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = (Path(__file__).parents[2] / "README.md").read_text()


def fenced_after(marker: str, language: str) -> str:
    start = README.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    return match.group(1)


def test_the_readme_example_on_a_torchvision_model_prints_what_the_readme_shows():
    code = fenced_after("<!-- python-api-example -->", "python")
    printed = fenced_after("<!-- python-api-example -->", "text")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    got, shown = out.getvalue().splitlines(), printed.splitlines()
    assert len(got) == len(shown)
    for line, expected in zip(got, shown):
        name, value, *reason = line.split(maxsplit=2)
        name_, value_, *reason_ = expected.split(maxsplit=2)
        assert (name, reason) == (name_, reason_)
        assert value == value_ == "-" or float(value) == pytest.approx(float(value_), rel=1e-6)
