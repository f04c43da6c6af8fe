"""Softmax family and losses: softmax, log_softmax, softmax cross-entropy, BCE, MSE, dropout."""
from __future__ import annotations

from typing import Union

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor, as_tensor
from . import Domain, OpDef, apply, register
from .core import cast, normalize_axes, size_of
from .elementwise import _floatify, activation_grad, np_sigmoid, sigmoid
from .reduce import sum

__all__ = ["softmax", "log_softmax", "softmax_grad", "softmax_cross_entropy", "binary_cross_entropy",
           "mse", "dropout", "one_hot", "nll_loss", "binary_cross_entropy_probs"]


# -- softmax / log_softmax ------------------------------------------------------------------
def _softmax_forward(x, axis, log):
    m = np.max(x, axis=axis, keepdims=True) if x.size else np.zeros_like(x)
    z = x - m
    e = np.exp(z)
    s = np.sum(e, axis=axis, keepdims=True)
    return z - np.log(s) if log else e / s


def _softmax_vjp(g, out, x, axis, log):
    return [softmax_grad(out, g, axis, log)]


def _softmax_grad_forward(y, g, axis, log):
    if log:
        return g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)
    return y * (g - np.sum(g * y, axis=axis, keepdims=True))


def _softmax_grad_vjp(gg, out, y, g, axis, log):
    # softmax: dx = J g with J = diag(y) - y yᵀ symmetric, so the g-part is the same op again.
    if log:
        e = apply("exp", [y])
        return [-gg * e * sum(g, axis, keepdims=True), gg - sum(gg * e, axis, keepdims=True)]
    s = sum(g * y, axis, keepdims=True)
    return [gg * g - gg * s - g * sum(gg * y, axis, keepdims=True), softmax_grad(y, gg, axis, log)]


def _same_float(inputs, axis, log):
    x = inputs[0]
    if x.dtype.kind != "f":
        raise GraphError(f"needs floating input, got {x.dtype}")
    normalize_axes(axis, x.ndim)
    return x.shape, x.dtype


register(OpDef("softmax", infer=_same_float, forward=_softmax_forward, vjp=_softmax_vjp, arity=1, inplace=True,
               lowering="softmax", fuzz="softmax"))
register(OpDef("softmax_grad", infer=lambda i, axis, log: (i[0].shape, i[0].dtype), forward=_softmax_grad_forward,
               vjp=_softmax_grad_vjp, arity=2, lowering="softmax", fuzz="softmax_grad", made_by="vjp"))


