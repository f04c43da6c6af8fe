"""compile() and Function: check feeds, specialise a Plan per shape signature, run it."""
from __future__ import annotations

import gc
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from .. import backends
from ..ir.errors import GraphError, fmt_shape, node_error, user_source
from ..ir.graph import reachable
from ..ir.tensor import Tensor, constant, placeholder_exists
from ..ops import REGISTRY, memory_traits
from .passes import DEFAULT_PASSES, run_pipeline
from .schedule import Plan, make_plan, plan_arena

if TYPE_CHECKING:
    from .profile import Profile


class Function:
    """A compiled graph. Call it with the placeholders' values as keyword arguments.

    It returns a list of NumPy arrays in the order of `outputs` (a single array when compile()
    was given one Tensor); they are the caller's: an array returned earlier is never written
    again while anything still references it (the C backend reuses only output buffers the
    caller has dropped, and keeps up to two per output, plus the arena of a plan up to 16 MiB;
    it also holds the last call's feed arrays until the next call, to reuse their pointers).
    One Plan is built and cached per signature of feed and parameter shapes; a call with the
    last signature's dtypes and C-contiguous arrays takes a short path (see _fast_call)."""

    def __init__(self, outputs: Union[Tensor, Sequence[Tensor]], backend: Optional[str] = None,
                 updates: Optional[dict] = None, passes: Optional[Sequence[str]] = None, optimize: bool = True,
                 check_finite: Optional[bool] = None):
        self._single = isinstance(outputs, Tensor)
        if not self._single and not isinstance(outputs, (list, tuple)):
            raise GraphError(f"compile() takes a Tensor or a list of Tensors, got {type(outputs).__name__}")
        if updates is not None and not isinstance(updates, dict):
            raise GraphError(f"compile(updates=...) takes a dict {{parameter: new value Tensor}}, "
                             f"got {type(updates).__name__}")
        self.outputs = [outputs] if self._single else list(outputs)
        self.updates = list((updates or {}).items())
        if not self.outputs and not self.updates:
            raise GraphError("compile() needs at least one output Tensor")
        for o in self.outputs:
            if not isinstance(o, Tensor):
                raise GraphError(f"compile() outputs must be graphc Tensors, got {type(o).__name__}")
        for p, new in self.updates:
            if not isinstance(p, Tensor) or p.op != "parameter":
                raise GraphError(f"updates keys must be parameters, got {p!r}")
            if not isinstance(new, Tensor):
                raise GraphError(f"the update of {p!r} must be a Tensor, got {type(new).__name__}")
            if new.dtype != p.dtype or (None not in new.shape and new.shape != p.shape):
                raise node_error(new, f"the update of parameter '{p.name}' has shape {new.shape} {new.dtype}, "
                                      f"but the parameter is {p.shape} {p.dtype}")
        self._all_outputs = self.outputs + [new for _, new in self.updates]
        if passes is not None and (isinstance(passes, str) or not isinstance(passes, (list, tuple, set, frozenset))
                                   or not all(isinstance(n, str) for n in passes)):
            raise GraphError(f"compile(passes=...) takes a list of pass names, e.g. ['cse', 'dce'], got {passes!r}")
        self.passes = tuple(DEFAULT_PASSES if passes is None else passes) if optimize else ()
        run_pipeline([], self.passes)  # validates the names now, not at the first call
        nodes = reachable(self._all_outputs)
        self.placeholders: list[Tensor] = []
        by_name: dict[str, Tensor] = {}
        for n in nodes:
            if n.op == "placeholder":
                if n.name in by_name:
                    raise node_error(n, f"two different placeholders are named '{n.name}' "
                                        f"(the other was created at {by_name[n.name].source})")
                by_name[n.name] = n
                self.placeholders.append(n)
        self.parameters = [n for n in nodes if n.op == "parameter"]
        if check_finite is not None and not isinstance(check_finite, (bool, np.bool_)):
            raise GraphError(f"compile(check_finite=...) takes True, False or None, got {check_finite!r}")
        if check_finite is None:
            check_finite = os.environ.get("GRAPHC_CHECK_FINITE", "0") not in ("", "0", "false", "no")
        self.check_finite = bool(check_finite)
        self.backend = backends.resolve(backend)
        # check_finite inspects every node's value, so it runs the plan step by step on NumPy.
        self._runner = backends.runner("numpy" if self.check_finite else self.backend)
        self._plans: dict[tuple, Any] = {}
        self._last_plan: Optional[Plan] = None
        self._fast = None  # the call path of the last signature (see _fast_call)
        self._lock = threading.Lock()

    def __reduce__(self):
        """A Function pickles as its graph and options; its plans are rebuilt where it is unpickled.
        The graph's nodes go first, in creation order, so that pickling recurses once per node
        (every input is already pickled) instead of once per level of a deep graph."""
        outputs = self.outputs[0] if self._single else self.outputs
        return _unpickle_function, (reachable(self._all_outputs), outputs, self.updates, self.backend, self.passes,
                                    self.check_finite)

    # -- calling -----------------------------------------------------------------------------
    def __call__(self, *args, **feeds):
        fast = self._fast
        if fast is not None and not args:
            outs = fast(feeds)
            if outs is not None:
                return outs
        arrays = self._check_feeds(self._feed_dict(args, feeds))
        params = [self._param_value(p) for p in self.parameters]
        key = tuple(a.shape for a in arrays) + tuple(v.shape for v in params)
        entry = self._plans.get(key)
        if entry is None:
            with self._lock:
                entry = self._plans.get(key) or self._specialize(key, arrays, params)
        self._last_plan = entry[0]
        self._fast = self._fast_call(entry, key)
        return self._finish(entry[1](arrays, params))

    @staticmethod
    def _feed_dict(args: tuple, feeds: dict) -> dict:
        """The feeds by placeholder name: f(x=X) or f({x: X}) (placeholders or their names)."""
        if not args:
            return feeds
        if len(args) == 1 and isinstance(args[0], dict):
            return {**{(k.name if isinstance(k, Tensor) else k): v for k, v in args[0].items()}, **feeds}
        raise GraphError("call a compiled Function with keyword arguments, e.g. f(x=X, y=Y), "
                         "or with one dict {placeholder: value}")

    def profile(self, *args, repeats: int = 20, **feeds) -> Profile:
        """Where a call's time goes: each plan step's time (mean over `repeats` calls, timed
        inside the C interpreter per instruction, or per step on NumPy) beside the wall time of a
        call through the usual path (median over `repeats` calls). Feeds as for a call. Every
        profiled call is a real one: with `updates=`, 2 * repeats + 1 steps are taken.

            print(f.profile(x=X, y=Y))   # the table; .rows, .call_seconds, ... hold the numbers
        """
        from .profile import profile_function
        return profile_function(self, args, feeds, repeats)

    def _finish(self, outs: list):
        if self.updates:  # every output was computed from the old values; now commit the new ones
            n = len(self.outputs)
            for (p, _), value in zip(self.updates, outs[n:]):
                p.value = value
            outs = outs[:n]
        return outs[0] if self._single else outs

    def _fast_call(self, entry, key):
        """The call path of one signature, taken while calls keep matching it: every feed and
        parameter is an ndarray of exactly the dtype, shape and C-contiguous strides of `key`
        (so nothing needs converting) and no extra feed is given. Anything else returns None and
        the full path (conversions, messages, another plan) handles the call. Alignment is checked
        once per array object; the objects of the last call are remembered for that."""
        plan, run = entry
        # np.dtype(char) is NumPy's shared instance, the one new arrays carry (checked with `is`)
        specs = [(p.name, np.dtype(p.dtype.char), shape, _c_strides(shape, p.dtype))
                 for p, shape in zip(self.placeholders, key)]
        pspecs = [(p, np.dtype(p.dtype.char), shape, _c_strides(shape, p.dtype))
                  for p, shape in zip(self.parameters, key[len(self.placeholders):])]
        seen = [None] * (len(specs) + len(pspecs))  # arrays already found aligned
        ns = {"_nd": np.ndarray, "_seen": seen, "_run": run, "_finish": self._finish, "_self": self, "_plan": plan}
        # Generated with the checks unrolled: at a few microseconds per call, the loops' and
        # tuple unpacking's overhead was as large as the checks themselves.
        lines = ["def fast(feeds):", f"    if len(feeds) != {len(specs)}:", "        return None"]

        def check(i, var, getter, dtype, shape, strides):
            ns.update({f"_d{i}": dtype, f"_s{i}": shape, f"_t{i}": strides})
            return [f"    {var} = {getter}",
                    f"    if type({var}) is not _nd or {var}.dtype is not _d{i} or {var}.shape != _s{i} or "
                    f"{var}.strides != _t{i}:",
                    "        return None",
                    f"    if {var} is not _seen[{i}]:",
                    f"        if not {var}.flags.aligned:",
                    "            return None",
                    f"        _seen[{i}] = {var}"]

        for i, (name, dtype, shape, strides) in enumerate(specs):
            ns[f"_n{i}"] = name
            lines += check(i, f"v{i}", f"feeds.get(_n{i})", dtype, shape, strides)
        for j, (param, dtype, shape, strides) in enumerate(pspecs):
            i = len(specs) + j
            ns[f"_p{j}"] = param
            lines += check(i, f"v{i}", f"_p{j}.value", dtype, shape, strides)
        feeds_list = "[" + "".join(f"v{i}, " for i in range(len(specs))) + "]"
        params_list = "[" + "".join(f"v{len(specs) + j}, " for j in range(len(pspecs))) + "]"
        lines += ["    _self._last_plan = _plan", f"    return _finish(_run({feeds_list}, {params_list}))"]
        exec("\n".join(lines), ns)  # noqa: S102 - source built above from integers and names only
        return ns["fast"]

    def _check_feeds(self, feeds: dict) -> list:
        names = {p.name for p in self.placeholders}
        # a feed dict may serve several Functions of one graph (loss and predictions): extra feeds
        # that name a placeholder the program created are ignored; any other name is a typo
        extra = sorted((k for k in set(feeds) - names if not placeholder_exists(k)), key=str)
        if extra:
            raise GraphError(f"unexpected feed(s) {extra}: no placeholder has that name; this function's "
                             f"placeholders are {sorted(names)} (called at {user_source()})")
        arrays = []
        for p in self.placeholders:
            if p.name not in feeds:
                raise node_error(p, f"missing feed '{p.name}' (called at {user_source()})")
            arrays.append(_check_feed(p, feeds[p.name]))
        return arrays

    @staticmethod
    def _param_value(p: Tensor) -> np.ndarray:
        v = p.value
        if type(v) is not np.ndarray or v.dtype != p.dtype:
            try:
                v = np.asarray(v)
            except Exception:  # noqa: BLE001
                raise node_error(p, f"parameter value must be an array, got {type(p.value).__name__}") from None
            if v.dtype.kind not in "fiub":
                raise node_error(p, f"parameter value must be a numeric array, got {v.dtype}")
            v = v.astype(p.dtype)
            p.value = v
        if not v.flags.c_contiguous or not v.flags.aligned:  # misaligned: UB in the C kernels
            v = np.require(v, requirements=("C_CONTIGUOUS", "ALIGNED"))
        return v

    # -- specialisation --------------------------------------------------------------------------
    def _specialize(self, key, arrays, params):
        # Compiling allocates a few container objects per node (clones, pass rewrites, plan, code),
        # and most live until it ends, so the cyclic GC runs full collections in the middle: each
        # walks every object of the process (e.g. ~100 ms at 10,000 nodes with torch imported),
        # which made compile time grow faster than the graph. Graphs are acyclic (a node refers
        # only to its inputs): the collector is paused for the compile, and runs as usual after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            concrete = specialize(self._all_outputs, self.placeholders, arrays, self.parameters, params)
            concrete = run_pipeline(concrete, self.passes)
            index = {p.id: k for k, p in enumerate(self.placeholders)}
            index.update({p.id: k for k, p in enumerate(self.parameters)})
            plan = make_plan(concrete, index)
            plan.compile_seconds = time.perf_counter() - start
            plan.check_finite = self.check_finite
            entry = (plan, self._runner(plan))
        finally:
            if gc_was_enabled:
                gc.enable()
        self._plans[key] = entry
        return entry

    def __repr__(self) -> str:
        outs = ", ".join(f"{o.op}{list(o.shape)}" for o in self.outputs)
        ups = f", updates {len(self.updates)} parameter(s)" if self.updates else ""
        return (f"<Function [{outs}] of placeholders {[p.name for p in self.placeholders]}{ups}; backend "
                f"{self.backend}, {len(self._plans)} plan(s) compiled>")

    # -- reports -----------------------------------------------------------------------------
    def arena_options(self, plan: Optional[Plan] = None) -> dict:
        """How this Function's plans are laid out in memory (see schedule.plan_arena)."""
        plan = plan or self._last_plan
        external = {s for s, _ in plan.feeds} | {s for s, _ in plan.params} | {s for s, _ in plan.constants}
        inplace_ops, aliasing = memory_traits()
        return dict(reuse=True, inplace_ops=inplace_ops, aliasing=aliasing, external=external | set(plan.outputs))

    def explain(self) -> Explanation:
        """The plan of the most recent call: steps in order with op, shapes, fused groups and the
        source lines of the nodes they came from; arena bytes vs one buffer per intermediate;
        compile time. Returns the report as a string that also displays as the report at the
        prompt (print(f.explain()) works the same)."""
        plan = self._last_plan
        if plan is None:
            return Explanation("(not called yet: the plan is built for the shapes of the first call)")
        arena = plan_arena(plan, **self.arena_options(plan))
        lines = [f"Plan: {len(plan.steps)} steps, backend {self.backend}, passes {', '.join(self.passes) or 'none'}; "
                 f"compiled in {plan.compile_seconds * 1e3:.1f} ms",
                 f"  arena: {arena.nbytes:,} bytes with liveness reuse vs {arena.naive_bytes:,} naive "
                 f"({len(arena.inplace)} in-place steps)"]
        run = next((r for p, r in self._plans.values() if p is plan), None)
        notes = getattr(getattr(run, "lowered", None), "step_notes", dict)()  # the C backend's
        for k, step in enumerate(plan.steps):
            n = step.node
            ins = ", ".join(f"%{s}" for s in step.inputs)
            if n.op == "fused_elementwise":
                attrs = " [" + "; ".join(i[0] for i in n.attrs["program"] if i[0] != "const") + "]"
            else:
                attrs = "".join(f" {a}={v}" for a, v in n.attrs.items() if a not in ("shape", "dtype"))
            where = n.source.replace("; ", "\n" + " " * 10 + "# ") if "; " in n.source else n.source
            lines.append(f"  {k:4d}  %{step.out} = {n.op}({ins}){attrs} -> {fmt_shape(n.shape)} {n.dtype}   # {where}")
            if k in notes:
                lines.append(f"          ({notes[k]})")
        lines.append("  outputs: " + ", ".join(f"%{s}" for s in plan.outputs))
        return Explanation("\n".join(lines))


