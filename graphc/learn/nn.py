"""Neural-network layers and ready models that build graphc graphs.

A model is a callable that turns an input Tensor into a logits Tensor; its weights are
`gc.parameter` Tensors, so gradients, optimisers and attacks work on the same graph:

    >>> import numpy as np, graphc as gc
    >>> from graphc import nn
    >>> model = nn.MLP([64, 128, 10], seed=0)
    >>> x = gc.placeholder("x", (None, 64))
    >>> logits = model(x)                       # (None, 10) Tensor
    >>> f = gc.compile(logits)
    >>> f(x=np.zeros((2, 64), np.float32)).shape
    (2, 10)
    >>> [p.name for p in model.parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']

`model(x, training=True, seed=seed_tensor)` builds the training graph (dropout active, its mask
drawn from the integer seed, which the Trainer feeds anew every step); `training=False` (the
default) builds the evaluation graph.

Models save to `.npz` (no pickle) with their architecture, and load back with
`nn.Module.load(path)`; `model.load_weights(path)` loads into an existing model, checking that
names and shapes agree. Saving writes a temporary file and renames it into place, so a crash
never leaves a half-written model behind.
"""
from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import zipfile
import zlib
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from .. import ops as F
from ..ir.errors import GraphError
from ..ir.tensor import Tensor, parameter

__all__ = ["manual_seed", "Module", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Reshape", "Dropout",
           "ReLU", "Softplus", "ELU", "GELU", "SiLU",
           "Sigmoid", "Tanh", "LeakyReLU", "Identity", "Sequential", "LogisticRegression", "SoftmaxRegression",
           "MLP", "SmallCNN", "ModelFileError", "he_normal", "xavier_uniform", "LAYERS"]

FORMAT = "graphc-model-v2"  # v2: Linear weights are (out, in); v1 files are converted on load
READABLE_FORMATS = ("graphc-model-v1", FORMAT)
LAYERS: dict = {}  # class name -> class, for rebuilding a saved architecture


class ModelFileError(GraphError):
    """A model file that cannot be loaded: not a graphc model, truncated, pickled, or mismatched.
    (A GraphError, hence a ValueError: every bad input to graphc raises one.)"""


