"""Base datasets and where they come from: digits (built in), idx files, torchvision's files, image folders."""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from audit.data.base import BaseData
from audit.data.imagenet import load_imagenet
from audit.errors import UsageError
from audit.registry import Registry

DIGITS_SPLIT_SEED = 0

DIGITS_TEST_SIZE = 450

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")



FOLDER_PREFIX = "folder:"

FOLDER_TEST_FRACTION = 0.25  # test share of a folder without train/ and test/, split like digits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def default_data_dir() -> Path:
    return Path(os.environ.get("AUDIT_DATA_DIR", Path.home() / ".cache" / "audit" / "data"))


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST's format), plain or gzip-compressed, without writing anything."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UsageError(f"{path} is not an unsigned-byte idx file; replace it with the original download")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _find_idx(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load_idx_dataset(name: str, data_dir: Path, download: bool) -> BaseData:
    sub = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    folders = [data_dir / sub / "raw"]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_DIR)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(folders, stem) for stem in stems]
    if None in paths and download:
        import torchvision  # slow to import; only for Inception v3 and the torchvision datasets

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        try:
            cls(root=str(data_dir), train=True, download=True)
            cls(root=str(data_dir), train=False, download=True)
        except Exception as err:  # network errors come in many types
            raise UsageError(f"could not download {name} into {data_dir}: {err}") from None
        paths = [_find_idx(folders, stem) for stem in stems]
    if None in paths:
        looked = " and ".join(str(f) for f in folders)
        hint = " or `apt install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
        raise UsageError(f"{name} not found: looked in {looked}; rerun with --download on a networked "
                         f"machine{hint}, or point --data-dir at a folder holding {sub}/raw/")
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UsageError(f"{name} {part} files in {paths[0].parent} have shapes {x.shape} and {y.shape}; "
                             "expected (N, H, W) images and N labels")
    return BaseData(
        name=name,
        x_train=torch.from_numpy(x_train.astype(np.float32) / 255.0).unsqueeze(1),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(x_test.astype(np.float32) / 255.0).unsqueeze(1),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=10,
        source=str(paths[0].parent),
    )


