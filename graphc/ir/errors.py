"""GraphError and the user-source-line bookkeeping every node carries."""
from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # graphc/


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class GraphError(ValueError):
    """Raised for any user-facing graph problem: bad shapes, dtypes, feeds, labels.

    The message names the op, the shapes involved and the source line that created the node."""


def user_source() -> str:
    """'file:line' of the innermost stack frame outside the graphc package (the user's code)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def node_error(node, message: str) -> GraphError:
    """A GraphError about `node`: op, name, input shapes and the user's line that created it."""
    shapes = ", ".join(str(fmt_shape(i.shape)) for i in node.inputs)
    what = f"{node.op}" + (f" '{node.name}'" if node.name else "")
    inputs = f" (input shapes: {shapes})" if node.inputs else ""
    return GraphError(f"{what}{inputs} created at {node.source}: {message}")


def fmt_shape(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
