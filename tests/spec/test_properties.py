"""Property-based tests (hypothesis) of the variants and of spec validation."""

import json
import tomllib

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from audit.data.variants import corrupt_labels, gaussian_images, pixel_permutation, random_pixels
from audit.spec.run import RunSpec
from cli import app


@settings(max_examples=25, deadline=None)
@given(p=st.floats(0.0, 1.0), classes=st.integers(2, 20), seed=st.integers(0, 2**31))
def test_corrupt_changes_about_p_times_one_minus_one_over_c(p, classes, seed):
    labels = torch.randint(0, classes, (20000,), generator=torch.Generator().manual_seed(seed))
    changed = (corrupt_labels(labels, p, classes, seed) != labels).float().mean().item()
    expected = p * (1 - 1 / classes)
    assert abs(changed - expected) <= 4 * (expected * (1 - expected) / 20000) ** 0.5 + 1e-3


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 12), width=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_pixel_permutations_are_permutations(height, width, seed):
    assert sorted(pixel_permutation(height, width, seed).tolist()) == list(range(height * width))
    images = torch.arange(3 * 2 * height * width, dtype=torch.float32).reshape(3, 2, height, width)
    moved = random_pixels(images, seed)
    for i in range(3):
        for c in range(2):
            assert sorted(moved[i, c].flatten().tolist()) == sorted(images[i, c].flatten().tolist())


@settings(max_examples=15, deadline=None)
@given(means=st.lists(st.floats(-3, 3), min_size=1, max_size=3), scale=st.floats(0.1, 4.0),
       seed=st.integers(0, 2**31))
def test_gaussian_images_match_per_channel_moments(means, scale, seed):
    channels = len(means)
    like = torch.randn(3000, channels, 4, 4, generator=torch.Generator().manual_seed(seed)) * scale
    like += torch.tensor(means).view(1, channels, 1, 1)
    noise = gaussian_images(3000, like, seed + 1)
    assert torch.allclose(noise.mean(dim=(0, 2, 3)), like.mean(dim=(0, 2, 3)), atol=0.05 * scale)
    assert torch.allclose(noise.std(dim=(0, 2, 3)), like.std(dim=(0, 2, 3)), rtol=0.05)


values = st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                   st.text(max_size=12), st.none())
fields = st.sampled_from(["dataset", "train_size", "variant", "corrupt", "seed", "model", "optimizer", "lr",
                          "lr_decay", "momentum", "weight_decay", "batch_size", "epochs", "fit_target", "augment",
                          "dropout", "colour"])


def toml_value(value):
    if value is None:
        return None
    if isinstance(value, float) and not np.isfinite(value):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(value, "nan")
    return json.dumps(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.dictionaries(fields, values, max_size=4))
def test_random_specs_are_accepted_and_round_trip_or_rejected_with_exit_2(tmp_path, base):
    lines = ["[base]"] + [f"{key} = {toml_value(v)}" for key, v in base.items() if toml_value(v) is not None]
    lines += ["[grid]", 'variants = ["true", "random-labels"]', "seeds = 1"]
    path = tmp_path / "random.toml"
    path.write_text("\n".join(lines))
    result = CliRunner().invoke(app, ["run", str(path), "--plan", "--json", "--out", str(tmp_path / "store")])
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        for run in json.loads(result.stdout)["runs"]:
            spec = RunSpec.from_dict(run["spec"])
            assert spec.run_id == run["run_id"] and RunSpec.from_dict(spec.to_dict()) == spec
        parsed = tomllib.loads(path.read_text())["base"]
        for key, value in parsed.items():
            if key not in ("variant", "corrupt", "seed"):  # the grid axes set these
                assert run["spec"][key] == value
    else:
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()  # validation writes nothing
