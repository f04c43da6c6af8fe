"""Every Python code block of README.md runs as written (in order, one namespace per section), so
the README cannot drift from the code. A block preceded by `<!-- not run in tests: reason -->`
is skipped (only for blocks that need a cluster, a long run or a file a user supplies)."""
import os
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
OPTIONAL = {"torch", "onnx", "onnxruntime", "skl2onnx"}  # packages of extras a section may need
_BLOCK = re.compile(r"(<!-- not run in tests:[^>]*-->\s*)?```python\n(.*?)```", re.S)


def _sections() -> list:
    """(section title, [code blocks]) for every '## ' section that has Python blocks."""
    text = README.read_text()
    out = []
    for part in re.split(r"\n(?=## )", text):
        title = part.splitlines()[0].lstrip("# ").strip()
        blocks = [code for skip, code in _BLOCK.findall(part) if not skip]
        if blocks:
            out.append((title, blocks))
    return out


@pytest.mark.parametrize("title, blocks", _sections(), ids=[t for t, _ in _sections()])
def test_readme_code_runs(title, blocks, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")  # the README's examples load scikit-learn's datasets
    monkeypatch.chdir(tmp_path)  # files the examples write land in a temporary folder
    monkeypatch.setenv("GRAPHC_README_TEST", "1")
    namespace: dict = {"__name__": "__readme__"}
    for k, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md[{title} #{k}]", "exec"), namespace)  # noqa: S102
        except ImportError as exc:
            if exc.name in OPTIONAL or type(exc).__name__ == "MissingExtra":  # runs where the extra is installed
                pytest.skip(f"README section {title!r} needs an optional package: {exc}")
            pytest.fail(f"README block {k} of section {title!r} raised {type(exc).__name__}: {exc}\n{code}")
        except Exception as exc:  # noqa: BLE001 - name the block that broke
            pytest.fail(f"README block {k} of section {title!r} raised {type(exc).__name__}: {exc}\n{code}")
    for name, value in list(namespace.items()):  # hypothesis tests defined in the README run too
        if name.startswith("test_") and callable(value):
            value()
    assert os.getcwd() == str(tmp_path)