def softmax(x, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `axis`, computed stably (max subtracted first)."""
    x = _floatify(x)
    return apply("softmax", [x], axis=normalize_axes(axis, x.ndim)[0], log=False)


def log_softmax(x, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along `axis`."""
    x = _floatify(x)
    return apply("softmax", [x], axis=normalize_axes(axis, x.ndim)[0], log=True)


def softmax_grad(y: Tensor, g: Tensor, axis: int, log: bool) -> Tensor:
    """VJP of (log_)softmax from its output y: y(g - Σgy), or g - exp(y)Σg for log_softmax."""
    return apply("softmax_grad", [y, g], axis=axis, log=bool(log))


# -- one-hot --------------------------------------------------------------------------------
def _check_labels(labels, classes, what="labels"):
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise GraphError(f"{what} must lie in [0, {classes}); found {bad}")


def _one_hot_forward(labels, classes, dtype):
    _check_labels(labels, classes)
    out = np.zeros(labels.shape + (classes,), dtype=dtype)
    np.put_along_axis(out, labels[..., None], 1, axis=-1)
    return out


register(OpDef("one_hot", infer=lambda i, classes, dtype: (i[0].shape + (classes,), np.dtype(dtype)),
               forward=_one_hot_forward, differentiable=False, arity=1, fuzz="one_hot"))


def one_hot(labels, classes: int, dtype="float32") -> Tensor:
    labels = as_tensor(labels)
    if labels.dtype.kind not in "iu":
        raise GraphError(f"one_hot needs integer labels, got {labels.dtype}")
    return apply("one_hot", [labels], classes=int(classes), dtype=np.dtype(dtype))


# -- softmax cross-entropy (fused) -----------------------------------------------------------
def _sce_infer(inputs):
    logits, labels = inputs[:2]
    if logits.ndim != 2 or logits.dtype.kind != "f":
        raise GraphError(f"logits must be a 2-d float (batch, classes) tensor, got {logits.ndim}-d {logits.dtype}")
    if labels.dtype.kind not in "iu":
        raise GraphError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise GraphError(f"labels must be 1-d (batch,), got shape {labels.shape}")
    n1, n2 = logits.shape[0], labels.shape[0]
    if n1 is not None and n2 is not None and n1 != n2:
        raise GraphError(f"batch sizes differ: logits {n1}, labels {n2}")
    return (), logits.dtype


def _lse(z):
    m = np.max(z, axis=1, keepdims=True)
    return (m + np.log(np.sum(np.exp(z - m), axis=1, keepdims=True)))[:, 0]


def _sce_forward(logits, labels):
    n, c = logits.shape
    _check_labels(labels, c)
    if n == 0:
        return np.asarray(np.nan, logits.dtype)
    picked = np.take_along_axis(logits, labels[:, None].astype(np.intp), axis=1)[:, 0]
    return np.asarray(np.mean(_lse(logits) - picked), dtype=logits.dtype)


def _sce_grad_forward(logits, labels, g):
    n, c = logits.shape
    _check_labels(labels, c)
    p = _softmax_forward(logits, 1, False) if n else logits.copy()
    np.put_along_axis(p, labels[:, None].astype(np.intp), np.take_along_axis(p, labels[:, None], 1) - 1, axis=1)
    return p * (g / max(n, 1))


def _sce_grad_vjp(gg, out, logits, labels, g):
    n = size_of(logits, 0)
    p = softmax(logits, axis=1)
    onehot = one_hot(labels, logits.shape[1], logits.dtype) if logits.shape[1] is not None else None
    if onehot is None:
        raise GraphError("second derivative of softmax_cross_entropy needs a known number of classes")
    return [softmax_grad(p, gg, 1, False) * (g / n), None, sum(gg * (p - onehot)) / n]


register(OpDef("softmax_cross_entropy", infer=_sce_infer, forward=_sce_forward,
               vjp=lambda g, out, logits, labels: [apply("softmax_cross_entropy_grad", [logits, labels, g]), None],
               arity=2, lowering="sce", fuzz="classification"))
register(OpDef("softmax_cross_entropy_grad", infer=lambda i: (i[0].shape, i[0].dtype), forward=_sce_grad_forward,
               vjp=_sce_grad_vjp, arity=3, lowering="sce", fuzz="classification", made_by="vjp"))


def softmax_cross_entropy(logits, labels) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label]; logits (N, C), labels (N,) ints in [0, C).

    Computed with log-sum-exp in one fused op; its gradient is (softmax - onehot) / N."""
    logits = _floatify(logits)
    return apply("softmax_cross_entropy", [logits, as_tensor(labels)])


# -- binary cross-entropy from logits ----------------------------------------------------------
def _bce_infer(inputs):
    z, t = inputs
    if z.shape != t.shape and not (None in z.shape or None in t.shape):
        raise GraphError(f"logits {z.shape} and targets {t.shape} must have the same shape")
    if len(z.shape) != len(t.shape):
        raise GraphError(f"logits {z.shape} and targets {t.shape} must have the same shape")
    return (), z.dtype


def _bce_forward(z, t):
    if z.shape != t.shape:
        raise GraphError(f"logits {z.shape} and targets {t.shape} must have the same shape")
    if z.size == 0:
        return np.asarray(np.nan, z.dtype)
    terms = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))  # never overflows
    return np.asarray(np.mean(terms), dtype=z.dtype)


def _bce_vjp(g, out, z, t):
    scale = g / size_of(z)
    if t.dtype == z.dtype:
        return [apply("bce_logits_grad", [z, t, scale]), -z * scale]
    # targets of another dtype (the op accepts them; binary_cross_entropy() casts them first):
    # the gradient kernel reads them in the logits' dtype, and their own gradient is in theirs
    return [apply("bce_logits_grad", [z, cast(t, z.dtype), scale]), cast(-z * scale, t.dtype)]


def _bce_grad_infer(inputs):
    z, t, scale = inputs
    _bce_infer([z, t])
    if scale.shape != () or scale.dtype != z.dtype or t.dtype != z.dtype:
        raise GraphError(f"bce_logits_grad needs targets of the logits' dtype {z.dtype} and a scalar scale of "
                         f"it, got {t.dtype} and {scale.dtype}{list(scale.shape)}")
    return z.shape, z.dtype


def _bce_grad_forward(z, t, scale):
    if z.shape != t.shape:
        raise GraphError(f"logits {z.shape} and targets {t.shape} must have the same shape")
    return (np_sigmoid(z) - t) * scale


def _bce_grad_vjp(gg, out, z, t, scale):
    p = sigmoid(z)
    return [activation_grad(p, gg, "sigmoid") * scale, -gg * scale, sum(gg * (p - t))]


register(OpDef("binary_cross_entropy", infer=_bce_infer, forward=_bce_forward, vjp=_bce_vjp, arity=2, lowering="bce",
               fuzz="bce", domain=(Domain(), Domain("unit", low=0.0, high=1.0))))
register(OpDef("bce_logits_grad", infer=_bce_grad_infer, forward=_bce_grad_forward, vjp=_bce_grad_vjp, arity=3,
               inplace=True, lowering="bce", fuzz="bce", made_by="vjp",
               domain=(Domain(), Domain("unit", low=0.0, high=1.0), Domain())))


def binary_cross_entropy(logits, targets) -> Tensor:
    """Mean of -[t log σ(z) + (1 - t) log(1 - σ(z))], from logits z, computed stably.

    This is the negative log-likelihood of logistic regression; its gradient is (σ(z) - t) / N."""
    z = _floatify(logits)
    t = as_tensor(targets, like=z)
    if t.dtype != z.dtype:
        t = cast(t, z.dtype)
    return apply("binary_cross_entropy", [z, t])


def mse(pred, target) -> Tensor:
    """1/(2N) Σ_n ‖y_n − f_n‖², N = the batch size (first axis), as in the course material.

    Note the 1/2 and the per-sample (not per-element) mean: for (N, D) outputs this is D/2 times
    numpy's mean((y - f)**2)."""
    pred = _floatify(pred)
    target = as_tensor(target, like=pred)
    if target.dtype != pred.dtype:
        target = cast(target, pred.dtype)
    d = pred - target
    if d.ndim == 0:
        return d * d * 0.5
    return sum(d * d) / (2 * size_of(d, 0))