def _fspath(path) -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ModelFileError(f"a model file path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _register(cls):
    LAYERS[cls.__name__] = cls
    return cls


# -- initialisers ------------------------------------------------------------------------------
def he_normal(shape: Sequence[int], fan_in: int, rng: np.random.Generator, dtype="float32") -> np.ndarray:
    """N(0, 2 / fan_in): keeps activation variance constant through ReLU layers (He et al. 2015)."""
    return (rng.standard_normal(tuple(shape)) * np.sqrt(2.0 / fan_in)).astype(dtype)


def xavier_uniform(shape: Sequence[int], fan_in: int, fan_out: int, rng: np.random.Generator,
                   dtype="float32") -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010), for tanh/sigmoid/linear."""
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=tuple(shape)).astype(dtype)


_SEEDS = [np.random.default_rng(0)]  # draws the seeds of layers built without one


def manual_seed(seed: int) -> None:
    """Restart the generator that seeds layers built without `seed=` (as torch.manual_seed).

    Every such layer draws its own seed from it, so two same-shape layers start different, and a
    program that builds its models in the same order gets the same weights on every run (the
    generator starts at seed 0 when graphc is imported)."""
    _SEEDS[0] = np.random.default_rng(int(seed))


def _seed(seed: Optional[int]) -> int:
    """The seed a layer uses: its own, or the next one from the manual_seed generator."""
    return int(_SEEDS[0].integers(0, 2**31 - 1)) if seed is None else int(seed)


def _init(init: str, shape, fan_in: int, fan_out: int, seed: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if init == "he":
        return he_normal(shape, fan_in, rng, dtype)
    if init == "xavier":
        return xavier_uniform(shape, fan_in, fan_out, rng, dtype)
    if init == "zeros":
        return np.zeros(shape, dtype)
    raise ValueError(f"unknown init {init!r}; choose 'he', 'xavier' or 'zeros'")


# -- base class ---------------------------------------------------------------------------------
class Module:
    """Base class: `forward(x, training, seed)` builds the graph; parameters are gc.parameter Tensors.

    Subclasses set `self._params` (name -> Tensor) and/or `self._children` (name -> Module), and
    `self._config` (the constructor arguments, JSON-serialisable) so the model can be rebuilt."""

    def __init__(self) -> None:
        self._params: dict[str, Tensor] = {}
        self._children: dict[str, Module] = {}
        self._config: dict[str, Any] = {}
        self._cache: dict = {}  # compiled Functions built on this model (Trainer, attacks)
        self.training = False  # model(x) builds the evaluation graph unless train() was called

    def __getstate__(self) -> dict:
        # Pickling (e.g. to a Dask worker) carries the architecture and weights, not the compiled
        # Functions: those hold plans and C handles, and are rebuilt on first use after unpickling.
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    # graph building
    def forward(self, x: Tensor, training: bool = False, seed: Union[Tensor, int, None] = None) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, training: Optional[bool] = None, seed: Union[Tensor, int, None] = None) -> Tensor:
        """Build the graph of this model on input `x`; returns the output (logits) Tensor.

        training: dropout active (True) or not (False); None follows the model's mode, set by
        train() / eval() (a new model is in eval mode; gc.train and the Trainer build their
        training graph explicitly, and predict/accuracy always evaluate with dropout off)."""
        if training is None:
            training = self.training
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} is called on a graphc Tensor (e.g. gc.placeholder), "
                            f"got {type(x).__name__}; use graphc.train.predict for arrays")
        return self.forward(x, training=training, seed=seed)

    # modes
    def train(self, mode: bool = True) -> Module:
        """Put this model and its layers in training mode (dropout active in graphs built by
        model(x)); returns the model, as torch.nn.Module.train does."""
        for m in self.modules():
            if m.training != bool(mode):
                m.training = bool(mode)
                m._cache.clear()  # compiled graphs of the other mode
        return self

    def eval(self) -> Module:
        """Put this model and its layers in evaluation mode (dropout off); returns the model."""
        return self.train(False)

    # parameters
    def named_parameters(self, prefix: str = "") -> list[tuple[str, Tensor]]:
        """(dotted name, parameter) pairs in a fixed order: own parameters, then children's."""
        out = [(prefix + k, p) for k, p in self._params.items()]
        for name, child in self._children.items():
            out += child.named_parameters(prefix + name + ".")
        return out

    def parameters(self) -> list[Tensor]:
        """The trainable gc.parameter Tensors (their `.value` holds the current weights)."""
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator[Module]:
        yield self
        for child in self._children.values():
            yield from child.modules()

    @property
    def uses_dropout(self) -> bool:
        return any(isinstance(m, Dropout) and m.p > 0 for m in self.modules())

    @property
    def dtype(self) -> np.dtype:
        ps = self.parameters()
        return ps[0].dtype if ps else np.dtype("float32")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the current weights by name."""
        return {k: np.array(p.value, copy=True) for k, p in self.named_parameters()}

    def load_state_dict(self, state: dict, source: str = "state dict") -> None:
        """Set the weights from {name: array}; names and shapes must match exactly."""
        named = dict(self.named_parameters())
        missing, extra = sorted(set(named) - set(state)), sorted(set(state) - set(named))
        if missing or extra:
            raise ModelFileError(f"{source}: parameter names do not match the model "
                                 f"(missing {missing}, unexpected {extra})")
        for k, p in named.items():
            v = np.asarray(state[k])
            if v.shape != p.shape:
                raise ModelFileError(f"{source}: parameter '{k}' has shape {v.shape}, the model expects {p.shape}")
            if v.dtype.kind != "f":
                raise ModelFileError(f"{source}: parameter '{k}' has non-float dtype {v.dtype}")
        for k, p in named.items():
            p.value = np.array(state[k], dtype=p.dtype, copy=True)

    def num_parameters(self) -> int:
        return int(sum(p.value.size for p in self.parameters()))

    # architecture
    def config(self) -> dict:
        """{"class": name, "args": constructor arguments} (JSON), enough to rebuild the model."""
        return {"class": type(self).__name__, "args": self._config}

    @staticmethod
    def from_config(cfg: dict) -> Module:
        cls = LAYERS.get(cfg.get("class")) if isinstance(cfg, dict) else None
        if cls is None:
            raise ModelFileError(f"unknown layer class in model file: {cfg!r}")
        args = dict(cfg.get("args", {}))
        try:  # the file may have been edited: its arguments are untrusted
            if cls is Sequential:
                return Sequential(*[Module.from_config(c) for c in args["layers"]])
            return cls(**args)
        except (TypeError, ValueError, KeyError, MemoryError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"model file holds invalid arguments for {cls.__name__}: "
                                 f"{type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items() if k != "layers")
        if self._children and isinstance(self, Sequential):
            inner = "\n".join(f"  ({k}): {c!r}".replace("\n", "\n  ") for k, c in self._children.items())
            return f"{type(self).__name__}(\n{inner}\n)"
        return f"{type(self).__name__}({args})"

    # files
    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write architecture and weights to `path` (.npz, no pickle), atomically.

        The archive is written to a temporary file in the same folder, flushed to disk, then
        renamed over `path`: readers see the old file or the new one, never half of one.

        >>> import tempfile, os
        >>> m = MLP([4, 8, 3]); p = os.path.join(tempfile.mkdtemp(), "m.npz"); _ = m.save(p)
        >>> Module.load(p).config() == m.config()
        True
        """
        path = _fspath(path)
        arrays = {"__format__": np.array(FORMAT), "__config__": np.array(json.dumps(self.config()))}
        named = dict(self.named_parameters())
        for k, v in self.state_dict().items():
            if v.dtype.kind != "f" or v.shape != named[k].shape:
                # checked before anything is written (an object array would even be pickled):
                # an existing file at `path` stays as it was
                raise ModelFileError(f"cannot save parameter '{k}': its value is {v.dtype} {v.shape}, "
                                     f"the model expects a float array of shape {named[k].shape}")
            arrays["param:" + k] = v
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".graphc-", suffix=".npz.tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a saved model is an ordinary file
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @staticmethod
    def _read(path) -> tuple[dict, dict, str]:
        path = _fspath(path)
        try:
            with open(path, "rb") as f:  # NumPy would try any non-zip, non-.npy bytes as a pickle
                head = f.read(6)
        except IsADirectoryError:
            raise ModelFileError(f"{path}: a directory, not a model file") from None
        if not head.startswith(b"PK") and not head.startswith(b"\x93NUMPY"):
            what = "a pickle, which can run code" if head[:1] == b"\x80" else "not a zip archive"
            raise ModelFileError(f"{path}: not a graphc model file ({what}; graphc saves .npz archives)")
        try:
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise ModelFileError(f"{path}: not a graphc model (.npz archive); found a bare .npy array")
                files = set(z.files)
                if "__format__" not in files or "__config__" not in files:
                    raise ModelFileError(f"{path}: not a graphc model file (no __format__/__config__ entries)")
                fmt = str(z["__format__"])
                if fmt not in READABLE_FORMATS:
                    raise ModelFileError(f"{path}: unsupported model format {fmt!r} (expected {FORMAT!r})")
                cfg = json.loads(str(z["__config__"]))
                state = {k[len("param:"):]: z[k] for k in z.files if k.startswith("param:")}
        except ModelFileError:
            raise
        except FileNotFoundError:
            raise
        except ValueError as exc:
            if "pickle" in str(exc):
                raise ModelFileError(f"{path}: refusing to load pickled data (graphc model files are "
                                     f"plain .npz archives; pickles can run code)") from None
            raise ModelFileError(f"{path}: not a valid graphc model file ({exc})") from None
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, json.JSONDecodeError, struct.error,
                zlib.error, NotImplementedError, RuntimeError, OverflowError, MemoryError) as exc:
            # a damaged archive reaches zipfile/numpy code paths that raise all of these (a flipped
            # flag bit reads as "encrypted" or "unsupported compression", a length as a huge shape)
            raise ModelFileError(f"{path}: corrupt or truncated model file ({type(exc).__name__}: {exc})") from None
        return cfg, state, fmt

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> Module:
        """Rebuild a saved model (architecture and weights) from `path`.

        Raises ModelFileError for a pickle, a truncated or foreign file, or weights whose names or
        shapes do not match the saved architecture. Called on a subclass (e.g. `MLP.load`), the
        file must hold that class."""
        cfg, state, fmt = cls._read(path)
        try:
            model = Module.from_config(cfg)
        except ModelFileError as exc:
            raise ModelFileError(f"{_fspath(path)}: {exc}") from None
        if cls is not Module and not isinstance(model, cls):
            raise ModelFileError(f"{os.fspath(path)} holds a {type(model).__name__}, not a {cls.__name__}")
        if fmt == "graphc-model-v1":
            state = _upgrade_v1_state(model, state)
        model.load_state_dict(state, source=_fspath(path))
        return model

    def load_weights(self, path: Union[str, os.PathLike]) -> Module:
        """Load weights saved from a model of the same architecture into this one (names and shapes checked)."""
        _, state, fmt = self._read(path)
        if fmt == "graphc-model-v1":
            state = _upgrade_v1_state(self, state)
        self.load_state_dict(state, source=os.fspath(path))
        return self


