"""Elementwise ops: unary math, activations, broadcasting binary arithmetic, comparisons."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor, as_tensor
from . import REGISTRY, Domain, OpDef, apply, promote, register
from .core import broadcast_shapes, cast, unbroadcast, zeros_like

__all__ = ["neg", "exp", "log", "sqrt", "abs", "sign", "sigmoid", "tanh", "relu", "leaky_relu", "power",
           "softplus", "elu", "gelu", "silu", "erf",
           "add", "sub", "mul", "div", "pow", "maximum", "minimum", "where", "clip",
           "less", "less_equal", "greater", "greater_equal", "equal", "not_equal", "activation_grad",
           "ACTIVATIONS"]

POSITIVE = Domain("positive", low=0.2, high=4.0)


def _float_same(inputs, **_):
    x = inputs[0]
    if x.dtype.kind != "f":
        raise GraphError(f"needs a floating-point input, got {x.dtype}")
    return x.shape, x.dtype


def _floatify(x) -> Tensor:
    x = as_tensor(x)
    return x if x.dtype.kind == "f" else cast(x, np.float64)


def np_sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows; exact in both tails
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _unary(name: str, forward, vjp, domain: Optional[Domain] = None, **traits) -> None:
    """Register a unary elementwise op: fusible, in place, lowered to gc_unary's GC_U_<NAME>."""
    register(OpDef(name, forward=forward, vjp=vjp, domain=(domain or Domain(),), infer=_float_same, arity=1,
                   elementwise=True, inplace=True, lowering="unary", fusible=True, fuzz="unary", **traits))


# One registration per op: forward, VJP (from graphc ops), domain, and its traits. `kernel_param`
# is the attribute its C kernels take; `fuzz_attrs` the values graphc fuzz draws (edges
# included); `monotonic`: strictly increasing on its domain; `dense_act`: the GEMM epilogue has it.
_unary("neg", np.negative, lambda g, out, x: [-g], monotonic=True)
_unary("exp", np.exp, lambda g, out, x: [g * out], Domain("bounded", low=-3, high=3), monotonic=True)
_unary("log", np.log, lambda g, out, x: [g / x], POSITIVE, monotonic=True)
_unary("sqrt", np.sqrt, lambda g, out, x: [g * 0.5 / out], POSITIVE, monotonic=True)
_unary("abs", np.abs, lambda g, out, x: [g * sign(x)], Domain(kinks=(0.0,)))
_unary("sign", np.sign, None, Domain(kinks=(0.0,)), differentiable=False)
_unary("sigmoid", np_sigmoid, lambda g, out, x: [activation_grad(out, g, "sigmoid")], monotonic=True,
       dense_act=True)
_unary("tanh", np.tanh, lambda g, out, x: [activation_grad(out, g, "tanh")], monotonic=True, dense_act=True,
       fuzz_weight=2)
_unary("relu", lambda x: np.maximum(x, 0), lambda g, out, x: [activation_grad(out, g, "relu")],
       Domain(kinks=(0.0,)), dense_act=True)
# the slope is read from the input: with alpha < 0 the output's sign no longer tells the side
_unary("leaky_relu", lambda x, alpha: np.where(x > 0, x, x * np.asarray(alpha, x.dtype)),
       lambda g, out, x, alpha: [activation_grad(x, g, "leaky_relu", alpha)], Domain(kinks=(0.0,)),
       kernel_param="alpha", fuzz_attrs={"alpha": (0.1, 0.01, 0.3, 0.0, -0.5)}, dense_act=True)
_unary("softplus", lambda x, beta: _softplus_forward(x, beta),
       lambda g, out, x, beta: [g * _softplus_derivative(x, beta)],
       kernel_param="beta", fuzz_attrs={"beta": (1.0, 0.5, 2.0)}, monotonic=True)
_unary("elu", lambda x, alpha: _elu_forward(x, alpha),
       lambda g, out, x, alpha: [activation_grad(out, g, "elu", alpha)], Domain(kinks=(0.0,)),
       kernel_param="alpha", fuzz_attrs={"alpha": (1.0, 0.5, 2.0)}, monotonic=True)
