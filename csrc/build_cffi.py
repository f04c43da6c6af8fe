"""cffi (API mode) build of graphc's C kernels into the extension module graphc._cgraphc.

Every csrc/*.c file is compiled; every csrc/*.h file is both #included by the generated
module and fed to cffi's cdef. Headers therefore hold only plain declarations (enums,
structs, prototypes). cdef sees them through the C preprocessor (the op-code enums are
generated from elementwise.def by X-macros), with the system headers replaced by empty ones:
cffi knows int64_t and friends itself. Internal C files (templates, the op list, the vector
math) are .inc / .def files, never cdef'ed.

No -march flags: the baseline is plain x86-64 so the module never dies with SIGILL; the AVX2+FMA
paths are compiled per function with __attribute__((target(...))) and chosen at run time.
No -ffast-math either: it would switch on flush-to-zero for the whole Python process. Only its
-fno-trapping-math part is used: graphc never unmasks floating-point traps, and without it GCC
will not turn a branch with a floating-point operation in it (g * (y > 0), x > 0 ? x : x * p) into
a vector select, so such elementwise loops would stay scalar. It changes no result: the same IEEE
operations run, some of them speculatively.

Environment:
  GRAPHC_SANITIZE=1   build with -fsanitize=address,undefined (see .ci/sanitize)
  GRAPHC_CFLAGS       extra compiler flags, space separated
"""
import glob
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADERS = sorted(glob.glob(os.path.join(HERE, "*.h")))
SOURCES = sorted(glob.glob(os.path.join(HERE, "*.c")))


def _cdef_text(headers):
    """The declarations of `headers` as the C compiler sees them, without system headers."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    source = "".join(f'#include "{os.path.basename(h)}"\n' for h in headers)
    with tempfile.TemporaryDirectory() as shim:
        for name in ("stdint.h", "stddef.h"):
            open(os.path.join(shim, name), "w").close()
        out = subprocess.run(cc + ["-E", "-P", "-nostdinc", "-I", shim, "-I", HERE, "-x", "c", "-"],
                             input=source, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"preprocessing the csrc headers for cffi failed:\n{out.stderr}")
    return out.stdout


def _compile_args():
    # -fopenmp-simd: `#pragma omp simd` only. Threads come from graphc's own pool (threads.c), so
    # libgomp is not linked: its spinning workers fought NumPy's OpenBLAS threads for the cores.
    args = ["-O3", "-std=c11", "-fopenmp-simd", "-pthread", "-fno-math-errno", "-fno-trapping-math", "-Wall",
            "-Wno-unused-function"]
    link = ["-pthread"]
    if os.environ.get("GRAPHC_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        # -fno-wrapv undoes the -fwrapv of Python's own CFLAGS: with it UBSan cannot report a signed
        # overflow, and GCC 12 took 220 s instead of 26 s to compile the instrumented gemm.c.
        args = [a for a in args if a != "-O3"] + ["-O1", "-g", "-fno-wrapv"] + san
        link += san
    args += os.environ.get("GRAPHC_CFLAGS", "").split()
    return args, link


def make_builder(absolute_sources=False, module="graphc._cgraphc", only=None):
    """setuptools wants source paths relative to the project root; ffi.compile() runs elsewhere.

    `only` (basenames without extension, e.g. ["gemm"]) builds a subset of csrc/ into a
    differently named module, so kernels can be developed and tested in isolation."""
    headers = [h for h in HEADERS if only is None or os.path.basename(h)[:-2] in only]
    sources = [s for s in SOURCES if only is None or os.path.basename(s)[:-2] in only]
    builder = FFI()
    builder.cdef(_cdef_text(headers))
    cargs, largs = _compile_args()
    builder.set_source(
        module,
        "".join(f'#include "{os.path.basename(h)}"\n' for h in headers),
        sources=sources if absolute_sources else [os.path.relpath(s, os.path.dirname(HERE)) for s in sources],
        include_dirs=[HERE],
        extra_compile_args=cargs,
        extra_link_args=largs,
        libraries=["m"],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    # Development shortcuts:
    #   python csrc/build_cffi.py                     build graphc/_cgraphc*.so in place
    #   python csrc/build_cffi.py --into DIR          build DIR/graphc/_cgraphc*.so (e.g. a sanitizer build)
    #   python csrc/build_cffi.py OUTDIR NAME a,b     build csrc/a.c+b.c (and .h) as module NAME in OUTDIR
    import shutil
    os.chdir(os.path.dirname(HERE))
    if len(sys.argv) == 4:
        outdir, name, only = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
        path = make_builder(True, module=name, only=only).compile(tmpdir=os.path.join(outdir, "tmp"))
        shutil.copy(path, outdir)
        print("built", os.path.join(outdir, os.path.basename(path)))
    else:
        into = sys.argv[2] if len(sys.argv) == 3 and sys.argv[1] == "--into" else "."
        tmp = os.path.join(into, "build", "cffi") if into != "." else os.path.join("build", "cffi")
        make_builder(absolute_sources=True).compile(tmpdir=tmp, verbose=False)
        for so in glob.glob(os.path.join(tmp, "graphc", "_cgraphc*.so")):
            dest = os.path.join(into, "graphc")
            shutil.copy(so, dest)
            print("built", os.path.join(dest, os.path.basename(so)))
