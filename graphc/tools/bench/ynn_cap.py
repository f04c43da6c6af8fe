"""Cap the instruction set of JAX's YNNPACK dot kernels, for `graphc bench --isa avx2` only.

Why: JAX 0.10's CPU matmuls run in YNNPACK (inside jaxlib's libjax_common.so), which picks its
kernels from its own cpuid probe. `--xla_cpu_max_isa=AVX2` caps XLA's generated code but not that
probe, so a "capped" run timed JAX's AVX-512 dot kernels (`ynn::dot_fp32_5x64x1_1x16x1_avx512` in
`perf report`) against everyone else's AVX2 ones. YNNPACK has no flag or environment variable for
it; it caches the probe in a function-local static (`flags` in `ynn::get_supported_arch_flags`,
with its C++ guard variable). Setting that cache before the first dot makes YNNPACK pick the
kernels an AVX2+FMA3 CPU gets (`ynn::dot_fp32_6x16x1_1x8x1_fma3`). The symbols are found in the
library's ELF symbol table; when they are missing nothing is written and the caller reports
"not capped". This writes into another library's private memory, which is acceptable only in a
benchmark worker process that does nothing else.
"""
from __future__ import annotations

import mmap
import struct

import numpy as np

# YNNPACK's arch_flag bits 0-6: sse2, ssse3, sse41, avx, f16c, avx2, fma3 (the same in every
# YNNPACK version seen; the AVX-512 and AMX bits follow from bit 7)
YNN_AVX2_FMA3 = 0x7F
_FLAGS = "_ZZN3ynn24get_supported_arch_flagsEvE5flags"
_GUARD = "_ZGVZN3ynn24get_supported_arch_flagsEvE5flags"
_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                 ("value", "<u8"), ("size", "<u8")])


def elf_symbols(path: str, names) -> dict:
    """{name: st_value} of the wanted names found in a 64-bit little-endian ELF file's .symtab."""
    want = {n.encode(): n for n in names}
    found = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"\x7fELF" or m[4] != 2 or m[5] != 1:
            raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
        shoff, = struct.unpack_from("<Q", m, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", m, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", m, shoff + i * shentsize) for i in range(shnum)]
        for sh in sections:
            if sh[1] != 2:  # SHT_SYMTAB
                continue
            strtab = sections[sh[6]]
            syms = np.frombuffer(m, _SYM, count=sh[5] // _SYM.itemsize, offset=sh[4])
            strings = m[strtab[4]:strtab[4] + strtab[5]]
            for name, key in want.items():
                # a name's string may be the tail of a longer one (linkers merge suffixes): every
                # offset where the name and its terminator start is a candidate
                starts, at = [], strings.find(name + b"\0")
                while at >= 0:
                    starts.append(at)
                    at = strings.find(name + b"\0", at + 1)
                hit = np.flatnonzero(np.isin(syms["name"], starts) & (syms["value"] != 0))
                if len(hit):
                    found[key] = int(syms["value"][hit[0]])
            del syms
    return found


def _loaded(library: str) -> tuple[str, int] | None:
    """(path, load address) of a shared library mapped into this process (Linux)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and parts[5].endswith("/" + library) and int(parts[2], 16) == 0:
                return parts[5], int(parts[0].split("-")[0], 16)
    return None


def cap_ynn_to_avx2() -> str:
    """Make YNNPACK in this process use its AVX2+FMA3 kernels. Call after `import jax`, before the
    first computation. Returns what was done, for the benchmark's header."""
    import ctypes
    try:
        where = _loaded("libjax_common.so")
        if where is None:
            return "not capped (libjax_common.so not loaded)"
        path, base = where
        syms = elf_symbols(path, (_FLAGS, _GUARD))
        if len(syms) != 2:
            return "not capped (YNNPACK's arch-flags cache not found in libjax_common.so)"
        guard = ctypes.c_uint8.from_address(base + syms[_GUARD])
        flags = ctypes.c_uint64.from_address(base + syms[_FLAGS])
        if guard.value and flags.value & ~YNN_AVX2_FMA3 == 0:
            return "avx2+fma3 (already)"
        flags.value = YNN_AVX2_FMA3
        guard.value = 1
        return "avx2+fma3 (YNNPACK's cached cpuid probe preset)"
    except (OSError, ValueError) as exc:
        return f"not capped ({exc})"