# -- layers ------------------------------------------------------------------------------------
@_register
class Linear(Module):
    """y = x Wᵀ + b with W of shape (out_features, in_features), PyTorch's layout (the transpose is
    a flag of the GEMM, not a copy), so a PyTorch state_dict converted to NumPy loads as it is.

    init: "he" (default; for ReLU nets), "xavier" (tanh/sigmoid/linear outputs) or "zeros"."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "he",
                 seed: Optional[int] = None, dtype: str = "float32"):
        super().__init__()
        seed = _seed(seed)
        self._config = dict(in_features=int(in_features), out_features=int(out_features), bias=bool(bias),
                            init=init, seed=int(seed), dtype=str(np.dtype(dtype)))
        # drawn as (in, out) and transposed: a seed gives the same network as before the layout change
        w = np.ascontiguousarray(_init(init, (in_features, out_features), in_features, out_features, seed, dtype).T)
        self.weight = self._params["weight"] = parameter(w, name="weight")
        self.bias = None
        if bias:
            self.bias = self._params["bias"] = parameter(np.zeros(out_features, dtype), name="bias")

    def forward(self, x, training=False, seed=None):
        y = F.matmul(x, self.weight, trans_b=True)
        return y + self.bias if self.bias is not None else y


def _upgrade_v1_state(model: Module, state: dict) -> dict:
    """graphc-model-v1 files stored Linear weights as (in, out); v2 stores (out, in) like PyTorch."""
    linear = {prefix + "weight" for prefix, m in _named_modules(model) if isinstance(m, Linear)}
    return {k: (np.ascontiguousarray(np.asarray(v).T) if k in linear and np.ndim(v) == 2 else v)
            for k, v in state.items()}


def _named_modules(model: Module, prefix: str = ""):
    yield prefix, model
    for name, child in model._children.items():
        yield from _named_modules(child, prefix + name + ".")


@_register
class Conv2d(Module):
    """2-d convolution on NCHW inputs; weight (out, in, k, k), He-initialised by default."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, bias: bool = True, init: str = "he", seed: Optional[int] = None,
                 dtype: str = "float32"):
        super().__init__()
        seed = _seed(seed)
        self._config = dict(in_channels=int(in_channels), out_channels=int(out_channels),
                            kernel_size=int(kernel_size), stride=int(stride), padding=int(padding), bias=bool(bias),
                            init=init, seed=int(seed), dtype=str(np.dtype(dtype)))
        k = int(kernel_size)
        shape = (out_channels, in_channels, k, k)
        w = _init(init, shape, in_channels * k * k, out_channels * k * k, seed, dtype)
        self.weight = self._params["weight"] = parameter(w, name="weight")
        self.bias = None
        if bias:
            self.bias = self._params["bias"] = parameter(np.zeros(out_channels, dtype), name="bias")
        self.stride, self.padding = int(stride), int(padding)

    def forward(self, x, training=False, seed=None):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