class Explanation(str):
    """Function.explain()'s report: a str whose repr is the report itself, so it reads at the prompt."""

    def __repr__(self) -> str:
        return str(self)


def _unpickle_function(nodes, outputs, updates, backend, passes, check_finite) -> Function:
    return Function(outputs, backend=backend, updates=dict(updates) or None, passes=passes,
                    check_finite=check_finite)


def specialize(outputs, placeholders, arrays, parameters, params) -> list[Tensor]:
    """Clone the graph with every shape made concrete for these feeds and parameter values.

    Shape rules run again on the real sizes, so a mismatch known only now (e.g. two batch sizes)
    is reported against the node and source line that created it."""
    leaf_shape = {p.id: a.shape for p, a in zip(placeholders, arrays)}
    leaf_shape.update({p.id: v.shape for p, v in zip(parameters, params)})
    clone: dict[int, Tensor] = {}
    for node in reachable(outputs):
        if node.op in ("placeholder", "parameter"):
            new = Tensor(node.op, (), {"origin": node.id}, leaf_shape[node.id], node.dtype, node.name, node.source)
        elif node.op == "constant":
            new = node
        else:
            ins = [clone[i.id] for i in node.inputs]
            if REGISTRY[node.op].same_shape_identity and ins[0].shape == ins[1].shape:
                clone[node.id] = ins[0]
                continue
            try:
                shape, dtype = REGISTRY[node.op].infer(ins, **node.attrs)
            except GraphError as exc:
                probe = Tensor(node.op, ins, node.attrs, (), np.float64, node.name, node.source)
                raise node_error(probe, str(exc)) from None
            if node.op == "size_of":  # sizes are known now: fold to a constant
                axes = node.attrs["axes"] if node.attrs["axes"] is not None else range(len(ins[0].shape))
                new = constant(np.prod([ins[0].shape[a] for a in axes]), dtype=dtype)
            else:
                new = Tensor(node.op, ins, node.attrs, shape, dtype, node.name, node.source)
        clone[node.id] = new
    return [clone[o.id] for o in outputs]


