import torch

from audit.data.fitted import build_run_data
from audit.data.variants import (
    corrupt_labels,
    gaussian_images,
    permute_pixels,
    pixel_permutation,
    random_pixels,
)
from audit.spec.run import RunSpec


def test_corrupt_changes_about_p_times_one_minus_one_over_c_of_labels():
    labels = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(1))
    for p in (0.2, 0.5, 1.0):
        changed = (corrupt_labels(labels, p, 10, seed=7) != labels).float().mean().item()
        assert abs(changed - p * 0.9) < 0.015
    assert torch.equal(corrupt_labels(labels, 0.3, 10, 5), corrupt_labels(labels, 0.3, 10, 5))


def test_shuffled_pixels_moves_channels_together_and_is_a_permutation():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    perm = pixel_permutation(4, 4, seed=3)
    assert sorted(perm.tolist()) == list(range(16))
    moved = permute_pixels(images, perm)
    for c in range(3):
        assert torch.equal(moved[:, c].reshape(2, 16), images[:, c].reshape(2, 16)[:, perm])


def test_random_pixels_permutes_each_image_differently():
    images = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(5, 2, 1, 1)
    images[:, 1] += 100
    moved = random_pixels(images, seed=0)
    for i in range(5):
        assert sorted(moved[i, 0].flatten().tolist()) == list(range(16))
        assert torch.equal(moved[i, 1], moved[i, 0] + 100)  # a pixel's channels move together
    assert len({tuple(moved[i, 0].flatten().tolist()) for i in range(5)}) == 5


def test_gaussian_matches_per_channel_moments():
    like = torch.rand(4000, 3, 5, 5) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    noise = gaussian_images(4000, like, seed=0)
    assert torch.allclose(noise.mean(dim=(0, 2, 3)), like.mean(dim=(0, 2, 3)), atol=0.02)
    assert torch.allclose(noise.std(dim=(0, 2, 3)), like.std(dim=(0, 2, 3)), rtol=0.02)


def test_variants_of_a_run_are_pure_functions_of_the_spec():
    for variant, p in (("corrupt", 0.4), ("random-pixels", None), ("gaussian", None), ("shuffled-pixels", None)):
        spec = RunSpec(variant=variant, corrupt=p, seed=2)
        a, b = build_run_data(spec), build_run_data(spec)
        assert a.record["fingerprint_train"] == b.record["fingerprint_train"]
        assert torch.equal(a.x_test, b.x_test)
        other = build_run_data(RunSpec(variant=variant, corrupt=p, seed=3))
        assert a.record["fingerprint_train"] != other.record["fingerprint_train"]


def test_test_labels_stay_clean_unless_asked():
    clean = build_run_data(RunSpec())
    noisy = build_run_data(RunSpec(variant="random-labels", corrupt=1.0))
    assert torch.equal(noisy.y_test, clean.y_test)
    assert not torch.equal(noisy.y_train, clean.y_train)
    both = build_run_data(RunSpec(variant="random-labels", corrupt=1.0, corrupt_test=True))
    assert not torch.equal(both.y_test, clean.y_test)
    assert "test_labels" in both.record


def test_input_variants_keep_labels_and_change_test_images():
    clean = build_run_data(RunSpec())
    for variant in ("shuffled-pixels", "random-pixels", "gaussian"):
        data = build_run_data(RunSpec(variant=variant, corrupt=None))
        assert torch.equal(data.y_train, clean.y_train)
        assert not torch.equal(data.x_test, clean.x_test)
