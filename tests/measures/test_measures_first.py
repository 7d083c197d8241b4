"""The first measures against independent numpy computations on weights read with plain h5py."""

import itertools
import json
import math

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import measures
from audit.data.fitted import build_run_data
from audit.spec.run import RunSpec


def stored_weights(path):
    """Linear weight matrices (biases excluded) of an MLP run file, in layer order, with plain h5py."""
    with h5py.File(path, "r") as f:
        final = {k: f["weights/final"][k][()] for k in f["weights/final"]}
        init = {k: f["weights/init"][k][()] for k in f["weights/init"]}
        spec = json.loads(f.attrs["spec"])
    names = sorted((k for k in final if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
    return [final[k].astype(np.float64) for k in names], [init[k].astype(np.float64) for k in names], final, spec


def numpy_forward(final, x):
    names = sorted({k.split(".")[0] for k in final}, key=int)
    h = x.reshape(len(x), -1).astype(np.float64)
    for i, n in enumerate(names):
        h = h @ final[f"{n}.weight"].T.astype(np.float64) + final[f"{n}.bias"]
        if i < len(names) - 1:
            h = np.maximum(h, 0)
    return h


def test_norm_measures_match_numpy_on_stored_weights(small_store):
    for path in sorted((small_store / "runs").glob("*.h5")):
        ws, w0s, final, spec = stored_weights(path)
        with h5py.File(path, "r") as f:
            cached = {name: f["measures"][name].attrs.get("value") for name in f["measures"]}
        expected = {
            "params": sum(v.size for v in final.values()),
            "l2": math.sqrt(sum((w ** 2).sum() for w in ws)),
            "l2-init": math.sqrt(sum(((w - w0) ** 2).sum() for w, w0 in zip(ws, w0s))),
            "frobenius": sum(math.log(np.linalg.norm(w)) for w in ws),
            "spectral": sum(math.log(np.linalg.svd(w, compute_uv=False)[0]) for w in ws),
        }
        for name, value in expected.items():
            assert cached[name] == pytest.approx(value, rel=1e-6), name


def test_margin_measures_match_an_explicit_loop(small_store):
    path = sorted((small_store / "runs").glob("*.h5"))[0]
    ws, _, final, spec = stored_weights(path)
    data = build_run_data(RunSpec.from_dict(spec))
    with h5py.File(path, "r") as f:
        cached = {name: f["measures"][name].attrs.get("value") for name in f["measures"]}
        assert np.array_equal(f["data/train_labels"][()], data.y_train.numpy())
    logits = numpy_forward(final, data.x_train.numpy())
    labels = data.y_train.numpy()
    margins = []
    for row, label in zip(logits, labels):
        others = max(row[j] for j in range(len(row)) if j != label)
        margins.append(row[label] - others)
    gamma = np.percentile(margins, 10)
    assert cached["margin"] == pytest.approx(gamma, rel=1e-4)
    log_fro = sum(math.log(np.linalg.norm(w)) for w in ws)
    log_spec = sum(math.log(np.linalg.svd(w, compute_uv=False)[0]) for w in ws)
    path_l2 = math.sqrt((np.ones(ws[0].shape[1]) @ (ws[0] ** 2).T @ (ws[1] ** 2).T).sum())
    assert cached["path-l2"] == pytest.approx(path_l2, rel=1e-6)
    assert cached["l2-margin"] == pytest.approx(2 * log_fro - 2 * math.log(gamma), rel=1e-4)
    assert cached["spectral-margin"] == pytest.approx(2 * log_spec - 2 * math.log(gamma), rel=1e-4)
    assert cached["path-l2-margin"] == pytest.approx(2 * math.log(path_l2) - 2 * math.log(gamma), rel=1e-4)


def test_correctly_classified_points_have_positive_margins():
    from measures.margin import margins

    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 2))
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 2.0]])
    y = torch.tensor([0, 1, 0])
    ctx = measures.Context(model=model, x=x, y=y)
    # logits: [2,0,0], [0,3,0], [1,2,0]: margins 2, 3, -1 (the max over the other classes only)
    assert margins(ctx).tolist() == [2.0, 3.0, -1.0]
    assert measures.evaluate(ctx, "margin", {"percentile": 0}).value == -1.0  # negative kept, no abs()
    result = measures.evaluate(ctx, "l2-margin", {"percentile": 0})
    assert result.value is None and "≤ 0" in result.reason


def test_path_l2_equals_explicit_enumeration_of_paths(seed):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    w = [m.weight.detach().double().numpy() for m in model if isinstance(m, nn.Linear)]
    total = 0.0
    for i, j, k, o in itertools.product(range(3), range(4), range(5), range(2)):
        total += w[0][j, i] ** 2 * w[1][k, j] ** 2 * w[2][o, k] ** 2
    got = measures.compute(model, ["path-l2"], train=(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long)))
    assert got["path-l2"].value == pytest.approx(math.sqrt(total), rel=1e-10)


def test_steps_to_fit_is_read_from_the_run(small_store):
    for path in sorted((small_store / "runs").glob("*.h5")):
        with h5py.File(path, "r") as f:
            steps = f.attrs.get("steps_to_fit")
            history_acc = f["history/train_acc"][()]
            history_step = f["history/step"][()]
            assert f["measures/steps-to-fit"].attrs["value"] == steps
        first = int(np.argmax(history_acc >= 1.0))
        assert steps == history_step[first]


def test_unknown_measure_suggests_the_closest_name():
    from audit.errors import UsageError

    with pytest.raises(UsageError, match="did you mean 'spectral'"):
        measures.get("spectrl")
