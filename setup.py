"""Build hook for the optional Cython kernels in ext/.

Every `ext/<name>.pyx` listed in KERNELS becomes a compiled module; when Cython or a C compiler
is missing the build still succeeds and coreplane runs on the pure-Python twins (the backend
switch in coreplane/placement says which one runs). COREPLANE_REQUIRE_EXT=1 turns a failed
kernel build into an install error, for CI and release builds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
# ext source -> dotted module name of the compiled kernel.
KERNELS = {"ext/placement_kernel.pyx": "coreplane.placement._kernel"}


class OptionalBuildExt(build_ext):
    """Compile kernels, but let installation continue without them unless required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure means "use the twin"
            self._fallback(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)

    @staticmethod
    def _fallback(exc: Exception) -> None:
        if os.environ.get("COREPLANE_REQUIRE_EXT") == "1":
            raise exc
        print(
            f"coreplane: kernel build failed ({exc}); the pure-Python twin will be used",
            file=sys.stderr,
        )


def _parts(pyx: Path) -> list[Path]:
    """The .pxd/.pxi files a kernel's .pyx includes or cimports (all of them in its folder)."""
    return [*pyx.parent.glob("*.pxd"), *pyx.parent.glob("*.pxi")]


def _extensions() -> list:  # type: ignore[type-arg]
    sources = {src: mod for src, mod in KERNELS.items() if (HERE / src).exists()}
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        if os.environ.get("COREPLANE_REQUIRE_EXT") == "1":
            raise
        return []
    # A kernel's shared declarations (.pxd) and per-phase parts (.pxi) sit next to its .pyx; as
    # `depends` they trigger a rebuild when edited and ride along in the sdist.
    exts = [
        Extension(
            mod,
            [src],
            depends=sorted(p.relative_to(HERE).as_posix() for p in _parts(HERE / src)),
            extra_compile_args=["-O3"],
        )
        for src, mod in sources.items()
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
