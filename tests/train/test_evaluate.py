"""evaluate_sets (a group's train and test sets in one pass) gives evaluate_chunks' numbers, bitwise."""

import pytest
import torch

from audit.train import evaluate as ev
from audit.train import stacked_mlp
from audit.train.evaluate import evaluate_chunks, evaluate_sets


@pytest.mark.parametrize("runs, sizes, chunk, classes, budget", [
    (3, (1347, 450), 1024, 10, ev.SCORE_BYTES),  # digits-like: a tail chunk in each set
    (5, (1025, 7), 1024, 10, ev.SCORE_BYTES),  # tails of one and seven examples
    (2, (300, 300), 64, 3, ev.SCORE_BYTES),  # under 5 classes: no top-5
    (4, (2000, 999), 256, 10, 4 * 10 * 4 * 300),  # a small score budget: many passes, a set split across them
    (0, (513, 100), 128, 10, ev.SCORE_BYTES),  # one run: labels (examples,), no run axis
])
def test_evaluate_sets_equals_evaluate_chunks_set_by_set(monkeypatch, runs, sizes, chunk, classes, budget):
    monkeypatch.setattr(ev, "SCORE_BYTES", budget)
    generator = torch.Generator().manual_seed(runs + chunk)
    k = max(runs, 1)
    layers = [(torch.randn(k, 32, 20, generator=generator), torch.randn(k, 32, generator=generator)),
              (torch.randn(k, classes, 32, generator=generator), torch.randn(k, classes, generator=generator))]
    lead = (runs,) if runs else ()
    xs = [torch.randn(n, 20, generator=generator) for n in sizes]
    ys = [torch.randint(0, classes, (*lead, n), generator=generator) for n in sizes]

    def forward(x):
        out = stacked_mlp.forward(layers, x if runs else x.unsqueeze(0))
        return out if runs else out[0]

    def reader(x):
        return lambda start, stop: x[start:stop].expand(k, *x[start:stop].shape) if runs else x[start:stop]

    together = evaluate_sets(forward, [(reader(x), y) for x, y in zip(xs, ys)], chunk)
    alone = [evaluate_chunks(forward, reader(x), y, chunk) for x, y in zip(xs, ys)]
    assert together == alone  # floats compared exactly
    assert len(together[0]) == k and (together[0][0][2] is None) == (classes < 5)


@pytest.mark.parametrize("path", ["stacked", "run-by-run"])
def test_a_group_evaluated_in_parts_of_runs_gives_each_run_its_numbers(monkeypatch, path):
    """mlp_eval.evaluate on the CPU cuts a batch of runs into parts whose activations stay in cache: parts of
    any size give every run bitwise the scores of the whole batch at once, shared and gathered inputs alike, on
    the stacked products and on cpu_mlp's run-by-run ones (which agree to float rounding)."""
    from audit.train import cpu_mlp, mlp_eval

    if path == "run-by-run" and not cpu_mlp.available():
        pytest.skip("this PyTorch build has no oneDNN")
    monkeypatch.setattr(cpu_mlp, "EVAL_PER_RUN_MACS", 0 if path == "run-by-run" else 1 << 40)

    generator = torch.Generator().manual_seed(3)
    runs = 7
    layers = [(torch.randn(runs, 32, 20, generator=generator), torch.randn(runs, 32, generator=generator)),
              (torch.randn(runs, 10, 32, generator=generator), torch.randn(runs, 10, generator=generator))]
    x_sets = (torch.randn(3, 700, 20, generator=generator), torch.randn(3, 300, 20, generator=generator))
    y_sets = (torch.randint(0, 10, (runs, 700), generator=generator), torch.randint(0, 10, (runs, 300), generator=generator))
    slot_of = {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 2}  # five runs share inputs, two have their own
    whole = mlp_eval.evaluate(layers, slot_of, x_sets, y_sets)
    monkeypatch.setattr(mlp_eval, "EVAL_PART_BYTES", 2 * mlp_eval.CPU_EVAL_EXAMPLES * 32 * 4)  # parts of two runs
    assert mlp_eval.evaluate(layers, slot_of, x_sets, y_sets) == whole
    monkeypatch.setattr(mlp_eval, "EVAL_PART_BYTES", 1 << 40)  # one part
    assert mlp_eval.evaluate(layers, slot_of, x_sets, y_sets) == whole
    alone = mlp_eval.evaluate(layers, {5: 1}, x_sets, y_sets)  # a lone run, computed as a pair
    assert alone == [whole[5]]
    monkeypatch.setattr(cpu_mlp, "EVAL_PER_RUN_MACS", 1 << 40 if path == "run-by-run" else 0)
    for ours, other in zip(whole, mlp_eval.evaluate(layers, slot_of, x_sets, y_sets)):  # the other path
        for (loss, accuracy, top5), (loss2, accuracy2, top5_2) in zip(ours, other):
            assert abs(loss - loss2) <= 1e-5 * loss and accuracy == accuracy2 and top5 == top5_2


def test_the_evaluation_chunk_follows_the_largest_layer_output():
    """eval_batch_for: EVAL_BATCH while the widest layer's output of a chunk stays within
    EVAL_ACTIVATION_BYTES, else the largest power of two that does (at least 64), decided on the model alone;
    the model's mode and outputs are left as they were."""
    from torch import nn

    from audit.models.registry import build_model

    assert ev.EVAL_ACTIVATION_BYTES == 32 << 20 and ev.EVAL_BATCH == 8192
    mlp = build_model("mlp-1x512", (1, 8, 8), 10, seed=0)
    assert ev.eval_batch_for(mlp, torch.randn(5, 1, 8, 8)) == 8192  # 2 KiB an example: 16,384 fit
    assert ev.eval_batch_for(build_model("mlp-1x4096", (1, 8, 8), 10), torch.randn(1, 1, 8, 8)) == 2048  # 16 KiB
    conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    conv.train()
    assert ev.eval_batch_for(conv, torch.randn(2, 1, 32, 32)) == 1024  # 8×32×32 floats: 32 KiB an example
    assert conv.training
    wide = nn.Sequential(nn.Conv2d(1, 512, 3, padding=1), nn.Flatten(), nn.Linear(512 * 32 * 32, 2))
    assert ev.eval_batch_for(wide, torch.randn(1, 1, 32, 32)) == 64  # 2 MiB an example: the floor
