"""An Adversarial Robustness Toolbox (ART) classifier backed by a graphc model, so ART's attacks and
defences run on graphc models (pip install 'graphc[art]').

    >>> from graphc import nn, attacks
    >>> clf = attacks.art_classifier(nn.MLP([4, 8, 3]), input_shape=(4,), nb_classes=3)   # doctest: +SKIP
    >>> from art.attacks.evasion import FastGradientMethod                                 # doctest: +SKIP
    >>> x_adv = FastGradientMethod(clf, eps=0.1).generate(x)                               # doctest: +SKIP

predict returns logits; loss_gradient and compute_loss use the softmax cross-entropy; class_gradient
gives ∇ₓ z_k (all classes from one compiled call). Gradients are per example: row i is the gradient
of sample i's own loss, whatever else is in the batch.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ..ir.errors import GraphError
from ._common import class_gradients_fn, cross_entropy, gradient_oracle, logits

__all__ = ["art_classifier"]

_CLASS = None


def _labels(y, nb_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot (or scores): ART's usual format
        return y.argmax(1).astype(np.int64)
    return y.astype(np.int64)


def _adapter_class():
    """The ClassifierNeuralNetwork subclass, built on first use so that importing graphc never imports ART."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    try:
        from art.estimators.classification.classifier import ClassifierNeuralNetwork
    except ImportError as exc:
        raise ImportError("art_classifier needs the Adversarial Robustness Toolbox: pip install 'graphc[art]' "
                          "(or pip install adversarial-robustness-toolbox)") from exc

    class GraphcClassifier(ClassifierNeuralNetwork):
        """ART's view of a graphc model (see graphc.attacks.art_classifier)."""

        estimator_params = ClassifierNeuralNetwork.estimator_params + ["input_shape", "backend"]

        def __init__(self, model, input_shape: Sequence[int], nb_classes: int, clip_values=(0.0, 1.0),
                     channels_first: bool = True, preprocessing_defences=None, postprocessing_defences=None,
                     preprocessing=(0.0, 1.0), backend: Optional[str] = None):
            super().__init__(model=model, clip_values=clip_values, channels_first=channels_first,
                             preprocessing_defences=preprocessing_defences,
                             postprocessing_defences=postprocessing_defences, preprocessing=preprocessing)
            self._input_shape = tuple(int(d) for d in input_shape)
            self.nb_classes = int(nb_classes)
            self.backend = backend

        @property
        def input_shape(self) -> tuple:
            return self._input_shape

        @property
        def layer_names(self) -> list:
            layers = getattr(self._model, "layers", None)
            return None if layers is None else [f"{k}:{type(layer).__name__}" for k, layer in enumerate(layers)]

        def _x(self, x) -> np.ndarray:
            x = np.asarray(x)
            if tuple(x.shape[1:]) != self._input_shape:
                raise GraphError(f"art_classifier: inputs of shape {x.shape} do not match input_shape "
                                 f"{self._input_shape} (plus a batch axis)")
            return x.astype(self._model.dtype, copy=False)

        def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs) -> np.ndarray:
            x_pre, _ = self._apply_preprocessing(x, y=None, fit=False)
            z = logits(self._model, self._x(x_pre), self.backend, batch_size=max(int(batch_size), 1))
            return self._apply_postprocessing(preds=z, fit=False)

        def loss_gradient(self, x: np.ndarray, y: np.ndarray, training_mode: bool = False, **kwargs) -> np.ndarray:
            """∇ₓ of each example's softmax cross-entropy (y one-hot or class indices)."""
            x_pre, y_pre = self._apply_preprocessing(x, y, fit=False)
            f = gradient_oracle(self._model, self._input_shape, "ce", False, self.backend)
            g = f(self._x(x_pre).astype(np.float64), _labels(y_pre, self.nb_classes), None)[0]
            return self._apply_preprocessing_gradient(x, g.astype(np.asarray(x).dtype, copy=False))

        def compute_loss(self, x: np.ndarray, y: np.ndarray, reduction: str = "none", **kwargs) -> np.ndarray:
            """Each example's softmax cross-entropy, in float64 (forward pass only)."""
            x_pre, y_pre = self._apply_preprocessing(x, y, fit=False)
            z = logits(self._model, self._x(x_pre), self.backend)
            loss = cross_entropy(z, _labels(y_pre, self.nb_classes))
            if reduction == "none":
                return loss
            if reduction == "mean":
                return np.mean(loss)
            if reduction == "sum":
                return np.sum(loss)
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")

        def class_gradient(self, x: np.ndarray, label=None, training_mode: bool = False, **kwargs) -> np.ndarray:
            """(N, 1, …) for one label (an int, or one per example), (N, C, …) for all classes (label=None)."""
            x_pre, _ = self._apply_preprocessing(x, None, fit=False)
            xs = self._x(x_pre)
            f = class_gradients_fn(self._model, self._input_shape, self.backend)
            if not len(xs):
                return np.zeros((0, 1 if label is not None else self.nb_classes) + self._input_shape, xs.dtype)
            parts = [f(x=xs[i:i + 512])[1:] for i in range(0, len(xs), 512)]  # per chunk: C arrays
            grads = np.stack([np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))], axis=1)
            if label is None:
                picked = grads
            elif np.ndim(label) == 0:
                picked = grads[:, [int(label)]]
            else:
                lab = np.asarray(label, np.int64)
                if lab.shape != (len(xs),):
                    raise ValueError(f"label must be an int or one label per example ({len(xs)}), got {lab.shape}")
                picked = grads[np.arange(len(xs)), lab][:, None]
            x_arr = np.asarray(x)
            return np.stack([self._apply_preprocessing_gradient(x_arr, picked[:, k]) for k in range(picked.shape[1])],
                            axis=1)

        def fit(self, x: np.ndarray, y: np.ndarray, batch_size: int = 128, nb_epochs: int = 20, **kwargs) -> None:
            """Train the graphc model (Adam unless optimizer= is given) on (x, y), y one-hot or indices."""
            from ..learn.train import train
            x_pre, y_pre = self._apply_preprocessing(x, y, fit=True)
            train(self._model, self._x(x_pre), _labels(y_pre, self.nb_classes), epochs=nb_epochs,
                  batch_size=batch_size, optimizer=kwargs.get("optimizer", "adam"), backend=self.backend,
                  progress=False)

        def get_activations(self, x: np.ndarray, layer, batch_size: int = 128, framework: bool = False) -> np.ndarray:
            """Outputs of layer `layer` (an index into model.layers, or a name from layer_names)."""
            layers = getattr(self._model, "layers", None)
            if layers is None or framework:
                raise NotImplementedError("get_activations needs a graphc Sequential model (model.layers) and "
                                          "returns arrays (framework=False)")
            k = self.layer_names.index(layer) if isinstance(layer, str) else int(layer)
            from ..compiler.runtime import compile as gc_compile
            from ..ir.tensor import placeholder
            from ..learn.train import model_cache
            key = ("art-activations", k, self._input_shape, self.backend)
            cache = model_cache(self._model)
            if key not in cache:
                h = placeholder("x", (None,) + self._input_shape, self._model.dtype)
                for layer_k in layers[:k + 1]:
                    h = layer_k(h, training=False)
                cache[key] = gc_compile(h, backend=self.backend)
            x_pre, _ = self._apply_preprocessing(x, None, fit=False)
            xs = self._x(x_pre)
            return np.concatenate([cache[key](x=xs[i:i + batch_size]) for i in range(0, len(xs), batch_size)])

        def save(self, filename: str, path: Optional[str] = None) -> None:
            if path is None:
                from art import config
                path = config.ART_DATA_PATH
            os.makedirs(path, exist_ok=True)
            self._model.save(os.path.join(path, filename))

    _CLASS = GraphcClassifier
    return _CLASS


def art_classifier(model, input_shape: Sequence[int], nb_classes: int, clip_values=(0.0, 1.0),
                   backend: Optional[str] = None, **kwargs):
    """An ART `ClassifierNeuralNetwork` for a graphc model: predict (logits), loss_gradient,
    class_gradient, compute_loss, fit (graphc training), get_activations, save.

    input_shape: one example's shape, e.g. (64,) for flat digits or (1, 8, 8) for images;
    clip_values: the valid input range, passed to ART's attacks (None for unbounded data). Extra
    keyword arguments (preprocessing, preprocessing_defences, postprocessing_defences,
    channels_first) go to ART's constructor."""
    if not hasattr(model, "parameters"):
        raise GraphError(f"art_classifier: model must be a graphc.nn model, got {type(model).__name__}")
    return _adapter_class()(model, input_shape, nb_classes, clip_values=clip_values, backend=backend, **kwargs)
