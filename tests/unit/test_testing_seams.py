"""The public testing kit drives the real runtime through its seams only (issue 11).

`coreplane.testing` once subclassed ControlPlane and overrode its private methods, unwound its
step with a BaseException and swapped module globals (`open_journal`, `build_conf`, the
runtime's `time`): any refactor of the runtime could break the kit users build their tests on.
These checks read the kit's source, so a patch that sneaks back in fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import coreplane.testing

KIT = Path(coreplane.testing.__file__).parent
_DUNDER_OK = {"__init__", "__repr__"}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), filename=str(p))) for p in sorted(KIT.glob("*.py"))]


def test_no_private_controlplane_method_is_overridden() -> None:
    offenders = []
    for path, tree in _modules():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
            if "ControlPlane" not in bases:
                continue
            for item in cls.body:
                if (
                    isinstance(item, ast.FunctionDef)
                    and item.name.startswith("_")
                    and item.name not in _DUNDER_OK
                ):
                    offenders.append(f"{path.name}: {cls.name}.{item.name}")
    assert offenders == []


def test_no_module_global_of_coreplane_is_swapped() -> None:
    offenders = []
    for path, tree in _modules():
        imported_modules = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("coreplane")
            for alias in node.names
            if alias.name[0].islower()
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setattr":
                offenders.append(f"{path.name}:{node.lineno}: setattr")
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in imported_modules
                ):
                    offenders.append(
                        f"{path.name}:{node.lineno}: {target.value.id}.{target.attr} = ..."
                    )
    assert offenders == []


def test_the_kit_unwinds_nothing_with_base_exceptions() -> None:
    for path, tree in _modules():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            bases = {getattr(b, "id", "") for b in cls.bases}
            assert "BaseException" not in bases, f"{path.name}: {cls.name}"