_DLPACK_CPU = (1, 3)  # kDLCPU, kDLCUDAHost (pinned host memory): readable by the CPU in place


def _from_dlpack(value, what: str) -> np.ndarray:
    """A NumPy view of an array from another library (PyTorch, JAX, CuPy, ...) through DLPack:
    CPU memory is read in place (a copy is made later only where dtype or layout need one)."""
    kind = type(value).__name__
    try:
        device = value.__dlpack_device__() if hasattr(value, "__dlpack_device__") else (1, 0)
    except Exception as exc:  # noqa: BLE001 - a foreign library's own error, reported as a feed error
        raise GraphError(f"{what} ({kind}) does not say where its data lives: {exc}") from None
    if int(device[0]) not in _DLPACK_CPU:
        raise GraphError(f"{what} is a {kind} on device {device[0]!s}:{device[1]}; graphc runs on the CPU: move it "
                         f"there first (PyTorch: x.cpu(); JAX: jax.device_get(x); CuPy: x.get())")
    if getattr(value, "requires_grad", False):
        raise GraphError(f"{what} is a {kind} that requires grad; pass x.detach() (graphc computes gradients "
                         f"with gc.grad on its own graph)")
    try:
        return np.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise GraphError(f"{what} ({kind}) cannot be read through DLPack: {exc} (convert it to a NumPy-compatible "
                         f"dtype, e.g. float32, first)") from None