def _load_digits() -> BaseData:
    from sklearn.datasets import load_digits  # slow to import (scikit-learn); only for digits
    from sklearn.model_selection import train_test_split  # slow to import (scikit-learn)

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    index = np.arange(len(images))
    train_index, test_index = train_test_split(
        index, test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    train_index, test_index = np.sort(train_index), np.sort(test_index)
    return BaseData(
        name="digits",
        x_train=torch.from_numpy(images[train_index]).unsqueeze(1),
        y_train=torch.from_numpy(digits.target[train_index].astype(np.int64)),
        x_test=torch.from_numpy(images[test_index]).unsqueeze(1),
        y_test=torch.from_numpy(digits.target[test_index].astype(np.int64)),
        num_classes=10,
        source="sklearn.datasets.load_digits",
        test_index=test_index,
    )


def _torchvision_files(name: str, data_dir: Path) -> list[tuple[Path, str]]:
    """(path, md5) of every file torchvision reads for this dataset, as its class lists them."""
    import torchvision.datasets as tvd  # slow to import; only for the torchvision datasets

    if name == "svhn":
        return [(data_dir / tvd.SVHN.split_list[split][1], tvd.SVHN.split_list[split][2])
                for split in ("train", "test")]
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    folder = data_dir / cls.base_folder
    return ([(folder / file, md5) for file, md5 in cls.train_list + cls.test_list]
            + [(folder / cls.meta["filename"], cls.meta["md5"])])


def _torchvision_problem(name: str, data_dir: Path) -> UsageError:
    """The one-line error for files torchvision refused: the first missing file, else the first failing its MD5."""
    from torchvision.datasets.utils import check_integrity  # slow to import (torchvision)

    files = _torchvision_files(name, data_dir)
    where = files[0][0].parent
    missing = [path for path, _ in files if not path.is_file()]
    if missing:
        holding = f"{where.name}/" if name != "svhn" else "train_32x32.mat and test_32x32.mat"
        return UsageError(f"{name} not found: looked in {where} (no {missing[0].name}); rerun with --download on a "
                          f"networked machine, or point --data-dir at a folder holding {holding}")
    bad = next((path for path, md5 in files if not check_integrity(str(path), md5)), files[0][0])
    return UsageError(f"{name} file {bad} is corrupted or not the original (its MD5 differs from torchvision's); "
                      "delete it and rerun with --download on a networked machine")


def _load_torchvision_dataset(name: str, data_dir: Path, download: bool) -> BaseData:
    """CIFAR-10, CIFAR-100 or SVHN through torchvision, which checks every file against its known MD5."""
    import torchvision.datasets as tvd  # slow to import; only for the torchvision datasets

    def read(part: str) -> tuple[np.ndarray, np.ndarray]:
        if name == "svhn":
            dataset = tvd.SVHN(root=str(data_dir), split=part, download=download)
            return dataset.data, np.asarray(dataset.labels)  # data already (N, C, H, W); labels 0..9
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        dataset = cls(root=str(data_dir), train=part == "train", download=download)
        return dataset.data.transpose(0, 3, 1, 2), np.asarray(dataset.targets)  # data (N, H, W, C)

    try:
        (x_train, y_train), (x_test, y_test) = read("train"), read("test")
    except RuntimeError as err:
        if "not found or corrupted" not in str(err):
            raise
        raise _torchvision_problem(name, data_dir) from None
    except Exception as err:  # network errors come in many types
        if not download:
            raise
        raise UsageError(f"could not download {name} into {data_dir}: {err}") from None
    return BaseData(
        name=name,
        x_train=_as_float_images(x_train),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=_as_float_images(x_test),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=100 if name == "cifar100" else 10,
        source=str(_torchvision_files(name, data_dir)[0][0].parent),
    )


def _as_float_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W), possibly a strided view, → contiguous float32 in [0, 1] without a float64 copy."""
    out = torch.empty(images.shape, dtype=torch.float32)
    return out.copy_(torch.from_numpy(images)).div_(255.0)


def _read_image(path: Path) -> np.ndarray:
    """An image as uint8 (C, H, W): grayscale stays one channel, everything else becomes RGB."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
            array = np.asarray(image, dtype=np.uint8)
    except OSError as err:
        raise UsageError(f"cannot read image {path}: {err}") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(root: Path, classes: list[str], every_class: bool) -> list[tuple[Path, int]]:
    """(file, label) of the images under root/<class>/, labelled by the class's index in `classes`."""
    found = []
    for label, class_name in enumerate(classes):
        folder = root / class_name
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
            if folder.is_dir() else []
        if not files and every_class:
            raise UsageError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); every class "
                             "needs at least one")
        found += [(file, label) for file in files]
    return found


def _read_images(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, C, H, W) and their labels; every image must have the first one's shape."""
    images = []
    for file, _ in files:
        image = _read_image(file)
        if images and image.shape != images[0].shape:
            shape, expected = ("×".join(map(str, s)) for s in (image.shape, images[0].shape))
            raise UsageError(f"image {file} is {shape} (channels×height×width) but {files[0][0]} is {expected}; "
                             "all images of a folder dataset must share one size and channel count")
        images.append(image)
    return np.stack(images), np.asarray([label for _, label in files], dtype=np.int64)