# -- dropout ----------------------------------------------------------------------------------
def _dropout_forward(x, *seed_arr, p, seed):
    if seed_arr:
        seed = int(np.asarray(seed_arr[0]).reshape(-1)[0]) if np.asarray(seed_arr[0]).size else 0
    keep = np.random.default_rng(seed).random(x.shape) >= p
    return x * keep.astype(x.dtype) * np.asarray(1.0 / (1.0 - p), dtype=x.dtype)


def _dropout_vjp(g, out, x, *seed_t, p, seed):
    return [apply("dropout", [g, *seed_t], p=p, seed=seed)] + [None] * len(seed_t)


def _dropout_infer(inputs, p, seed):
    x = inputs[0]
    if x.dtype.kind != "f":
        raise GraphError(f"dropout needs floating input, got {x.dtype}")
    if len(inputs) == 2 and (inputs[1].dtype.kind not in "iu" or inputs[1].ndim > 1):
        raise GraphError(f"the seed tensor must be an integer scalar, got {inputs[1].dtype} {inputs[1].shape}")
    return x.shape, x.dtype


register(OpDef("dropout", infer=_dropout_infer, forward=_dropout_forward, vjp=_dropout_vjp, fuzz="dropout"))


def dropout(x, p: float = 0.5, seed: Union[int, Tensor, None] = 0) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    The mask is a deterministic function of (seed, shape): the same seed gives the same mask, and
    the gradient uses the same mask. For a fresh mask per training step, pass an integer scalar
    placeholder as `seed` and feed a new value each call."""
    x = _floatify(x)
    if not 0.0 <= float(p) < 1.0:
        raise GraphError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0:
        return x
    if isinstance(seed, Tensor):
        return apply("dropout", [x, seed], p=float(p), seed=None)
    return apply("dropout", [x], p=float(p), seed=0 if seed is None else int(seed))




# -- NLL on log-probabilities, and BCE on probabilities (the unfused forms users write) -----------
def _nll_forward(logp, labels):
    n, c = logp.shape
    _check_labels(labels, c)
    if n == 0:
        return np.asarray(np.nan, logp.dtype)
    return np.asarray(-np.mean(np.take_along_axis(logp, labels[:, None].astype(np.intp), 1)), logp.dtype)


def _nll_grad_forward(logp, labels, g):
    n, c = logp.shape
    _check_labels(labels, c)
    out = np.zeros_like(logp)
    np.put_along_axis(out, labels[:, None].astype(np.intp), -g / max(n, 1), axis=1)
    return out


register(OpDef("nll_loss", infer=_sce_infer, forward=_nll_forward, arity=2, fuzz="classification",
               vjp=lambda g, out, logp, labels: [apply("nll_loss_grad", [logp, labels, g]), None]))
register(OpDef("nll_loss_grad", infer=lambda i: (i[0].shape, i[0].dtype), forward=_nll_grad_forward, arity=3,
               fuzz="classification", made_by="vjp",
               vjp=lambda gg, out, logp, labels, g: [None, None, -sum(gg * one_hot(labels, logp.shape[1], logp.dtype))
                                                     / size_of(logp, 0)]))


def nll_loss(log_probs, labels) -> Tensor:
    """Mean over the batch of -log_probs[n, label_n] (PyTorch's NLLLoss).

    nll_loss(log_softmax(z), y) is fused by the compiler into softmax_cross_entropy(z, y)."""
    log_probs = _floatify(log_probs)
    return apply("nll_loss", [log_probs, as_tensor(labels)])


def _bce_probs_forward(p, t):
    if p.shape != t.shape:
        raise GraphError(f"probabilities {p.shape} and targets {t.shape} must have the same shape")
    if p.size == 0:
        return np.asarray(np.nan, p.dtype)
    return np.asarray(-np.mean(t * np.log(p) + (1 - t) * np.log1p(-p)), p.dtype)


def _bce_probs_vjp(g, out, p, t):
    scale = g / size_of(p)
    return [apply("bce_probs_grad", [p, t, scale]), (apply("log", [1 - p]) - apply("log", [p])) * scale]


def _bce_probs_grad_forward(p, t, scale):
    return (p - t) / (p * (1 - p)) * scale


register(OpDef("binary_cross_entropy_probs", infer=_bce_infer, forward=_bce_probs_forward, vjp=_bce_probs_vjp,
               arity=2, domain=(Domain("unit", low=0.05, high=0.95), Domain("unit", low=0.0, high=1.0)), fuzz="bce"))
register(OpDef("bce_probs_grad", infer=lambda i: (i[0].shape, i[0].dtype), forward=_bce_probs_grad_forward, arity=3,
               fuzz="bce", made_by="vjp",
               domain=(Domain("unit", low=0.05, high=0.95), Domain("unit", low=0.0, high=1.0)),
               no_vjp="the backward of binary_cross_entropy_probs; no second derivative through it"))


def binary_cross_entropy_probs(probs, targets) -> Tensor:
    """Mean of -[t log p + (1 - t) log(1 - p)] on probabilities p (PyTorch's BCELoss).

    Prefer binary_cross_entropy on logits; the compiler rewrites
    binary_cross_entropy_probs(sigmoid(z), t) into that stable form."""
    p = _floatify(probs)
    t = as_tensor(targets, like=p)
    if t.dtype != p.dtype:
        t = cast(t, p.dtype)
    return apply("binary_cross_entropy_probs", [p, t])