_unary("gelu", lambda x, approximate: _gelu_forward(x, approximate),
       lambda g, out, x, approximate: [g * _gelu_derivative(x, approximate)],
       variants={"gelu": {"approximate": "none"}, "gelu_tanh": {"approximate": "tanh"}},
       fuzz_attrs={"approximate": ("none", "tanh")})
_unary("silu", lambda x: x * np_sigmoid(x), lambda g, out, x: [g * _silu_derivative(x)])
_unary("erf", lambda x: _np_erf(x), lambda g, out, x: [g * (exp(x * x * -1.0) * _TWO_OVER_SQRT_PI)], monotonic=True)
_unary("power", lambda x, p: np.power(x, np.asarray(p, x.dtype)),
       lambda g, out, x, p: [g * (p * power(x, p - 1)) if p != 0 else zeros_like(g)],
       POSITIVE, kernel_param="p", fuzz_attrs={"p": (-1.5, -1.0, 0.5, 2.0, 3.0)}, monotonic=True)

# what dense(..., act=) accepts: the GEMM epilogue's activations
ACTIVATIONS = ("identity",) + tuple(n for n, op in REGISTRY.items() if op.dense_act)
# what activation_grad(y, g, act) accepts: activations whose derivative follows from their output
OUTPUT_GRAD_ACTS = ACTIVATIONS + ("elu",)


def neg(x) -> Tensor:
    return apply("neg", [_floatify(x)])


def exp(x) -> Tensor:
    return apply("exp", [_floatify(x)])


def log(x) -> Tensor:
    """Natural logarithm (domain x > 0)."""
    return apply("log", [_floatify(x)])


def sqrt(x) -> Tensor:
    return apply("sqrt", [_floatify(x)])


def abs(x) -> Tensor:  # noqa: A001 - mirrors numpy.abs
    return apply("abs", [_floatify(x)])


def sign(x) -> Tensor:
    """-1, 0 or 1; not differentiable (its gradient is zero)."""
    return apply("sign", [_floatify(x)])


def sigmoid(x) -> Tensor:
    """Logistic function 1 / (1 + exp(-x)), computed without overflow."""
    return apply("sigmoid", [_floatify(x)])


def tanh(x) -> Tensor:
    return apply("tanh", [_floatify(x)])


def relu(x) -> Tensor:
    """max(x, 0). Its derivative at 0 is taken as 0."""
    return apply("relu", [_floatify(x)])


def leaky_relu(x, alpha: float = 0.1) -> Tensor:
    """x for x > 0, alpha * x otherwise (slope 0.1 by default, as in the course material)."""
    return apply("leaky_relu", [_floatify(x)], alpha=float(alpha))