@_register
class MaxPool2d(Module):
    def __init__(self, kernel_size: int = 2, stride: Optional[int] = None, padding: int = 0):
        super().__init__()
        self._config = dict(kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x, training=False, seed=None):
        c = self._config
        return F.max_pool2d(x, c["kernel_size"], c["stride"], c["padding"])


@_register
class AvgPool2d(Module):
    def __init__(self, kernel_size: int = 2, stride: Optional[int] = None, padding: int = 0):
        super().__init__()
        self._config = dict(kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x, training=False, seed=None):
        c = self._config
        return F.avg_pool2d(x, c["kernel_size"], c["stride"], c["padding"])


@_register
class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x, training=False, seed=None):
        return F.flatten(x, 1)


@_register
class Reshape(Module):
    """Reshape each example: (N, *) -> (N, *shape); e.g. Reshape((1, 8, 8)) turns flat digits into images."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self._config = dict(shape=[int(d) for d in shape])

    def forward(self, x, training=False, seed=None):
        return F.reshape(x, (-1,) + tuple(self._config["shape"]))


@_register
class Dropout(Module):
    """Inverted dropout with probability p while training; the identity in evaluation graphs.

    The mask comes from `seed` (an int64 scalar placeholder the Trainer feeds each step, or an int)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)
        self._config = dict(p=self.p)

    def forward(self, x, training=False, seed=None):
        if not training or self.p == 0:
            return x
        return F.dropout(x, self.p, seed=0 if seed is None else seed)


