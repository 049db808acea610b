"""Wheel build hook: the gateway's hot path compiled with mypyc, pure Python as the fallback.

A standard wheel (``pip install .``, ``pip wheel .``) compiles the modules that
``[tool.hatch.build.targets.wheel.hooks.custom] compile`` lists in pyproject.toml
(measured: -33 to -40 % instructions per proxied request, docs/gateway-performance.md)
and ships each ``.so`` beside its ``.py``; Python imports the extension first.

- Editable installs (``pip install -e .``, what ``make`` does) are never compiled: a
  ``.so`` in ``src/`` would shadow every later edit of its ``.py``.
- ``QANAT_PURE=1`` builds a pure wheel on purpose.
- If compiling fails (no C compiler, no Python headers, a mypyc error) the wheel is
  built pure with a warning, unless ``QANAT_COMPILE=require`` (CI and releases), where
  the build fails instead.

The compile runs in a temporary copy of ``src/``, so the tree never sees a ``.so``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# mypy's view of the code while compiling: the project's strict settings are for
# review (make typecheck); here only what mypyc needs, and optional extras that the
# build environment lacks (redis, aetcd ...) are typed as Any.
_MYPY_INI = """\
[mypy]
python_version = 3.11
ignore_missing_imports = True
"""

_SETUP_PY = """\
from setuptools import setup
from mypyc.build import mypycify

setup(name="qanat_compiled", ext_modules=mypycify({args!r}, opt_level="3"))
"""


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version != "standard":
            return
        if os.environ.get("QANAT_PURE") == "1":
            self.app.display_info("qanat: QANAT_PURE=1, building a pure-Python wheel")
            return
        modules = [str(m) for m in self.config.get("compile", [])]
        self._work = Path(tempfile.mkdtemp(prefix="qanat-mypyc-"))
        try:
            built = compile_modules(Path(self.root), modules, self._work)
        except Exception as exc:
            if os.environ.get("QANAT_COMPILE") == "require":
                raise
            self.app.display_warning(
                f"qanat: compiling the gateway's hot path failed, building a pure-Python "
                f"wheel instead (it works, about 1.5x slower per request): {exc}")
            return
        for so_file, in_wheel in built:
            build_data["force_include"][str(so_file)] = in_wheel
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        self.app.display_info(f"qanat: compiled {len(modules)} modules with mypyc")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def compile_modules(root: Path, modules: list[str], work: Path) -> list[tuple[Path, str]]:
    """Compile ``modules`` (paths under ``src/``) in a copy of ``src/`` made in ``work``;
    return each built extension's path and its path inside the wheel."""
    if not modules:
        raise ValueError("no modules listed under [tool.hatch.build.targets.wheel.hooks.custom]"
                         " compile in pyproject.toml")
    missing = [m for m in modules if not (root / "src" / m).is_file()]
    if missing:
        raise FileNotFoundError(f"listed for compiling but not in src/: {', '.join(missing)}")
    shutil.copytree(root / "src", work / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    (work / "src" / "mypy.ini").write_text(_MYPY_INI)
    args = ["--config-file", "mypy.ini", *modules]
    (work / "src" / "setup_mypyc.py").write_text(_SETUP_PY.format(args=args))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "setup_mypyc.py", "build_ext", "--inplace"],
                          cwd=work / "src", env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"mypyc exited with {proc.returncode}:\n{textwrap.indent(tail, '  ')}")
    built = [(so_file, so_file.relative_to(work / "src").as_posix())
             for so_file in sorted((work / "src").rglob("*.so"))
             if so_file.relative_to(work / "src").parts[0] != "build"]
    compiled = {rel.split(".", 1)[0] for _, rel in built}
    absent = [m for m in modules if m.removesuffix(".py") not in compiled]
    if absent:
        raise RuntimeError(f"mypyc built no extension for: {', '.join(absent)}")
    return built
