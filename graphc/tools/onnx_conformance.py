"""ONNX's conformance suite against graphc.onnx.backend, with every case classified.

    python -m graphc.tools.onnx_conformance [--suite node,pytorch-converted,pytorch-operator,light]
                                            [--backend c|numpy] [--markdown] [--json out.json]

The cases are the ones onnx.backend.test.BackendTest generates (node tests from
onnx.backend.test.case.node, the pytorch-converted and pytorch-operator models, and the nine
light_* networks shipped in the onnx package), run the way its runner runs them: prepare, run
each data set, compare with its tolerances (shape, dtype, assert_allclose). Each case ends as

    pass     every output matches
    refused  prepare raised GraphError (graphc cannot run it exactly; the reason is kept)
    wrong    an output differs (shape, dtype or values)
    crash    anything else: an exception other than a GraphError at prepare, or any at run

Nothing is downloaded or written: the light models' inputs are generated as the runner does
(arange / n) and compared with the expected outputs stored beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import numpy as np

SUITES = ("node", "pytorch-converted", "pytorch-operator", "light")


@dataclass
class Result:
    suite: str
    name: str
    op: str  # the op a node test is about ("" for model suites)
    status: str  # pass | refused | wrong | crash
    detail: str
    seconds: float


def _snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()


_NAME_ALIASES = {"greater_equal": "GreaterOrEqual", "less_equal": "LessOrEqual"}  # test names that abbreviate


def primary_op(name: str, model) -> str:
    """The op a node test exercises: its single node, or the op its name starts with (expanded
    tests, which spell a function op out in other ops); "" when the name names no op."""
    ops = [n.op_type for n in model.graph.node]
    if len(set(ops)) == 1:
        return ops[0]
    stem = name[len("test_"):]
    for alias, op in _NAME_ALIASES.items():
        if stem == alias or stem.startswith(alias + "_"):
            return op
    best = ""
    for op in _all_ops():
        s = _snake(op)
        if (stem == s or stem.startswith(s + "_")) and len(s) > len(_snake(best) if best else ""):
            best = op
    return best


def _all_ops() -> set:
    import onnx.defs
    return {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""}


def _load_cases(suite: str) -> Iterable:
    """(name, model, [(inputs, expected outputs)], rtol, atol) per case, as BackendTest builds them."""
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.loader import load_model_tests
    if suite == "light":
        folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
        for fname in sorted(f for f in os.listdir(folder) if f.endswith(".onnx")):
            model = onnx.load(os.path.join(folder, fname))
            inits = {t.name for t in model.graph.initializer}
            inputs = []
            for vi in model.graph.input:
                if vi.name in inits:
                    continue
                shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
                n = int(np.prod(shape))
                inputs.append((np.arange(n).reshape(shape) / n).astype(np.float32))  # the runner's dummy input
            stem = os.path.join(folder, fname[:-len(".onnx")])
            outputs = [numpy_helper.to_array(onnx.load_tensor(f"{stem}_output_{k}.pb"))
                       for k in range(len(model.graph.output))]
            yield fname[:-len(".onnx")], model, [(inputs, outputs)], 1e-3, 1e-7
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind=suite)
    for case in sorted(cases, key=lambda c: c.name):
        if case.model is not None and case.data_sets is not None:
            sets = [([numpy_helper.to_array(i) if isinstance(i, onnx.TensorProto) else i for i in ins],
                     [numpy_helper.to_array(o) if isinstance(o, onnx.TensorProto) else o for o in outs])
                    for ins, outs in case.data_sets]
            yield case.name, case.model, sets, case.rtol, case.atol
            continue
        model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
        sets = []
        for d in sorted(os.listdir(case.model_dir)):
            if not d.startswith("test_data_set"):
                continue
            path = os.path.join(case.model_dir, d)
            def read(prefix, path=path):
                files = sorted((f for f in os.listdir(path) if f.startswith(prefix)),
                               key=lambda f: int(f[len(prefix):-3]))
                return [numpy_helper.to_array(onnx.load_tensor(os.path.join(path, f))) for f in files]
            sets.append((read("input_"), read("output_")))
        yield case.name, model, sets, case.rtol, case.atol


def _compare(outs, expected, rtol, atol) -> Optional[str]:
    if len(outs) != len(expected):
        return f"{len(outs)} outputs, expected {len(expected)}"
    for k, (o, e) in enumerate(zip(outs, expected)):
        if isinstance(e, (list, tuple, dict)):
            return f"output {k}: expected a {type(e).__name__}"
        o, e = np.asarray(o), np.asarray(e)
        if o.shape != e.shape:
            return f"output {k}: shape {o.shape}, expected {e.shape}"
        if o.dtype != e.dtype:
            return f"output {k}: dtype {o.dtype}, expected {e.dtype}"
        try:
            np.testing.assert_allclose(o, e, rtol=rtol, atol=atol)
        except AssertionError as exc:
            return f"output {k}: " + " ".join(str(exc).split())[:300]
    return None


def run_case(suite: str, name: str, model, data_sets, rtol, atol, backend=None) -> Result:
    from graphc.interop import onnx_backend
    from graphc.ir.errors import GraphError
    op = primary_op(name, model) if suite == "node" else ""
    start = time.perf_counter()

    def done(status, detail):
        return Result(suite, name, op, status, detail, time.perf_counter() - start)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = onnx_backend.prepare(model, "CPU", backend=backend)
    except GraphError as exc:
        return done("refused", str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash is what this classifies
        return done("crash", f"prepare: {type(exc).__name__}: {exc}")
    for inputs, expected in data_sets:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outs = list(rep.run(inputs))
        except Exception as exc:  # noqa: BLE001
            return done("crash", f"run: {type(exc).__name__}: {exc}")
        problem = _compare(outs, expected, rtol, atol)
        if problem:
            return done("wrong", problem)
    return done("pass", "")


def run(suites=SUITES, backend=None, pattern: Optional[str] = None, progress: bool = False) -> list:
    results = []
    for suite in suites:
        for name, model, sets, rtol, atol in _load_cases(suite):
            if pattern and not re.search(pattern, name):
                continue
            r = run_case(suite, name, model, sets, rtol, atol, backend)
            results.append(r)
            if progress and r.status in ("wrong", "crash"):
                print(f"{r.status.upper():7s} {suite}/{name}: {r.detail[:300]}", file=sys.stderr, flush=True)
    return results


REFUSAL_REASONS = [  # (label, pattern in the GraphError): the first match names the reason
    ("element type", r"element type|float16|bfloat16|float8|string|not a tensor"),
    ("op not supported", r"is not supported by graphc's importer|domain .* is not supported|subgraph|"
                         r"is not available in this graphc"),
    ("op version", r"\(the version opset \d+ selects\) is not supported|graphc imports opsets"),
    ("attribute", r"attribute|dilations|ceil_mode|auto_pad|select_last_index|mode=|training_mode|spatial=0|"
                  r"is_test|output .* is requested"),
    ("tensor rank", r"-d convolution|-d windows|batched MatMul|a \d-d kernel"),
    ("dtype of the values", r"needs a floating input|integer division|of (u?int|bool)\d* values|different dtypes|"
                            r"Pow of|Conv of|pooling of"),
    ("dynamic shape / static input", r"known only|needs it when importing|batch|dynamic|constant"),
]


def refusal_reason(detail: str) -> str:
    for label, pattern in REFUSAL_REASONS:
        if re.search(pattern, detail):
            return label
    return "other"


def summary(results: list) -> dict:
    by = defaultdict(Counter)
    for r in results:
        by[r.suite][r.status] += 1
    return {s: dict(c, total=sum(c.values())) for s, c in by.items()}


def op_table(results: list, supported: Iterable[str]) -> list:
    """Rows (op, passed, refused, wrong, crash, total, refusal reasons) for the node tests of each
    supported op, then one row for all other ops together."""
    supported = set(supported)
    rows, other = [], Counter()
    per_op = defaultdict(list)
    for r in results:
        if r.suite == "node":
            per_op[r.op].append(r)
    for op in sorted(per_op):
        rs = per_op[op]
        if not op:
            other.update(Counter(r.status for r in rs))
            continue
        c = Counter(r.status for r in rs)
        if op not in supported:
            other.update(c)
            continue
        reasons = Counter(refusal_reason(r.detail) for r in rs if r.status == "refused")
        rows.append((op, c["pass"], c["refused"], c["wrong"], c["crash"], len(rs),
                     ", ".join(f"{k} {v}" for k, v in reasons.most_common())))
    rows.append(("(other ops)", other["pass"], other["refused"], other["wrong"], other["crash"],
                 sum(other.values()), "op not supported (passes: function ops spelled out in supported ones)"))
    return rows


def markdown(results: list, supported: Iterable[str]) -> str:
    lines = ["| suite | passed | refused | wrong | crashed | total |", "|---|---|---|---|---|---|"]
    for suite, c in summary(results).items():
        lines.append(f"| {suite} | {c.get('pass', 0)} | {c.get('refused', 0)} | {c.get('wrong', 0)} | "
                     f"{c.get('crash', 0)} | {c['total']} |")
    lines += ["", "| op | passed | refused | total | refusals (reason: count) |", "|---|---|---|---|---|"]
    for op, p, ref, w, cr, tot, reasons in op_table(results, supported):
        extra = "" if not (w or cr) else f" (wrong {w}, crashed {cr})"
        lines.append(f"| {op} | {p} | {ref}{extra} | {tot} | {reasons} |")
    return "\n".join(lines)


def light_model_with_random_weights(name: str = "resnet50", seed: int = 0):
    """A light_* network with He-scaled random weights in place of its constant fills (the shipped
    weights are all 0.02: every logit is equal and every cross-entropy input gradient is zero).
    Batch norms get scale 0.5, bias 0, mean 0, variance 1. Returns an onnx.ModelProto."""
    import onnx
    from onnx import numpy_helper
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    proto = onnx.load(path)
    shapes = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    bn_inputs = {n.input[k]: k for n in proto.graph.node if n.op_type == "BatchNormalization" for k in range(1, 5)}
    rng = np.random.default_rng(seed)
    kept = []
    for node in proto.graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        role = bn_inputs.get(node.output[0])
        if role is not None:
            value = [np.full(shape, 0.5), np.zeros(shape), np.zeros(shape), np.ones(shape)][role - 1]
        else:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(int(np.prod(shape[1:])), 1))
        proto.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    proto.ir_version = max(proto.ir_version, 7)  # initializers need not be graph inputs from IR 4 on
    return proto


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m graphc.tools.onnx_conformance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default=",".join(SUITES), help=f"comma-separated, of {', '.join(SUITES)}")
    p.add_argument("--backend", default=None, help="graphc backend: c or numpy (default GRAPHC_BACKEND)")
    p.add_argument("-k", "--pattern", default=None, help="only cases whose name matches this regex")
    p.add_argument("--markdown", action="store_true", help="print the README tables")
    p.add_argument("--json", default=None, help="write every case's result to this file")
    p.add_argument("--show", default="wrong,crash", help="statuses whose cases are listed (default wrong,crash)")
    args = p.parse_args(argv)
    import graphc
    from graphc.interop.onnx import SUPPORTED_OPS
    start = time.perf_counter()
    results = run([s.strip() for s in args.suite.split(",") if s.strip()], args.backend, args.pattern,
                  progress=True)
    elapsed = time.perf_counter() - start
    import onnx
    print(f"graphc {graphc.__version__} backend {graphc.backends.resolve(args.backend)}, onnx {onnx.__version__}; "
          f"{len(results)} cases in {elapsed:.1f} s")
    for suite, c in summary(results).items():
        secs = sum(r.seconds for r in results if r.suite == suite)
        print(f"  {suite:18s} pass {c.get('pass', 0):5d}  refused {c.get('refused', 0):5d}  wrong "
              f"{c.get('wrong', 0):3d}  crash {c.get('crash', 0):3d}  total {c['total']:5d}  ({secs:.1f} s)")
    show = {s.strip() for s in args.show.split(",")}
    for r in results:
        if r.status in show:
            print(f"{r.status:8s} {r.suite}/{r.name} [{r.op}]: {r.detail[:400]}")
    if args.markdown:
        print()
        print(markdown(results, SUPPORTED_OPS))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=1)
    return 0 if not any(r.status in ("wrong", "crash") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