def _activation(name):
    fn = {"relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "identity": lambda x: x}[name]

    class _Act(Module):
        def forward(self, x, training=False, seed=None):
            return fn(x)
    return _Act


@_register
class ReLU(_activation("relu")):
    pass


@_register
class Sigmoid(_activation("sigmoid")):
    pass


@_register
class Tanh(_activation("tanh")):
    pass


@_register
class Identity(_activation("identity")):
    pass


@_register
class LeakyReLU(Module):
    """x for x > 0, alpha·x otherwise (alpha 0.1 by default, as in the course material)."""

    def __init__(self, alpha: float = 0.1):
        super().__init__()
        self._config = dict(alpha=float(alpha))

    def forward(self, x, training=False, seed=None):
        return F.leaky_relu(x, self._config["alpha"])


@_register
class Softplus(Module):
    """log(1 + exp(beta·x)) / beta (x itself where beta·x > 20), as torch.nn.Softplus."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self._config = dict(beta=float(beta))

    def forward(self, x, training=False, seed=None):
        return F.softplus(x, self._config["beta"])


@_register
class ELU(Module):
    """x for x > 0, alpha·(exp(x) − 1) otherwise, as torch.nn.ELU."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self._config = dict(alpha=float(alpha))

    def forward(self, x, training=False, seed=None):
        return F.elu(x, self._config["alpha"])


@_register
class GELU(Module):
    """x·Φ(x) (approximate="none") or its tanh approximation (approximate="tanh"), as torch.nn.GELU."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise GraphError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self._config = dict(approximate=approximate)

    def forward(self, x, training=False, seed=None):
        return F.gelu(x, self._config["approximate"])


@_register
class SiLU(Module):
    """x·sigmoid(x), as torch.nn.SiLU."""

    def forward(self, x, training=False, seed=None):
        return F.silu(x)


ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU, "identity": Identity,
               "softplus": Softplus, "elu": ELU, "gelu": GELU, "silu": SiLU}


@_register
class Sequential(Module):
    """Layers applied in order; parameter names are '<index>.<name>' (e.g. '0.weight').

    Each child gets its own dropout seed (seed·64 + index), so two Dropout layers never share a mask."""

    def __init__(self, *layers: Module):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for k, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes graphc.nn modules, got {type(layer).__name__} at position {k}")
            self._children[str(k)] = layer
        self.layers = list(layers)
        for name, p in self.named_parameters():  # dotted names show up in graph drawings and errors
            p.name = name

    def config(self) -> dict:
        return {"class": "Sequential", "args": {"layers": [m.config() for m in self.layers]}}

    def forward(self, x, training=False, seed=None):
        for k, layer in enumerate(self.layers):
            child_seed = seed
            if training and isinstance(layer, (Dropout, Sequential)) and seed is not None:
                child_seed = seed * 64 + k
            x = layer(x, training=training, seed=child_seed)
        return x

    def __getitem__(self, k):
        return self.layers[k]

    def __len__(self):
        return len(self.layers)


# -- ready models --------------------------------------------------------------------------------
class _Wrapper(Sequential):
    """A Sequential whose config is its own constructor arguments (so it saves as e.g. 'MLP')."""

    def config(self) -> dict:
        return {"class": type(self).__name__, "args": self._args}


@_register
class LogisticRegression(Module):
    """Binary logistic regression p(y=1|x) = σ(wᵀx + b), as two-class logits [0, wᵀx + b].

    The constant 0 column makes softmax([0, z])₁ = σ(z), so softmax cross-entropy on these logits
    *is* the binary cross-entropy (negative log-likelihood) of logistic regression, and argmax is
    the rule z > 0. Everything built for multiclass logits (Trainer, attacks) therefore applies.
    The decision boundary is wᵀx + b = 0 (`boundary()` gives w and b).

    >>> import graphc as gc
    >>> m = LogisticRegression(2); x = gc.placeholder("x", (None, 2))
    >>> m(x).shape, m.decision_function(x).shape
    ((None, 2), (None,))
    """

    def __init__(self, in_features: int, seed: Optional[int] = None, dtype: str = "float32"):
        super().__init__()
        seed = _seed(seed)
        self._config = dict(in_features=int(in_features), seed=int(seed), dtype=str(np.dtype(dtype)))
        self.weight = self._params["weight"] = parameter(np.zeros((in_features, 1), dtype), name="weight")
        self.bias = self._params["bias"] = parameter(np.zeros(1, dtype), name="bias")

    def forward(self, x, training=False, seed=None):
        z = x @ self.weight + self.bias  # (N, 1)
        return F.concatenate([F.zeros_like(z), z], axis=1)

    def decision_function(self, x: Tensor) -> Tensor:
        """z = wᵀx + b, shape (N,); p(y=1|x) = σ(z)."""
        return F.reshape(x @ self.weight + self.bias, (-1,))

    def boundary(self) -> tuple[np.ndarray, float]:
        """(w, b) of the decision boundary wᵀx + b = 0."""
        return self.weight.value[:, 0].copy(), float(self.bias.value[0])


@_register
class SoftmaxRegression(_Wrapper):
    """Multiclass logistic regression: logits = x W + b (Xavier-initialised)."""

    def __init__(self, in_features: int, classes: int, seed: Optional[int] = None, dtype: str = "float32"):
        seed = _seed(seed)
        self._args = dict(in_features=int(in_features), classes=int(classes), seed=int(seed),
                          dtype=str(np.dtype(dtype)))
        super().__init__(Linear(in_features, classes, init="xavier", seed=seed, dtype=dtype))


@_register
class MLP(_Wrapper):
    """Fully connected network: sizes [in, hidden..., out], activation between layers, logits out.

    He initialisation for relu/leaky_relu, Xavier for sigmoid/tanh; layer k is seeded with seed + k.
    Optional dropout after each hidden activation.

    >>> MLP([64, 128, 10]).num_parameters()
    9610
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", seed: Optional[int] = None,
                 dropout: float = 0.0, dtype: str = "float32"):
        seed = _seed(seed)
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least [in, out] sizes, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self._args = dict(sizes=sizes, activation=activation, seed=int(seed), dropout=float(dropout),
                          dtype=str(np.dtype(dtype)))
        init = "he" if activation in ("relu", "leaky_relu") else "xavier"
        layers: list[Module] = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = k == len(sizes) - 2
            layers.append(Linear(a, b, init="xavier" if last else init, seed=seed + k, dtype=dtype))
            if not last:
                layers.append(ACTIVATIONS[activation]())
                if dropout > 0:
                    layers.append(Dropout(dropout))
        super().__init__(*layers)


