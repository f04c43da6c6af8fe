"""The registry is the only op table: every layer's view of an op is derived from its OpDef, and
this file fails, naming the op, when something is missing or two layers disagree."""
import ast
import pathlib

import numpy as np
import pytest

import graphc as gc
from graphc.backends import C_AVAILABLE
from graphc.compiler.schedule import plan_arena
from graphc.ops import PUBLIC, REGISTRY, fused_kernels, memory_traits
from graphc.testing import CASES, GRAPH_BUILDERS, GRAPH_OPS

LEAVES = {n for n, op in REGISTRY.items() if op.fuzz == "leaf"}
PACKAGE = pathlib.Path(gc.__file__).parent


def test_every_differentiable_op_has_a_vjp_or_says_why_not():
    missing = [n for n, op in REGISTRY.items() if op.differentiable and op.vjp is None and not op.no_vjp]
    assert not missing, f"differentiable ops without a VJP or a `no_vjp` reason: {missing}"


def test_every_op_has_a_fuzz_kind_with_a_strategy():
    bad = [f"{n} (fuzz={op.fuzz!r})" for n, op in REGISTRY.items() if n not in LEAVES and op.fuzz not in CASES]
    assert not bad, f"ops whose inputs graphc.testing cannot draw: {bad}"


def test_random_graphs_reach_every_op_or_it_is_made_by_gradients_or_passes():
    unreachable = [n for n, op in REGISTRY.items()
                   if n not in LEAVES and not op.made_by and n not in GRAPH_OPS]
    assert not unreachable, f"ops random graphs never draw: {unreachable}"
    assert all(REGISTRY[n].fuzz in GRAPH_BUILDERS for n in GRAPH_OPS if n in REGISTRY)


def test_every_public_op_function_is_exported_from_graphc():
    missing = [name for name in PUBLIC if getattr(gc, name, None) is None]
    assert not missing, f"public op functions missing from `graphc`: {missing}"


def test_elementwise_ops_are_fusible_and_lowered():
    for name, op in REGISTRY.items():
        if op.elementwise and op.differentiable and op.arity in (1, 2) and op.fuzz in ("unary", "binary"):
            assert op.lowering is not None or name == "clip", f"{name}: an elementwise op without a C lowering"
        if op.fusible:
            assert op.arity in (1, 2), f"{name}: fused programs hold unary and binary instructions only"
            assert op.inplace, f"{name}: a fusible op must allow in-place output (the fused kernel does)"


def test_kernel_parameters_name_real_attributes():
    for name, op in REGISTRY.items():
        for kernel, fixed in op.variants.items():
            assert op.kernel(op.kernel_attrs(kernel, 0.5)) == kernel, f"{name}: variant {kernel} does not round-trip"
            assert fixed and all(isinstance(k, str) for k in fixed), name
        if op.kernel_param:
            assert op.fusible or op.lowering, f"{name}: a kernel parameter without a kernel"


@pytest.mark.skipif(not C_AVAILABLE, reason="the C extension is not built")
def test_every_kernel_name_has_its_c_code():
    from graphc.backends.c import LOWERINGS, lib
    missing = []
    for name, op in REGISTRY.items():
        if op.lowering is not None and op.lowering not in LOWERINGS:
            missing.append(f"{name}: lowering {op.lowering!r} is not in graphc.backends.c.LOWERINGS")
        kernels = list(op.variants) or [name]
        prefix = {"unary": "GC_U_", "binary": "GC_B_"}.get(op.lowering)
        for kernel in kernels if prefix else ():
            if not hasattr(lib, prefix + kernel.upper()):
                missing.append(f"{name}: no {prefix}{kernel.upper()} in csrc")
    for kernel in fused_kernels():
        if not hasattr(lib, "GC_F_" + kernel.upper()):
            missing.append(f"fused kernel {kernel}: no GC_F_{kernel.upper()} in csrc")
    for act in REGISTRY["activation_grad"].variants.values():
        if not hasattr(lib, "GC_ACT_" + act["act"].upper()):
            missing.append(f"activation_grad act={act['act']}: no GC_ACT_{act['act'].upper()} in csrc")
    assert not missing, "\n".join(missing)


def test_fused_program_forms_are_the_ops_forwards():
    from graphc.ops.fused import run_program
    x = np.linspace(-2.0, 2.0, 7)
    y = np.linspace(0.5, 1.5, 7)
    for kernel, (op, _) in fused_kernels().items():
        args = (x,) if op.arity == 1 else (y, x)
        param = 0.3 if op.kernel_param else 0.0
        with np.errstate(all="ignore"):  # log, sqrt, division of the negative half of x
            want = op.forward(*args, **op.kernel_attrs(kernel, param))
            got = run_program(((kernel, tuple(range(len(args))), param),), list(args), np.float64)
        np.testing.assert_allclose(got, want, err_msg=kernel)


def _w_mlp_step():
    x = gc.placeholder("x", (None, 12), "float32")
    y = gc.placeholder("y", (None,), "int64")
    w1 = gc.parameter(np.random.default_rng(0).normal(size=(12, 16)).astype(np.float32))
    w2 = gc.parameter(np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32))
    h = gc.relu(x @ w1)
    loss = gc.softmax_cross_entropy(gc.tanh(h) @ w2 * 0.5 - 1.0, y)
    g1, g2 = gc.grad(loss, [w1, w2])
    return [loss, g1, g2], dict(x=np.ones((5, 12), np.float32), y=np.arange(5) % 3)


@pytest.mark.skipif(not C_AVAILABLE, reason="the C extension is not built")
def test_explain_and_the_c_backend_plan_memory_the_same_way():
    outputs, feeds = _w_mlp_step()
    f = gc.compile(outputs, backend="c")
    f(**feeds)
    plan = f._last_plan
    explained = plan_arena(plan, **f.arena_options(plan))
    lowered = f._plans[next(iter(f._plans))][1].lowered
    assert explained.inplace == lowered.arena.inplace
    assert set(explained.offsets) >= set(lowered.arena.offsets) - set(lowered.arena.root)
    inplace_ops, aliasing = memory_traits()
    assert {plan.nodes[s].op for s in lowered.arena.inplace} <= inplace_ops
    assert f"({len(lowered.arena.inplace)} in-place steps)" in f.explain()


# -- no module outside the registry keeps its own list of op names --------------------------------
_STRUCTURAL = {"placeholder", "parameter", "constant"}  # leaves are graph structure, not ops with rules
_CHECKED = ["compiler", "backends", "verify"]


def _name_lists(path: pathlib.Path) -> list:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                     and e.value in REGISTRY and e.value not in _STRUCTURAL]
            if len(names) >= 2:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {names}")
        if isinstance(node, ast.Dict):  # a table keyed by op names (kind tables are keyed by kinds)
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            ops = [k for k in keys if k in REGISTRY and k not in _STRUCTURAL]
            kinds = {op.fuzz for op in REGISTRY.values()} | {op.lowering for op in REGISTRY.values()}
            if len(ops) >= 2 and not all(k in kinds for k in keys):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: dict keyed by {ops}")
    return found


@pytest.mark.parametrize("layer", _CHECKED)
def test_no_op_name_tables_outside_the_registry(layer):
    found = [hit for path in sorted((PACKAGE / layer).rglob("*.py")) for hit in _name_lists(path)]
    assert not found, "op-name tables outside graphc/ops (derive them from REGISTRY):\n" + "\n".join(found)
