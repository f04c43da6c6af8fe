"""Per-sample random numbers: sample i's draws depend only on (seed, index[i], stream), never on the batch.

A randomized attack that drew its noise from one generator per batch would give a sample different
noise depending on which other samples share its batch, so sharding the data (graphc.distributed,
or just a different batch_size) would change the results. Here every draw is a pure function of
the attack's seed, the sample's *global* index, a stream label (restart, iteration, ...) and the
position of the number within the draw: a counter-based generator in the style of JAX's PRNG keys,
built from the SplitMix64 output function (Steele, Lea & Flood 2014), a bijection on 64-bit words
with full avalanche. It is vectorised over samples, so Square's thousands of per-iteration draws for
hundreds of samples cost one NumPy expression each, not one Generator object per sample. Attacks
that draw once per sample (PGD's random start) use `generators`: np.random.default_rng([seed, index[i]]).

    >>> u = uniform(0, np.arange(5), (7,), 3)
    >>> u.shape, bool(np.all((0 <= u) & (u < 1)))
    ((5, 3), True)
    >>> bool(np.array_equal(uniform(0, np.array([3, 4]), (7,), 3), u[3:]))   # any chunking, same numbers
    True
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["uniform", "normal", "integers", "signs", "default_index", "check_seed", "generators"]

_U64 = np.uint64
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix_int(z: int) -> int:
    """SplitMix64's finaliser on one Python int (exact mod 2^64)."""
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _mix(z: np.ndarray) -> np.ndarray:
    """The same finaliser on a uint64 array (array arithmetic wraps mod 2^64 without warnings)."""
    z = (z ^ (z >> _U64(30))) * _U64(_M1)
    z = (z ^ (z >> _U64(27))) * _U64(_M2)
    return z ^ (z >> _U64(31))


def _keys(seed: int, index: np.ndarray, stream: Sequence[int]) -> np.ndarray:
    """One 64-bit key per sample: a hash chain over seed and stream labels, then the sample's index."""
    key = _mix_int((int(seed) + _GOLDEN) & _MASK)
    for s in stream:
        key = _mix_int(key ^ _mix_int((int(s) + _GOLDEN) & _MASK))
    idx = np.asarray(index, np.int64).reshape(-1).view(_U64)
    return _mix(_mix(idx + _U64(_GOLDEN)) ^ _U64(key))


def _bits(seed: int, index: np.ndarray, stream: Sequence[int], n: int) -> np.ndarray:
    counters = np.arange(1, n + 1, dtype=_U64) * _U64(_GOLDEN)
    return _mix(_keys(seed, index, stream)[:, None] + counters[None, :])


def uniform(seed: int, index: np.ndarray, stream: Sequence[int], n: int) -> np.ndarray:
    """(len(index), n) float64 numbers uniform in [0, 1), 53 random bits each."""
    return (_bits(seed, index, stream, n) >> _U64(11)).astype(np.float64) * 2.0 ** -53


def normal(seed: int, index: np.ndarray, stream: Sequence[int], n: int) -> np.ndarray:
    """(len(index), n) standard normal numbers (Box–Muller on two uniform streams)."""
    u = uniform(seed, index, tuple(stream) + (0x4E4F524D,), 2 * n)
    r = np.sqrt(-2.0 * np.log1p(-u[:, :n]))  # 1 − u ∈ (0, 1]: never log(0)
    return r * np.cos(2.0 * np.pi * u[:, n:])


def integers(seed: int, index: np.ndarray, stream: Sequence[int], n: int, high: np.ndarray) -> np.ndarray:
    """(len(index), n) integers, column j uniform in [0, high[j]] (inclusive)."""
    high = np.asarray(high, np.int64)
    return np.minimum((uniform(seed, index, stream, n) * (high + 1)).astype(np.int64), high)


def signs(seed: int, index: np.ndarray, stream: Sequence[int], n: int) -> np.ndarray:
    """(len(index), n) values ±1.0 with probability 1/2 each."""
    return np.where(uniform(seed, index, stream, n) < 0.5, -1.0, 1.0)


def default_index(index, n: int) -> np.ndarray:
    """The samples' global indices: np.arange(n) unless given (then checked: one non-negative integer
    per example)."""
    from ..ir.errors import GraphError
    if index is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(index)
    if idx.ndim != 1 or len(idx) != n or idx.dtype.kind not in "iu":
        raise GraphError(f"index must hold one integer per example (the rows' global indices, {n} of them), got "
                         f"a {idx.dtype} array of shape {idx.shape}")
    if len(idx) and idx.min() < 0:
        raise GraphError(f"index must be non-negative (the rows' global indices), got {int(idx.min())}")
    return idx.astype(np.int64)


def check_seed(seed) -> int:
    from ..ir.errors import GraphError
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GraphError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def generators(seed: int, index: np.ndarray) -> list:
    """One NumPy Generator per sample, np.random.default_rng([seed, index[i]]): for one-shot draws such
    as PGD's random start (vectorised streams above are for attacks that draw every iteration)."""
    return [np.random.default_rng([seed, int(i)]) for i in index]
