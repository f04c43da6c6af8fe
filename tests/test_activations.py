"""softplus, elu, gelu (both approximations) and silu against PyTorch's definitions, forward and
gradient, on both backends, alone and inside fused elementwise chains; and gradcheck."""
import numpy as np
import pytest

import graphc as gc
from graphc.backends import C_AVAILABLE

BACKENDS = ["numpy"] + (["c"] if C_AVAILABLE else [])
ACTS = {
    "softplus": (lambda t: gc.softplus(t, beta=2.0), lambda F, t: F.softplus(t, beta=2.0), lambda: gc.nn.Softplus(2.0)),
    "elu": (lambda t: gc.elu(t, alpha=0.7), lambda F, t: F.elu(t, alpha=0.7), lambda: gc.nn.ELU(0.7)),
    "gelu": (gc.gelu, lambda F, t: F.gelu(t), lambda: gc.nn.GELU()),
    "gelu_tanh": (lambda t: gc.gelu(t, approximate="tanh"), lambda F, t: F.gelu(t, approximate="tanh"),
                  lambda: gc.nn.GELU("tanh")),
    "silu": (gc.silu, lambda F, t: F.silu(t), lambda: gc.nn.SiLU()),
}
X = np.linspace(-6.0, 6.0, 97).reshape(1, 97) * np.array([[1.0], [0.3], [2.5]])  # tails, kinks, 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", sorted(ACTS))
def test_matches_pytorch_forward_and_gradient(name, fused, dtype, backend):
    torch = pytest.importorskip("torch")
    ours, theirs, _ = ACTS[name]
    x = gc.placeholder("x", (None, 97), dtype)
    weights = np.cos(np.arange(97.0)).astype(dtype)
    y = ours(x * 1.5 - 0.25) * weights  # a chain the fusion pass turns into one fused kernel
    loss = gc.sum(y * y)
    f = gc.compile([y, gc.grad(loss, x)], backend=backend, optimize=fused)
    value, grad = f(x=X.astype(dtype))
    tx = torch.tensor(X.astype(dtype), requires_grad=True)
    ty = theirs(torch.nn.functional, tx * 1.5 - 0.25) * torch.tensor(weights)
    (ty * ty).sum().backward()
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(grad, tx.grad.numpy(), **tol)
    if fused and backend == "c":  # no NumPy step: every part runs in the C plan
        runner = next(iter(f._plans.values()))[1]
        assert runner.numpy_steps == []


@pytest.mark.parametrize("name", sorted(ACTS))
def test_gradcheck_including_second_derivatives(name):
    ours = ACTS[name][0]
    x = gc.placeholder("x", (3, 5), "float64")
    Xs = np.random.default_rng(1).normal(size=(3, 5)) * 2 + 0.05  # away from elu's kink at 0
    assert gc.gradcheck(ours(x).sum(), {x: Xs})
    (g,) = gc.grad((ours(x) ** 2).sum(), [x])
    assert gc.gradcheck((g * g).sum(), {x: Xs})  # the VJP is built from ops: differentiable again


@pytest.mark.parametrize("name", sorted(ACTS))
def test_layers_match_torch_nn(name):
    torch = pytest.importorskip("torch")
    layer = ACTS[name][2]()
    torch_layer = {"softplus": lambda: torch.nn.Softplus(beta=2.0), "elu": lambda: torch.nn.ELU(0.7),
                   "gelu": lambda: torch.nn.GELU(), "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh"),
                   "silu": lambda: torch.nn.SiLU()}[name]()
    model = gc.nn.Sequential(layer)
    got = gc.predict_logits(model, X.astype(np.float32))
    np.testing.assert_allclose(got, torch_layer(torch.tensor(X, dtype=torch.float32)).numpy(), rtol=1e-5, atol=1e-6)
    rebuilt = gc.nn.Module.from_config(model.config())  # the layer's arguments survive save/load
    np.testing.assert_array_equal(gc.predict_logits(rebuilt, X.astype(np.float32)), got)