def convert_array(value, want: np.dtype, what: str) -> np.ndarray:
    """`value` (an array, a list, a scalar) as a NumPy array of dtype `want`, by ONE rule for every
    way data enters graphc (feeds, gc.train, the attacks, gradcheck): NumPy's "same_kind" casting.

    Accepted: any conversion within a kind or up the ladder bool -> int -> float (float64 ->
    float32 rounds; int -> float is exact for the values models see). Refused, with the reason: a
    change of kind that would lose meaning (floats to an integer placeholder truncate; negative or
    fractional labels). Raises GraphError naming `what`; the caller adds the node and source line.
    """
    if isinstance(value, Tensor):
        raise GraphError(f"{what} must be an array, not a symbolic Tensor")
    if not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__"):  # torch/JAX/CuPy arrays, in place
        value = _from_dlpack(value, what)
    if isinstance(value, np.ma.MaskedArray):
        raise GraphError(f"{what} is a masked array; graphc would ignore its mask: pass value.filled(...) or "
                         f"value.data")
    raw = value
    if type(value) is not np.ndarray:  # lists, scalars, np.matrix & co. (which change what * means)
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise GraphError(f"{what} cannot be converted to {want}: {exc}") from None
    if value.dtype.kind not in "fiub":
        raise GraphError(f"{what} cannot be converted to {want}: a {type(raw).__name__} of {value.dtype} values "
                         f"is not numeric")
    have = value.dtype.newbyteorder("=")  # a byte-swapped ('>f4') array holds the same values
    if have != want and not np.can_cast(have, want, casting="same_kind"):
        why = ("floats would be truncated to integers" if have.kind == "f" and want.kind in "iub" else
               "it would change the kind of the values")
        raise GraphError(f"{what} has dtype {have} but {want} is expected: {why} (NumPy's 'same_kind' rule); "
                         f"convert it explicitly, e.g. value.astype(np.{want}), if that is what you mean")
    return value


