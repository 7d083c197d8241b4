"""ImageNet-layout folders read lazily: JPEGs decoded batch by batch by a pool of threads, never held whole.

The `imagenet` dataset is ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (after the usual valprep),
ROOT being --data-dir itself or --data-dir/imagenet. 1.28M images at 299×299 would take 1.4 TB as float32, so
its inputs are LazyImages: a list of files with the preprocessing to apply, indexed like a tensor (x[index],
x[a:b], len(x), x.shape), each index decoding just those images onto the device. The training loop and the
evaluation use it unchanged.

Preprocessing `imagenet` (or `imagenet:S`): the shorter side resized to round(S·342/299) (bilinear, antialiased),
a centre S×S crop (S = 299 by default), per-channel standardization with the mean and standard deviation of a
seeded sample of the clean train images. Augmentation draws, for every image of the whole minibatch, a random
S×S window anywhere in the resized image and (crop+flip) a horizontal flip, from the run's augmentation stream.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from audit.data.base import BaseData
from audit.errors import UsageError

IMAGENET_SIZE = 299
RESIZE_RATIO = 342 / 299  # Inception v3's evaluation resize: shorter side 342, centre crop 299
STATS_SAMPLE = 512  # clean train images whose pixels give the per-channel mean and std
STATS_SEED = 0
EVAL_BATCH = 256  # images decoded per evaluation batch
MEASURE_BYTES = 8 * 10**9  # measures take the fitted images as one tensor: decoded only up to this size
SUFFIXES = (".jpeg", ".jpg", ".png")
_POOL: ThreadPoolExecutor | None = None


def decode_threads() -> int:
    return int(os.environ.get("AUDIT_DECODE_THREADS", min(16, os.cpu_count() or 1)))


def image_size(preprocess: str) -> int | None:
    """'imagenet' → 299, 'imagenet:S' → S; None for any other preprocessing. Bad sizes are a UsageError."""
    name, _, arg = preprocess.partition(":")
    if name != "imagenet":
        return None
    if not arg:
        return IMAGENET_SIZE
    if not arg.isdigit() or int(arg) < 1:
        raise UsageError(f"preprocessing '{preprocess}': the image size must be a positive integer, e.g. imagenet:299")
    return int(arg)


@dataclass(frozen=True)
class LazyImages:
    """Image files standing in for an (N, 3, S, S) float tensor; indexing decodes and preprocesses them."""
    root: Path
    files: tuple[str, ...]  # relative to root
    size: int | None = None  # None: not preprocessed yet (no shape)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    device: torch.device = torch.device("cpu")
    eval_batch: int = EVAL_BATCH

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.size is None:
            raise UsageError("lazily read images need the imagenet preprocessing before use")
        return (len(self.files), 3, self.size, self.size)

    def to(self, device: torch.device | str) -> LazyImages:
        return replace(self, device=torch.device(device))

    def contiguous(self, **_: object) -> LazyImages:
        return self

    def subset(self, index: np.ndarray) -> LazyImages:
        return replace(self, files=tuple(self.files[i] for i in np.asarray(index)))

    def preprocessed(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> LazyImages:
        return replace(self, size=size, mean=mean, std=std)

    def identity(self) -> bytes:
        """What the fingerprint of these inputs hashes: files, their byte sizes, and the preprocessing."""
        digest = hashlib.sha256(f"{self.size}:{self.mean}:{self.std}".encode())
        for name in self.files:
            digest.update(f"{name}:{(self.root / name).stat().st_size}\n".encode())
        return digest.digest()

    def __getitem__(self, key: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        index = range(len(self.files))[key] if isinstance(key, slice) else np.asarray(torch.as_tensor(key).cpu())
        return self.decode(list(index))

    def decode(self, index: list[int], tops: np.ndarray | None = None, lefts: np.ndarray | None = None,
               flips: np.ndarray | None = None) -> torch.Tensor:
        """The images at `index`, preprocessed: centre crops, or the windows at fractional offsets tops/lefts
        (in [0, 1) of the free room), flipped where `flips`; as one float tensor on the device."""
        size = self.shape[-1]
        global _POOL
        if _POOL is None:
            _POOL = ThreadPoolExecutor(decode_threads())
        jobs = [(self.root / self.files[i], size, None if tops is None else (tops[k], lefts[k]),
                 bool(flips[k]) if flips is not None else False) for k, i in enumerate(index)]
        arrays = list(_POOL.map(_read_one, jobs)) if len(jobs) > 1 else [_read_one(job) for job in jobs]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((batch - mean) / std).contiguous().to(self.device)

    def augmenter(self, crop: bool, flip: bool, generator: torch.Generator):
        """(whole minibatch index, rank, world) ↦ the augmented images of this rank's share, with every random
        draw made for the whole minibatch, so data-parallel ranks see the images single-process training sees."""
        def augmented(whole: torch.Tensor, rank: int = 0, world: int = 1) -> torch.Tensor:
            n = len(whole)
            tops = torch.rand(n, generator=generator) if crop else None
            lefts = torch.rand(n, generator=generator) if crop else None
            flips = (torch.rand(n, generator=generator) < 0.5) if flip else None
            part = slice(rank, None, world)
            index = whole.cpu().numpy()[part].tolist()
            return self.decode(index, None if tops is None else tops[part].numpy(),
                               None if lefts is None else lefts[part].numpy(),
                               None if flips is None else flips[part].numpy())

        return augmented


def _read_one(job: tuple[Path, int, tuple[float, float] | None, bool]) -> np.ndarray:
    """One file → uint8 (S, S, 3): shorter side resized to round(S·342/299), a centre (or given) S×S window."""
    path, size, offset, flip = job
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            short = max(size, round(size * RESIZE_RATIO))
            scale = short / min(width, height)
            new = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(new, Image.BILINEAR, reducing_gap=None)
            free_x, free_y = new[0] - size, new[1] - size
            if offset is None:
                left, top = free_x // 2, free_y // 2
            else:
                top, left = int(offset[0] * (free_y + 1)), int(offset[1] * (free_x + 1))
            image = image.crop((left, top, left + size, top + size))
            if flip:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            return np.asarray(image, dtype=np.uint8)
    except OSError as err:
        raise UsageError(f"cannot read image {path}: {err}") from None


def channel_stats(images: LazyImages, size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the centre crops of a seeded sample of (at most STATS_SAMPLE) images."""
    rng = np.random.default_rng(STATS_SEED)
    count = min(STATS_SAMPLE, len(images))
    chosen = np.sort(rng.choice(len(images), size=count, replace=False))
    raw = images.preprocessed(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).to("cpu")
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, count, EVAL_BATCH):
        batch = raw.decode(chosen[start:start + EVAL_BATCH].tolist()).double()
        total += batch.sum(dim=(0, 2, 3))
        squares += (batch * batch).sum(dim=(0, 2, 3))
    values = count * size * size
    mean = total / values
    std = (squares / values - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def imagenet_root(data_dir: Path) -> Path:
    """--data-dir itself when it holds train/ and val/, else --data-dir/imagenet."""
    for root in (data_dir, data_dir / "imagenet"):
        if (root / "train").is_dir() and (root / "val").is_dir():
            return root
    raise UsageError(f"imagenet not found: neither {data_dir} nor {data_dir / 'imagenet'} holds train/ and val/ "
                     "(train/<wnid>/*.JPEG and val/<wnid>/*.JPEG after the usual valprep); point --data-dir at it")


def _listing(root: Path, split: str, classes: list[str]) -> tuple[list[str], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / split / name
        if not folder.is_dir():
            continue
        found = sorted(entry.name for entry in os.scandir(folder)
                       if entry.is_file() and entry.name.lower().endswith(SUFFIXES))
        if not found and split == "train":
            raise UsageError(f"class folder {folder} holds no images ({', '.join(SUFFIXES)})")
        files += [f"{split}/{name}/{file}" for file in found]
        labels += [label] * len(found)
    return files, labels


def load_imagenet(data_dir: Path):
    """The imagenet dataset as a BaseData whose inputs are LazyImages (classes: sorted train/ subfolders)."""
    root = imagenet_root(data_dir)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UsageError(f"imagenet: {root / 'train'} has no class subfolders")
    extra = sorted(p.name for p in (root / "val").iterdir() if p.is_dir() and p.name not in set(classes))
    if extra:
        raise UsageError(f"imagenet: val class folder '{extra[0]}' has no counterpart in {root / 'train'}")
    train_files, train_labels = _listing(root, "train", classes)
    test_files, test_labels = _listing(root, "val", classes)
    if not test_files:
        raise UsageError(f"imagenet: {root / 'val'} holds no images in class subfolders (run the usual valprep)")
    return BaseData(name="imagenet", x_train=LazyImages(root, tuple(train_files)),
                    y_train=torch.tensor(train_labels, dtype=torch.int64),
                    x_test=LazyImages(root, tuple(test_files)), y_test=torch.tensor(test_labels, dtype=torch.int64),
                    num_classes=len(classes), source=str(root.resolve()))