@_register
class SmallCNN(_Wrapper):
    """Conv(3x3, pad 1) → ReLU → MaxPool(2) → Conv(3x3, pad 1) → ReLU → MaxPool(2) → Flatten → Linear.

    Takes (N, C, H, W) images, or flat rows when `flat_input=True` (they are reshaped to
    (C, H, W) first, so the same arrays as for an MLP can be fed). H and W must be divisible by 4.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 8, classes: int = 10,
                 channels: Sequence[int] = (16, 32), seed: Optional[int] = None, flat_input: bool = False,
                 dtype: str = "float32"):
        seed = _seed(seed)
        c1, c2 = (int(c) for c in channels)
        self._args = dict(in_channels=int(in_channels), image_size=int(image_size), classes=int(classes),
                          channels=[c1, c2], seed=int(seed), flat_input=bool(flat_input), dtype=str(np.dtype(dtype)))
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        s = image_size // 4
        layers: list[Module] = [Reshape((in_channels, image_size, image_size))] if flat_input else []
        layers += [Conv2d(in_channels, c1, 3, padding=1, seed=seed, dtype=dtype), ReLU(), MaxPool2d(2),
                   Conv2d(c1, c2, 3, padding=1, seed=seed + 1, dtype=dtype), ReLU(), MaxPool2d(2),
                   Flatten(), Linear(c2 * s * s, classes, init="xavier", seed=seed + 2, dtype=dtype)]
        super().__init__(*layers)


def build(name: str, in_features: int, classes: int, image_shape: Optional[tuple] = None, seed: int = 0,
          hidden: Sequence[int] = (128,), activation: str = "relu", dropout: float = 0.0) -> Module:
    """A model by name for the CLI: 'mlp', 'cnn', 'logreg' (binary) or 'softmax'; inputs are flat rows."""
    name = name.lower()
    if name == "mlp":
        return MLP([in_features, *hidden, classes], activation=activation, seed=seed, dropout=dropout)
    if name in ("softmax", "softmax_regression"):
        return SoftmaxRegression(in_features, classes, seed=seed)
    if name in ("logreg", "logistic", "logistic_regression"):
        if classes != 2:
            raise ValueError(f"logistic regression is binary; this dataset has {classes} classes (use 'softmax')")
        return LogisticRegression(in_features, seed=seed)
    if name == "cnn":
        if image_shape is None or image_shape[1] != image_shape[2]:
            raise ValueError("the cnn model needs square image data (digits or mnist)")
        return SmallCNN(image_shape[0], image_shape[1], classes, seed=seed, flat_input=True)
    raise ValueError(f"unknown model {name!r}; choose mlp, cnn, logreg or softmax")
