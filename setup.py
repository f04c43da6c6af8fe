"""Build script: the C kernels in csrc/ are compiled into graphc._cgraphc with cffi (API mode).

If the C build fails (no compiler, odd platform), installation still succeeds and graphc runs
on its NumPy backend; `import graphc` then warns once.
"""
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the cffi extension if possible; never let its failure fail the install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler/setup failure means "no C backend"
            print(f"graphc: C extension not built ({exc}); the NumPy backend will be used.", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"graphc: building {ext.name} failed ({exc}); the NumPy backend will be used.",
                  file=sys.stderr)


setup(
    cffi_modules=["csrc/build_cffi.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