def softplus(x, beta: float = 1.0) -> Tensor:
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > 20 (PyTorch's threshold)."""
    if float(beta) == 0:
        raise GraphError("softplus needs beta != 0")
    return apply("softplus", [_floatify(x)], beta=float(beta))


def elu(x, alpha: float = 1.0) -> Tensor:
    """x for x > 0, alpha * (exp(x) - 1) otherwise (alpha >= 0: its gradient is read from the output)."""
    if not float(alpha) >= 0:
        raise GraphError(f"elu needs alpha >= 0, got {alpha}")
    return apply("elu", [_floatify(x)], alpha=float(alpha))


def gelu(x, approximate: str = "none") -> Tensor:
    """x * Φ(x) with Φ the standard normal CDF (approximate="none"), or PyTorch's tanh approximation
    0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))) (approximate="tanh")."""
    if approximate not in ("none", "tanh"):
        raise GraphError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply("gelu", [_floatify(x)], approximate=approximate)


def silu(x) -> Tensor:
    """x * sigmoid(x) (also called swish)."""
    return apply("silu", [_floatify(x)])


def erf(x) -> Tensor:
    """The error function 2/√π ∫₀ˣ exp(-t²) dt."""
    return apply("erf", [_floatify(x)])


def power(x, p: float) -> Tensor:
    """x ** p for a Python-number exponent p."""
    x = _floatify(x)
    if p == 1:
        return x
    return apply("power", [x], p=float(p))


# -- forwards and derivatives of the smooth activations (PyTorch's definitions) -----------------
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_GELU_K = math.sqrt(2.0 / math.pi)  # the tanh approximation: 0.5 x (1 + tanh(k (x + c x³)))
_GELU_C = 0.044715

try:  # scipy ships with scikit-learn; without it, math.erf element by element (the reference path)
    from scipy.special import erf as _scipy_erf
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_erf = None


def _np_erf(x):
    x = np.asarray(x)
    if _scipy_erf is not None:
        return _scipy_erf(x).astype(x.dtype, copy=False)
    return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()


def _softplus_forward(x, beta):
    bx = x * np.asarray(beta, x.dtype)
    soft = np.log1p(np.exp(np.minimum(bx, 20))) / np.asarray(beta, x.dtype)
    return np.where(bx > 20, x, soft).astype(x.dtype, copy=False)


def _elu_forward(x, alpha):
    return np.where(x > 0, x, np.asarray(alpha, x.dtype) * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def _gelu_forward(x, approximate):
    half = np.asarray(0.5, x.dtype)
    if approximate == "tanh":
        u = np.asarray(_GELU_K, x.dtype) * (x + np.asarray(_GELU_C, x.dtype) * x * x * x)
        return half * x * (1 + np.tanh(u))
    return half * x * (1 + _np_erf(x * np.asarray(1 / math.sqrt(2.0), x.dtype)))


def _gelu_derivative(x, approximate) -> Tensor:
    """d gelu / dx, as a graph (so it is differentiable again and fuses into one C kernel)."""
    if approximate == "tanh":
        t = tanh((x + x * x * x * _GELU_C) * _GELU_K)
        return (t + 1.0) * 0.5 + x * (1.0 - t * t) * (x * x * (3 * _GELU_C) + 1.0) * (0.5 * _GELU_K)
    return (erf(x * (1 / math.sqrt(2.0))) + 1.0) * 0.5 + x * exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi))


def _softplus_derivative(x, beta) -> Tensor:
    """sigmoid(beta x), and exactly 1 where beta x > 20 (where the forward is x itself, as PyTorch);
    written with a relu step so that it stays one fused C kernel."""
    s = sigmoid(x * beta)
    return s + activation_grad(x * beta - 20.0, 1.0 - s, "relu")


def _silu_derivative(x) -> Tensor:
    s = sigmoid(x)
    return s * (x * (1.0 - s) + 1.0)


# -- activation gradients from the stored output y (ReLU' = y>0, σ' = y(1-y), tanh' = 1-y²) --
def _act_grad_forward(y, g, act, alpha=0.0):
    if act == "relu":
        return g * (y > 0)
    if act == "leaky_relu":
        return g * np.where(y > 0, 1, np.asarray(alpha, y.dtype)).astype(y.dtype)
    if act == "sigmoid":
        return g * y * (1 - y)
    if act == "tanh":
        return g * (1 - y * y)
    if act == "elu":  # y = alpha (e^x - 1) below 0, so e^x alpha = y + alpha
        return g * np.where(y > 0, 1, y + np.asarray(alpha, y.dtype)).astype(y.dtype)
    return g.copy()


def _act_grad_vjp(gg, out, y, g, act, alpha=0.0):
    grad_g = unbroadcast(activation_grad(y, gg, act, alpha), g)
    if act == "sigmoid":
        return [unbroadcast(gg * g * (1 - 2 * y), y), grad_g]
    if act == "tanh":
        return [unbroadcast(gg * g * (-2 * y), y), grad_g]
    if act == "elu":  # d/dy (y + alpha) = 1 where y <= 0
        return [unbroadcast(gg * g - activation_grad(y, gg * g, "relu"), y), grad_g]
    return [None, grad_g]


def _act_grad_infer(inputs, act, alpha=0.0):
    y, g = inputs
    if act not in OUTPUT_GRAD_ACTS:
        raise GraphError(f"unknown activation {act!r}; expected one of {OUTPUT_GRAD_ACTS}")
    if y.shape != g.shape or y.dtype != g.dtype:
        broadcast_shapes(y.shape, g.shape)
    return broadcast_shapes(y.shape, g.shape), np.result_type(y.dtype, g.dtype)


def _act_grad_branch(out, y, g, act, alpha=0.0):
    return np.sign(np.asarray(y, np.float64)) if act in ("relu", "leaky_relu", "elu") else None


