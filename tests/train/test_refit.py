"""Refits for the Rademacher proxy trained together equal each refit trained alone, and the sequential loop."""

import dataclasses

import pytest
import torch

from audit.spec.run import RunSpec
from audit.train import refit
from audit.train.loop import fit_labels


def jobs(count: int, n: int = 120):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=generator)
    return [(x, torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed)), 2, 100 + seed)
            for seed in range(count)]


SPEC = RunSpec(model="mlp-1x64", epochs=4, lr=0.05, batch_size=32)


def no_sequential_refit(*args):
    raise AssertionError("a stackable refit went through the sequential loop")


def test_refits_together_equal_each_alone_bitwise(monkeypatch):
    assert SPEC.batchnorm  # the default, which adds no layer to an MLP: it stacks
    monkeypatch.setattr(refit, "fit_labels", no_sequential_refit)
    group = jobs(4)
    together = refit.fit_labels_group(SPEC, group)
    assert together == [refit.fit_labels_group(SPEC, [job])[0] for job in group]
    assert refit.fit_labels_group(SPEC, group[::-1]) == together[::-1]
    assert len(set(together)) > 1 and all(0.4 < a < 1.0 for a in together)  # 4 epochs: not fitted, not chance


def test_stacked_refits_follow_the_sequential_loop(monkeypatch):
    group = jobs(3)
    with monkeypatch.context() as patch:
        patch.setattr(refit, "fit_labels", no_sequential_refit)
        stacked = refit.fit_labels_group(SPEC, group)
    sequential = [fit_labels(SPEC, *job) for job in group]
    assert stacked == pytest.approx(sequential, abs=2 / 120)  # the same SGD up to float rounding


def test_refits_stop_each_at_its_own_epoch():
    spec = dataclasses.replace(SPEC, epochs=300, fit_target=0.9)
    accuracies = refit.fit_labels_group(spec, jobs(3))
    assert all(a >= 0.9 for a in accuracies)


@pytest.mark.parametrize("change", [dict(optimizer="adam", lr=0.01), dict(dropout=0.2)])
def test_a_procedure_that_does_not_stack_refits_one_by_one(change):
    spec = dataclasses.replace(SPEC, **change)
    group = jobs(2)
    assert refit.fit_labels_group(spec, group) == [fit_labels(spec, *job) for job in group]