def _c_strides(shape, dtype) -> tuple:
    """The strides NumPy gives a new C-contiguous array of this shape."""
    if 0 in shape:  # NumPy's choice for empty arrays varies; they cost nothing to allocate
        return np.empty(shape, dtype).strides
    strides, step = [], dtype.itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _check_feed(p: Tensor, value) -> np.ndarray:
    """Validate one feed against its placeholder: dtype (convert_array's rule), rank, fixed sizes."""
    try:
        value = convert_array(value, p.dtype, f"feed '{p.name}'")
    except GraphError as exc:
        raise node_error(p, str(exc)) from None
    want = p.dtype
    if value.ndim != len(p.shape):
        raise node_error(p, f"feed '{p.name}' has shape {value.shape} but the placeholder has "
                            f"{len(p.shape)} dimension(s), {fmt_shape(p.shape)}")
    for got, exp in zip(value.shape, p.shape):
        if exp is not None and got != exp:
            raise node_error(p, f"feed '{p.name}' has shape {value.shape}, expected {fmt_shape(p.shape)}")
    if value.dtype != want or not value.flags.c_contiguous or not value.flags.aligned:
        need = value.size * want.itemsize
        if need > _available_memory():  # e.g. a huge zero-stride view: say so before the OOM killer does
            raise node_error(p, f"feed '{p.name}' of shape {value.shape} needs a contiguous {want} copy of "
                                f"{need:,} bytes, more than this machine has available")
        try:  # the kernels read native, aligned, C-contiguous memory (ascontiguousarray alone keeps
            # a contiguous but misaligned array as it is: undefined behaviour in the C kernels)
            value = np.require(value, dtype=want, requirements=("C_CONTIGUOUS", "ALIGNED"))
        except MemoryError:
            raise node_error(p, f"feed '{p.name}' of shape {value.shape} needs a contiguous {want} copy of "
                                f"{need:,} bytes, more than can be allocated") from None
    return value


def _available_memory() -> int:
    """Bytes of memory available now (Linux /proc/meminfo; elsewhere, no limit is assumed)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def compile(outputs: Union[Tensor, Sequence[Tensor]], backend: Optional[str] = None,  # noqa: A001
            updates: Optional[dict] = None, passes: Optional[Sequence[str]] = None,
            optimize: bool = True, check_finite: Optional[bool] = None) -> Function:
    """Compile output Tensors into a callable Function; placeholders are found automatically.

    backend: "auto" (C when built, else NumPy), "c" or "numpy"; default from GRAPHC_BACKEND.
    updates: {parameter: new_value_tensor}; after each call every such parameter's `.value` is
    replaced by the new value (all computed from the old values), so one call can do forward,
    backward and an optimiser step.
    passes: the compiler passes to run (default: graphc.passes.DEFAULT_PASSES, in pipeline
    order); optimize=False runs none (for debugging).
    check_finite: stop at the first node, forward or backward, that makes a NaN or inf from
    finite inputs, and report its op, source line and input ranges (default: the
    GRAPHC_CHECK_FINITE environment variable). It runs the plan step by step on NumPy."""
    return Function(outputs, backend=backend, updates=updates, passes=passes, optimize=optimize,
                    check_finite=check_finite)