def _act_grad_domain(act="relu", alpha=0.0):
    return (Domain(kinks=(0.0,)) if act in ("relu", "leaky_relu", "elu") else Domain(), Domain())


def _act_grad_fuzz_attrs(draw_from):
    act = draw_from(OUTPUT_GRAD_ACTS)
    return {"act": act, "alpha": {"leaky_relu": 0.1, "elu": 1.0}.get(act, 0.0)}


register(OpDef("activation_grad", infer=_act_grad_infer, forward=_act_grad_forward, vjp=_act_grad_vjp,
               arity=2, elementwise=True, inplace=True, lowering="act_grad", fusible=True, kernel_param="alpha",
               variants={f"{a}_grad": {"act": a} for a in OUTPUT_GRAD_ACTS if a != "identity"},
               domain=_act_grad_domain, branch=_act_grad_branch, fuzz="activation_grad",
               fuzz_attrs=_act_grad_fuzz_attrs, made_by="vjp"))


def activation_grad(y: Tensor, g: Tensor, act: str, alpha: float = 0.0) -> Tensor:
    """g times act'(x), computed from the activation's output y = act(x)."""
    return apply("activation_grad", [y, g], act=act, alpha=float(alpha))


# -- binary arithmetic with NumPy broadcasting -------------------------------------------
def _binary_infer(inputs):
    a, b = inputs
    return broadcast_shapes(a.shape, b.shape), np.result_type(a.dtype, b.dtype)


def _pow_vjp(g, out, a, b):
    """PyTorch's masks: d/da is 0 where b == 0 (not 0 * a^-1), d/db is 0 where a == 0 and b >= 0
    (not a^b log a = 0 * -inf); both are NaN-free limits of the true derivative."""
    zero = as_tensor(0, like=g)
    da = where(equal(b, zero), zero, b * pow(a, b - 1))
    a_log_a = out * log(a)
    db = where(equal(a, zero), where(greater_equal(b, zero), zero, a_log_a), a_log_a)
    return [unbroadcast(g * da, a), unbroadcast(g * db, b)]


def _max_vjp(g, out, a, b, greater):
    first = cast(greater(a, b), g.dtype) + 0.5 * cast(equal(a, b), g.dtype)  # ties split evenly
    return [unbroadcast(g * first, a), unbroadcast(g * (1 - first), b)]


_BINARY = {
    "add": (np.add, lambda g, out, a, b: [unbroadcast(g, a), unbroadcast(g, b)], ()),
    "sub": (np.subtract, lambda g, out, a, b: [unbroadcast(g, a), unbroadcast(-g, b)], ()),
    "mul": (np.multiply, lambda g, out, a, b: [unbroadcast(g * b, a), unbroadcast(g * a, b)], ()),
    "div": (np.divide, lambda g, out, a, b: [unbroadcast(g / b, a), unbroadcast(-g * out / b, b)],
            (Domain(), Domain("nonzero", low=0.5, high=3.0))),
    "pow": (np.power, lambda g, out, a, b: _pow_vjp(g, out, a, b),
            (POSITIVE, Domain("bounded", low=-2, high=2))),
    "maximum": (np.maximum, lambda g, out, a, b: _max_vjp(g, out, a, b, greater),
                (Domain(distinct=True), Domain(distinct=True))),
    "minimum": (np.minimum, lambda g, out, a, b: _max_vjp(g, out, a, b, less),
                (Domain(distinct=True), Domain(distinct=True))),
}
for _name, (_fwd, _vjp, _dom) in _BINARY.items():
    register(OpDef(_name, infer=_binary_infer, forward=_fwd, vjp=_vjp, domain=_dom, arity=2, elementwise=True,
                   promotes=True, inplace=True, lowering="binary", fusible=_name != "pow", fuzz="binary",
                   fuzz_weight=2 if _name in ("add", "mul") else 1))


def add(a, b) -> Tensor:
    return apply("add", promote(a, b))


def sub(a, b) -> Tensor:
    return apply("sub", promote(a, b))


def mul(a, b) -> Tensor:
    return apply("mul", promote(a, b))


def div(a, b) -> Tensor:
    a, b = promote(a, b)
    if a.dtype.kind != "f" and b.dtype.kind != "f":
        a = cast(a, np.float64)  # true division of integers gives floats, as in NumPy
    return apply("div", [a, b])


