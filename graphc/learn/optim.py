"""Optimisers as graph updates: one compiled call does forward, backward and the update.

An optimiser turns (parameters, gradient Tensors) into `{parameter: new_value_tensor}` for
`gc.compile(..., updates=...)`. Its state (momentum buffers, Adam moments, the bias-correction
powers, the learning rate itself) lives in extra `gc.parameter` Tensors that the same updates
advance, so nothing runs in Python between steps:

    >>> import numpy as np, graphc as gc
    >>> from graphc import optim
    >>> w = gc.parameter(np.array([3.0], np.float32), name="w")
    >>> loss = (w * w).sum()
    >>> opt = optim.SGD(lr=0.1, momentum=0.9)
    >>> step = gc.compile(loss, updates=opt.updates([w], gc.grad(loss, [w])))
    >>> for _ in range(200): _ = step()
    >>> abs(float(w.value[0])) < 1e-3
    True

The learning rate is a scalar parameter too: `opt.lr = 0.01` changes it without recompiling.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..ir.tensor import Tensor, parameter

__all__ = ["Optimizer", "GD", "SGD", "Adam", "get"]


class Optimizer:
    """Base class. Subclasses implement `_update(p, g, lr) -> new value Tensor` (state via self._slot)."""

    def __init__(self, lr: float):
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self._lr_value = float(lr)
        self._lr: Optional[Tensor] = None
        self._state: list[Tensor] = []
        self._shared_updates: dict = {}
        self._reset_values: dict = {}

    @property
    def lr(self) -> float:
        return self._lr_value

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr_value = float(value)
        if self._lr is not None:
            self._lr.value = np.asarray(value, dtype=self._lr.dtype)

    def _slot(self, like: Tensor, name: str, fill: float = 0.0, shape=None) -> Tensor:
        p = parameter(np.full(like.shape if shape is None else shape, fill, dtype=like.dtype),
                      name=f"{like.name or 'param'}.{name}" if shape is None else name)
        self._state.append(p)
        return p

    def state_parameters(self) -> list[Tensor]:
        """The optimiser's own state parameters (created by `updates`)."""
        return list(self._state)

    def reset(self) -> None:
        """Zero the moment buffers and step counts (keeps the learning rate)."""
        for p in self._state:
            if p is not self._lr:
                p.value = np.zeros_like(p.value) + self._reset_values.get(id(p), 0)

    def updates(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> dict:
        """{parameter or state parameter: new value Tensor} for gc.compile(updates=...).

        Call it once per compiled step; the state parameters it creates belong to that step."""
        params, grads = list(params), list(grads)
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} parameters but {len(grads)} gradients")
        if not params:
            raise ValueError("no parameters to optimise")
        dtype = params[0].dtype
        self._reset_values: dict = {}
        self._lr = parameter(np.asarray(self._lr_value, dtype=dtype), name="lr")
        out: dict = {}
        self._shared_updates = {}
        for p, g in zip(params, grads):
            if p.op != "parameter":
                raise ValueError(f"can only optimise gc.parameter tensors, got {p!r}")
            out[p] = self._update(p, g, self._lr)
        out.update(self._shared_updates)
        return out

    def _update(self, p: Tensor, g: Tensor, lr: Tensor) -> Tensor:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay.

    v ← μ·v + g;  p ← p − lr·v   (Nesterov: p ← p − lr·(g + μ·v));  g includes weight_decay·p.
    With momentum=0 this is plain (mini-batch) gradient descent p ← p − lr·g."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)

    def _update(self, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum == 0:
            return p - lr * g
        v = self._slot(p, "momentum")
        v_new = self.momentum * v + g
        self._shared_updates[v] = v_new
        step = g + self.momentum * v_new if self.nesterov else v_new
        return p - lr * step

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov})"


class GD(SGD):
    """Plain gradient descent p ← p − lr·∇p (SGD without momentum); full-batch when the Trainer's
    batch_size is None."""

    def __init__(self, lr: float = 0.1, weight_decay: float = 0.0):
        super().__init__(lr, momentum=0.0, weight_decay=weight_decay)

    def __repr__(self):
        return f"GD(lr={self.lr})"


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction.

    m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε̂).
    β₁ᵗ and β₂ᵗ are scalar state parameters multiplied by β each step (the step count in graph
    form). ε̂ = ε·√(1−β₂ᵗ), which makes this exactly m̂ / (√v̂ + ε) of the paper."""

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps, self.weight_decay = float(beta1), float(beta2), float(eps), \
            float(weight_decay)
        self._powers: Optional[tuple] = None

    def updates(self, params, grads):
        self._powers = None
        return super().updates(params, grads)

    def _update(self, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self._powers is None:  # shared by all parameters: β₁ᵗ, β₂ᵗ after this step
            b1t, b2t = self._slot(p, "beta1_power", 1.0, ()), self._slot(p, "beta2_power", 1.0, ())
            self._reset_values[id(b1t)] = self._reset_values[id(b2t)] = 1.0
            b1n, b2n = b1t * self.beta1, b2t * self.beta2
            self._shared_updates[b1t], self._shared_updates[b2t] = b1n, b2n
            correction = (1.0 - b2n) ** 0.5
            self._powers = (lr * correction / (1.0 - b1n), self.eps * correction)
        step_size, eps_hat = self._powers
        m, v = self._slot(p, "adam_m"), self._slot(p, "adam_v")
        m_new = self.beta1 * m + (1.0 - self.beta1) * g
        v_new = self.beta2 * v + (1.0 - self.beta2) * (g * g)
        self._shared_updates[m], self._shared_updates[v] = m_new, v_new
        return p - step_size * m_new / ((v_new ** 0.5) + eps_hat)

    def __repr__(self):
        return f"Adam(lr={self.lr}, beta1={self.beta1}, beta2={self.beta2})"


def get(name: str, lr: Optional[float] = None, **kwargs) -> Optimizer:
    """An optimiser by name: 'gd', 'sgd', 'momentum' (SGD with 0.9) or 'adam'."""
    name = name.lower()
    if name == "gd":
        return GD(lr or 0.1, **kwargs)
    if name == "sgd":
        return SGD(lr or 0.1, **kwargs)
    if name == "momentum":
        return SGD(lr or 0.05, momentum=kwargs.pop("momentum", 0.9), **kwargs)
    if name == "adam":
        return Adam(lr or 1e-3, **kwargs)
    raise ValueError(f"unknown optimiser {name!r}; choose gd, sgd, momentum or adam")
