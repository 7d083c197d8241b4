"""The small grammars of the command line (audit/spec/overrides.py): what they accept, and that every bad
value is one line with exit code 2, nothing written."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.errors import UsageError
from audit.spec.overrides import (
    check_point,
    parse_checkpoint,
    parse_keep_option,
    parse_shard,
    run_overrides,
    shard_of,
    show_args,
    split_setting,
)
from cli import app


def test_the_grammars_accept_what_the_help_says():
    assert parse_checkpoint(None) == (1, 30.0) and parse_checkpoint("5") == (5, 0.0)
    assert parse_checkpoint("30s") == (1, 30.0) and parse_checkpoint("0s") == (1, 0.0)
    assert parse_shard(None) is None and parse_shard("2/3") == (2, 3)
    assert shard_of(list(range(7)), (2, 3)) == [1, 4] and shard_of([1, 2], None) == [1, 2]
    assert parse_keep_option(None) is None and parse_keep_option(" epoch:2, loss:0.5,") == ("epoch:2", "loss:0.5")
    assert check_point(None) is None and check_point("loss:0.1") == "loss:0.1"
    assert split_setting("margin.percentile=5") == ("margin", "percentile", 5)
    assert split_setting("a.b=text") == ("a", "b", "text")
    assert show_args(["abc"]) == (None, "abc") and show_args(["s", "abc"]) == (Path("s"), "abc")
    assert run_overrides(variants="true, random-labels,")["variants"] == ["true", "random-labels"]
    assert run_overrides()["variants"] is None


@pytest.mark.parametrize("call", [lambda: parse_checkpoint("x"), lambda: parse_checkpoint("0"),
                                  lambda: parse_checkpoint("-1s"), lambda: parse_shard("4/3"),
                                  lambda: parse_shard("a/b"), lambda: parse_keep_option("epoch:x"),
                                  lambda: check_point("foo"), lambda: split_setting("margin"),
                                  lambda: show_args([]), lambda: show_args(["a", "b", "c"])])
def test_a_bad_value_is_a_usage_error(call):
    with pytest.raises(UsageError):
        call()


@pytest.mark.parametrize("args, needle", [
    (["run", "--checkpoint-every", "x"], "--checkpoint-every must be"),
    (["run", "--shard", "4/3"], "--shard must be I/N"),
    (["run", "--keep", "epoch:x"], "--keep: keep must be"),
    (["run", "--seeds", "0"], "--seeds must be positive"),
    (["run", "--backend", "slurm"], "unknown backend 'slurm'"),
    (["run", "--backend", "ray", "--ddp"], "--ddp trains one run"),
    (["score", "--set", "margin", "/nonexistent"], "--set 'margin': write MEASURE.SETTING=VALUE"),
    (["score", "--set", "nosuch.a=1", "/nonexistent"], "unknown measure 'nosuch'"),
    (["report", "--at", "foo", "/nonexistent"], "--at: keep must be"),
    (["report", "--paper", "table9", "/nonexistent"], "unknown paper comparison 'table9'"),
    (["report", "--correction", "bonferroni", "/nonexistent"], "unknown correction 'bonferroni'"),
    (["show", "a", "b", "c"], "give a run id"),
])
def test_a_bad_option_is_one_line_with_exit_code_2(args, needle, tmp_path):
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s")] if args[0] == "run" else args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit: error: ") and needle in lines[0], result.stderr
    assert result.stdout == "" and not (tmp_path / "s").exists()