def _load_folder(name: str) -> BaseData:
    """folder:PATH: PATH/<class>/* (split 75/25, stratified, seed 0, like digits) or PATH/train/<class>/* and
    PATH/test/<class>/*; classes are labelled in sorted subfolder order (of train/ when split)."""
    root = Path(name[len(FOLDER_PREFIX):]).expanduser()
    if not root.is_dir():
        raise UsageError(f"dataset {name}: {root} is not a folder; give folder:PATH with one subfolder of images "
                         "per class")
    subfolders = _class_folders(root)
    test_index = None
    if subfolders in (["test", "train"], ["train", "val"]):  # val/ is ImageNet's name for the test split
        test = subfolders[0] if subfolders[0] != "train" else subfolders[1]
        classes = _class_folders(root / "train")
        extra = sorted(set(_class_folders(root / test)) - set(classes))
        if extra:
            raise UsageError(f"dataset {name}: {test} class folder '{extra[0]}' has no counterpart in "
                             f"{root / 'train'}")
        train_files = _image_files(root / "train", classes, every_class=True)
        x, y = _read_images(train_files + _image_files(root / test, classes, every_class=False))
        if len(y) == len(train_files):
            raise UsageError(f"dataset {name}: {root / test} holds no images in class subfolders")
        x_train, y_train, x_test, y_test = x[:len(train_files)], y[:len(train_files)], x[len(train_files):], \
            y[len(train_files):]
    else:
        classes = subfolders
        if not classes:
            raise UsageError(f"dataset {name}: {root} has no subfolders; put each class's images in its own "
                             "subfolder")
        x, y = _read_images(_image_files(root, classes, every_class=True))
        from sklearn.model_selection import train_test_split  # slow to import (scikit-learn)

        try:
            train_index, test_index = train_test_split(np.arange(len(y)), test_size=FOLDER_TEST_FRACTION,
                                                       stratify=y, random_state=DIGITS_SPLIT_SEED)
        except ValueError as err:
            raise UsageError(f"dataset {name}: cannot split {len(y)} images of {len(classes)} classes into train "
                             f"and test ({err}); add images or give train/ and test/ subfolders") from None
        train_index, test_index = np.sort(train_index), np.sort(test_index)
        x_train, y_train, x_test, y_test = x[train_index], y[train_index], x[test_index], y[test_index]
    return BaseData(
        name=name,
        x_train=_as_float_images(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=_as_float_images(x_test),
        y_test=torch.from_numpy(y_test),
        num_classes=len(classes),
        source=str(root.resolve()),
        test_index=test_index,
    )


@functools.lru_cache(maxsize=4)
def load_base(name: str, data_dir: Path | None = None, download: bool = False) -> BaseData:
    """Load a base dataset (once per process for the built-in ones)."""
    return DATASETS.get(name)(Path(data_dir or default_data_dir()), download)


def _folder_loader(name: str):
    path = name[len(FOLDER_PREFIX):] if name.startswith(FOLDER_PREFIX) else ""
    return (lambda data_dir, download: _load_folder(name)) if path.strip() else None


DATASETS = Registry("dataset")
DATASETS.add("digits", lambda data_dir, download: _load_digits(),
             description="scikit-learn's 8x8 digits, 1,797 images, built in (1,347 train / 450 test, stratified split)")
for _name, _text in (("mnist", "MNIST 28x28, 60,000 + 10,000 (torchvision layout under --data-dir; --download to fetch)"),
                     ("fashion-mnist", "Fashion-MNIST 28x28, 60,000 + 10,000 (--data-dir, or Debian's "
                                       "dataset-fashion-mnist)")):
    DATASETS.add(_name, functools.partial(_load_idx_dataset, _name), description=_text)
for _name, _text in (
        ("cifar10", "CIFAR-10 32x32 RGB, 50,000 + 10,000 (torchvision layout under --data-dir; --download to fetch)"),
        ("cifar100", "CIFAR-100 32x32 RGB, fine labels, 50,000 + 10,000 (torchvision layout; --download to fetch)"),
        ("svhn", "SVHN 32x32 RGB, 73,257 + 26,032, digit 0 labelled 0 (torchvision layout; --download to fetch)")):
    DATASETS.add(_name, functools.partial(_load_torchvision_dataset, _name), description=_text)
DATASETS.add("imagenet", lambda data_dir, download: load_imagenet(data_dir),
             description="ImageNet layout under --data-dir (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG), decoded lazily; "
                         "preprocess imagenet[:SIZE]")
DATASETS.pattern("folder:PATH", _folder_loader, description="your images: one subfolder per class (or train/ and "
                 "test/ or val/ holding them), one size for all")
