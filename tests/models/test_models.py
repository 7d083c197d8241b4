"""The model registry: the paper's exact parameter counts, any input shape, seeded init, and batch-norm folding."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import measures
from audit.errors import UsageError
from audit.models.registry import MODELS, build_model, count_params
from audit.models.zoo import MaxPool2dSame, Shift
from measures.layers import prepare

CONV_MODELS = ("alexnet-small", "inception-small", "inception-small-nobn")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second thread only adds synchronization, which costs 5-10× when the cores are
    shared with other work (the Lanczos matvecs of spectral-operator are thousands of tiny convs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, expected", [
    ("inception-small", 1_649_402), ("inception-small-nobn", 1_649_402), ("alexnet-small", 1_387_786),
    ("mlp-1x512", 1_209_866), ("mlp-3x512", 1_735_178)])
def test_parameter_counts_match_the_paper(name, expected):
    assert count_params(build_model(name, (3, 28, 28), 10)) == expected


def test_inception_v3_is_torchvisions_without_the_aux_head():
    import torchvision

    model = build_model("inception-v3", (3, 299, 299), 1000, seed=0)
    assert count_params(model) == 23_834_568  # torchvision's inception_v3(aux_logits=False), counted directly
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in reference.state_dict().items()]
    small = build_model("inception-v3", (3, 75, 75), 7, dropout=0.2, seed=0).eval()
    assert small.dropout.p == 0.2
    with torch.no_grad():
        assert small(torch.randn(2, 3, 75, 75)).shape == (2, 7)
    with pytest.raises(UsageError, match="at least 75×75"):
        build_model("inception-v3", (3, 74, 80), 10)
    with pytest.raises(UsageError, match="3 channels"):
        build_model("inception-v3", (1, 80, 80), 10)


def test_inception_without_batchnorm_is_the_nobn_architecture():
    plain = build_model("inception-small", (3, 28, 28), 10, batchnorm=False, seed=0)
    nobn = build_model("inception-small-nobn", (3, 28, 28), 10, seed=0)
    assert count_params(plain) == 1_649_402
    assert not any(isinstance(m, (nn.BatchNorm2d, Shift)) for m in plain.modules())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), nobn.state_dict().values()))
    assert list(plain.state_dict()) == list(nobn.state_dict())
    with_bn = build_model("inception-small", (3, 28, 28), 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 19
    assert all(m.bias is None for m in with_bn.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", CONV_MODELS)
@pytest.mark.parametrize("shape, classes", [((1, 28, 28), 100), ((3, 32, 32), 100), ((3, 27, 27), 10),
                                            ((3, 7, 9), 10), ((2, 8, 8), 3)])
def test_conv_models_take_any_image_shape(name, shape, classes):
    model = build_model(name, shape, classes, seed=0).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, classes)


def test_alexnet_flat_size_follows_the_input():
    for size, pooled in ((28, 7), (32, 8), (27, 7), (13, 4), (1, 1)):
        model = build_model("alexnet-small", (3, size, size), 10)
        fc = next(m for m in model.modules() if isinstance(m, nn.Linear))
        assert fc.in_features == 64 * pooled * pooled


def test_too_small_or_flat_inputs_are_refused():
    with pytest.raises(UsageError, match="at least 7"):
        build_model("inception-small", (3, 6, 6), 10)
    with pytest.raises(UsageError, match=r"\(C, H, W\)"):
        build_model("alexnet-small", (784,), 10)


def tf_same_max_pool(x, k=3, s=2):
    """TensorFlow's 'same' max pooling written out: out = ceil(n/s), the odd pad at the bottom/right."""
    h, w = x.shape[-2:]
    out_h, out_w = math.ceil(h / s), math.ceil(w / s)
    top = max((out_h - 1) * s + k - h, 0) // 2
    left = max((out_w - 1) * s + k - w, 0) // 2
    out = torch.empty(*x.shape[:-2], out_h, out_w)
    for i in range(out_h):
        for j in range(out_w):
            r0, c0 = i * s - top, j * s - left
            window = x[..., max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            out[..., i, j] = window.amax(dim=(-2, -1))
    return out


@pytest.mark.parametrize("size", [(5, 5), (6, 6), (7, 8), (28, 28), (1, 2)])
def test_same_max_pool_matches_tensorflow(size):
    x = torch.randn(2, 3, *size)
    assert torch.equal(MaxPool2dSame(3, 2)(x), tf_same_max_pool(x))
    if size[0] % 2 == 1 and size[0] == size[1]:  # odd sizes: the padding is symmetric, as PyTorch's
        assert torch.equal(MaxPool2dSame(3, 2)(x), F.max_pool2d(x, 3, 2, padding=1))


@pytest.mark.parametrize("name", CONV_MODELS + ("mlp-2x16",))
def test_seeded_init_is_deterministic(name):
    a, b = (build_model(name, (3, 12, 12), 10, seed=7) for _ in range(2))
    c = build_model(name, (3, 12, 12), 10, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_dropout_acts_on_the_inputs_of_fully_connected_layers():
    alexnet = build_model("alexnet-small", (3, 28, 28), 10, dropout=0.5)
    inception = build_model("inception-small", (3, 28, 28), 10, dropout=0.5)
    for model, expected in ((alexnet, 3), (inception, 1)):
        children = list(model.children())
        drops = [i for i, m in enumerate(children) if isinstance(m, nn.Dropout)]
        assert len(drops) == expected and all(isinstance(children[i + 1], nn.Linear) for i in drops)
    assert count_params(alexnet) == 1_387_786 and count_params(inception) == 1_649_402
    assert not any(isinstance(m, nn.Dropout) for m in build_model("alexnet-small", (3, 28, 28), 10).modules())


def trained(name, x, y, steps=3):
    """A model after a few SGD steps on (x, y) in train mode, so batch-norm running statistics move."""
    model = build_model(name, tuple(x.shape[1:]), 10, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x * 2 + 0.5), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_folded_copy_computes_the_same_function_with_plain_weights(name, batch):
    x, y = batch
    model = trained(name, x, y)
    if name == "inception-small":
        bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        shift = next(m for m in model.modules() if isinstance(m, Shift))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert shift.bias.abs().max() > 0
    folded = prepare(model, torch.device("cpu"))
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, Shift)) for m in folded.modules())
    holders = [m for m in folded.modules() if list(m.parameters(recurse=False))]
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for m in holders)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-4)
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == (
        name == "inception-small")  # the original is untouched


@pytest.mark.parametrize("name", CONV_MODELS)
def test_measures_on_the_conv_models(name, batch):
    x, y = batch
    model = trained(name, x, y, steps=1)
    results = measures.compute(model, ["l2", "spectral", "spectral-operator", "margin", "path-l2", "params"],
                               train=(x, y))
    values = {name: result.value for name, result in results.items()}
    assert values["path-l2"] is None and ("MaxPool" in results["path-l2"].reason
                                          or "LocalResponseNorm" in results["path-l2"].reason)
    for key in ("l2", "spectral", "spectral-operator", "margin"):
        assert values[key] is not None and math.isfinite(values[key]), key
    assert values["params"] == count_params(model)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_builds_and_maps_images_to_logits(name):
    shape = (3, 75, 75) if name == "inception-v3" else (3, 32, 32)
    model = build_model(name, shape, 7, seed=0).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, 7)