def pow(a, b) -> Tensor:  # noqa: A001 - mirrors operator.pow
    """a ** b. A Python-number exponent gives the cheaper `power` op."""
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return power(a, b)
    return apply("pow", promote(a, b))


def maximum(a, b) -> Tensor:
    """Elementwise max; at ties the gradient is split evenly between a and b."""
    return apply("maximum", promote(a, b))


def minimum(a, b) -> Tensor:
    """Elementwise min; at ties the gradient is split evenly between a and b."""
    return apply("minimum", promote(a, b))


# -- comparisons (bool results, no gradient) ---------------------------------------------
def _compare_infer(inputs):
    return broadcast_shapes(inputs[0].shape, inputs[1].shape), np.dtype(bool)


_COMPARE = {"less": np.less, "less_equal": np.less_equal, "greater": np.greater,
            "greater_equal": np.greater_equal, "equal": np.equal, "not_equal": np.not_equal}
for _name, _fwd in _COMPARE.items():
    register(OpDef(_name, infer=_compare_infer, forward=_fwd, differentiable=False, arity=2, elementwise=True,
                   promotes=True,
                   domain=(Domain(distinct=True), Domain(distinct=True)), fuzz="binary"))


def less(a, b) -> Tensor:
    return apply("less", promote(a, b))


def less_equal(a, b) -> Tensor:
    return apply("less_equal", promote(a, b))


def greater(a, b) -> Tensor:
    return apply("greater", promote(a, b))


def greater_equal(a, b) -> Tensor:
    return apply("greater_equal", promote(a, b))


def equal(a, b) -> Tensor:
    return apply("equal", promote(a, b))


def not_equal(a, b) -> Tensor:
    return apply("not_equal", promote(a, b))


# -- where and clip ----------------------------------------------------------------------
def _where_infer(inputs):
    c, a, b = inputs
    if c.dtype != np.dtype(bool):
        raise GraphError(f"condition must be bool, got {c.dtype}")
    return broadcast_shapes(c.shape, a.shape, b.shape), np.result_type(a.dtype, b.dtype)


def _where_vjp(g, out, c, a, b):
    zero = as_tensor(0, like=g)
    return [None, unbroadcast(where(c, g, zero), a), unbroadcast(where(c, zero, g), b)]


register(OpDef("where", infer=_where_infer, forward=np.where, vjp=_where_vjp, arity=3, elementwise=True, promotes=True,
               fuzz="where"))


def where(cond, a, b) -> Tensor:
    """a where cond is true, else b (broadcasting all three)."""
    a, b = promote(a, b)
    cond = as_tensor(cond)
    if cond.dtype != np.dtype(bool):
        cond = not_equal(cond, 0)
    return apply("where", [cond, a, b])


def _clip_forward(x, lo, hi):
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, x.dtype))
    return out if out is not x else x.copy()


def _clip_vjp(g, out, x, lo, hi):
    zero = as_tensor(0, like=g)
    if lo is not None:
        g = where(greater_equal(x, lo), g, zero)
    if hi is not None:
        g = where(less_equal(x, hi), g, zero)
    return [g]


def _clip_infer(inputs, lo, hi):
    if lo is not None and hi is not None and lo > hi:
        raise GraphError(f"clip bounds are reversed: lo={lo} > hi={hi}")
    return _float_same(inputs)


def _clip_fuzz_attrs(draw_from):
    lo = draw_from((-1.0, -0.5, None))
    return {"lo": lo, "hi": draw_from((1.0, 0.5) + ((None,) if lo is not None else ()))}


register(OpDef("clip", infer=_clip_infer, forward=_clip_forward, vjp=_clip_vjp, arity=1, elementwise=True,
               domain=lambda lo=-1.0, hi=1.0: (Domain(kinks=tuple(float(b) for b in (lo, hi) if b is not None)),),
               fuzz="unary", fuzz_attrs=_clip_fuzz_attrs))


def clip(x, lo=None, hi=None) -> Tensor:
    """Limit values to [lo, hi] (either may be None). Gradient 1 inside, including the bounds."""
    return apply("clip", [_floatify(x)], lo=None if lo is None else float(lo), hi=None if hi is None else float(hi))
