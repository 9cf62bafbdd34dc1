"""The layer rules (CONTRIBUTING.md, docs/architecture.md), enforced by walking every module's
imports with `ast`.

Imports point down only; core/ imports no clock, thread, socket, randomness, os or pickle; only
raft/ imports pysyncobj and lmdb; only core/codec.py imports msgpack; pickle, marshal, eval and
exec appear nowhere in the package; no module takes part in an import cycle; and the package
root is light (importing coreplane, sdk, core or placement loads neither pysyncobj nor lmdb).
The tests themselves share set-up through fixtures: no test imports another test module or a
conftest, and none edits sys.path.
`test_checker_catches_bad_import` and `test_cycle_check_sees_function_level_and_dynamic_imports`
show the walks fail on deliberately bad modules, so a green run means something.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "coreplane"

# layer -> the coreplane layers it may import. "" is the package root (coreplane/__init__.py),
# which only re-exports and may import anything.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "placement": {"errors"},
    "core": {"errors", "placement"},
    "raft": {"errors", "core"},
    "runtime": {"errors", "core", "raft", "placement", "sdk.fencing"},  # re-export
    "api": {"errors", "core", "raft", "runtime", "placement", "obs"},
    "obs": {"errors", "core", "raft", "runtime", "placement"},
    "sdk": {"errors", "core.codec"},
    "ops": {"errors", "sdk", "core.codec"},
    "testing": {"errors", "core", "raft", "runtime", "placement"},
    # The host's ControlPlane: the node plus the services it serves (root-level, like __init__).
    "host": {"errors", "core", "raft", "runtime", "placement", "api", "obs"},
}
FORBIDDEN_IN_CORE = {
    "time",
    "datetime",
    "threading",
    "_thread",
    "socket",
    "random",
    "secrets",
    "os",
    "pickle",
    "asyncio",
    "subprocess",
    "multiprocessing",
    "selectors",
    "signal",
    "uuid",
    "concurrent",
}
FORBIDDEN_EVERYWHERE = {"pickle", "_pickle", "marshal", "dill", "cloudpickle", "shelve"}
FORBIDDEN_CALLS = {"eval", "exec"}
# The one documented exception to `ops -> sdk`: `coreplane replay DATA_DIR` is offline (as
# etcdutl beside etcdctl) and imports the runtime's replay (and the FleetConfig it takes)
# lazily, in this module only.
EXCEPTIONS = {("ops/replay.py", "coreplane.runtime"), ("ops/replay.py", "coreplane.core")}
OWNERS = {"pysyncobj": "raft", "lmdb": "raft"}  # third-party module -> the only layer importing it


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    what: str


def _layer_of(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    if parts == ("__init__",):
        return ""
    return parts[0]


def _imported_names(tree: ast.AST, module_parts: tuple[str, ...]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(("coreplane", *module_parts))[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            # `from coreplane import core` names a layer through the alias.
            if name == "coreplane":
                out.extend((node.lineno, f"coreplane.{a.name}") for a in node.names)
            else:
                out.append((node.lineno, name))
    return out


def check_module(rel: Path, source: str) -> list[Violation]:
    """All layer violations in one module, given its path relative to the package."""
    tree = ast.parse(source)
    layer = _layer_of(rel)
    module_parts = rel.with_suffix("").parts
    if module_parts[-1] == "__init__":
        module_parts = (*module_parts[:-1], "__init__")
    found: list[Violation] = []
    name = str(rel)
    for line, imported in _imported_names(tree, module_parts):
        top = imported.split(".")[0]
        if top in FORBIDDEN_EVERYWHERE:
            found.append(Violation(name, line, f"imports {imported} (forbidden everywhere)"))
        if layer == "core" and top in FORBIDDEN_IN_CORE:
            found.append(Violation(name, line, f"core imports {imported} (impure)"))
        if top in OWNERS and layer != OWNERS[top]:
            found.append(Violation(name, line, f"{layer or 'root'} imports {top}"))
        if top == "msgpack" and rel.as_posix() != "core/codec.py":
            found.append(Violation(name, line, "msgpack outside core/codec.py"))
        if top == "coreplane" and layer:
            target = imported.split(".")[1:]
            if not target:
                found.append(Violation(name, line, "imports the package root"))
                continue
            if (
                target[0] == layer
                or (rel.as_posix(), ".".join(imported.split(".")[:2])) in EXCEPTIONS
            ):
                continue
            allowed = ALLOWED.get(layer, set())
            if target[0] not in allowed and ".".join(target[:2]) not in allowed:
                found.append(Violation(name, line, f"{layer} -> {'.'.join(target)} points up"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(Violation(name, node.lineno, f"calls {node.func.id}()"))
    return found


def test_package_layers_hold() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        violations += check_module(rel, path.read_text(encoding="utf-8"))
    assert violations == [], "\n".join(f"{v.module}:{v.line}: {v.what}" for v in violations)


def test_every_module_belongs_to_a_known_layer() -> None:
    layers = {_layer_of(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert layers - {""} <= set(ALLOWED)


def test_checker_catches_bad_import() -> None:
    bad = {
        Path("core/bad.py"): "import time\nfrom coreplane.runtime import x\n",
        Path("placement/bad.py"): "from coreplane.core import state\n",
        Path("sdk/bad.py"): "from coreplane.core.state import State\n",
        Path("api/bad.py"): "import pickle\nimport lmdb\n",
        Path("core/machines/bad.py"): "from ...runtime import ControlPlane\nimport random\n",
        Path("raft/bad.py"): "x = eval('1')\nimport msgpack\n",
    }
    caught = {str(rel): check_module(rel, src) for rel, src in bad.items()}
    assert {v.what for v in caught["core/bad.py"]} == {
        "core imports time (impure)",
        "core -> runtime points up",
    }
    assert [v.what for v in caught["placement/bad.py"]] == ["placement -> core points up"]
    assert [v.what for v in caught["sdk/bad.py"]] == ["sdk -> core.state points up"]
    assert {v.what for v in caught["api/bad.py"]} == {
        "imports pickle (forbidden everywhere)",
        "api imports lmdb",
    }
    assert {v.what for v in caught["core/machines/bad.py"]} == {
        "core -> runtime points up",
        "core imports random (impure)",
    }
    assert {v.what for v in caught["raft/bad.py"]} == {
        "calls eval()",
        "msgpack outside core/codec.py",
    }


def test_allowed_imports_pass() -> None:
    ok = {
        Path("sdk/client.py"): (
            "from coreplane.core.codec import encode\nfrom coreplane import errors\n"
        ),
        Path("core/state.py"): "from coreplane.core import codec\nfrom .codec import encode\n",
        Path("runtime/cp.py"): "from coreplane.raft.engine import Engine\n",
    }
    for rel, src in ok.items():
        assert check_module(rel, src) == [], rel


# ------------------------------------------------------------------------ a light root

_LIGHT_ROOT_PROBE = """
import json, sys
import coreplane, coreplane.sdk, coreplane.core, coreplane.core.codec, coreplane.placement
light = sorted(m for m in sys.modules if m.split(".")[0] in ("pysyncobj", "lmdb"))
runtime_loaded = "coreplane.runtime" in sys.modules
from coreplane import ControlPlane
import pysyncobj.pickle
print(json.dumps({
    "light": light,
    "runtime_loaded": runtime_loaded,
    "control_plane": f"{ControlPlane.__module__}.{ControlPlane.__qualname__}",
    "heavy": sorted(m for m in ("pysyncobj", "lmdb") if m in sys.modules),
    "pickle_untouched": pysyncobj.pickle.dumps.__module__ == "pysyncobj.pickle",
}))
"""


def test_importing_the_light_layers_loads_no_pysyncobj_nor_lmdb() -> None:
    """A client (sdk, codec, placement) must not pay for the server side: checked in a fresh
    interpreter, since this one has long imported everything."""
    out = subprocess.run(
        [sys.executable, "-c", _LIGHT_ROOT_PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
        timeout=60,
    )
    probe = json.loads(out.stdout)
    assert probe["light"] == []
    assert probe["runtime_loaded"] is False
    # The lazy name still resolves, and only then does the server side load.
    assert probe["control_plane"] == "coreplane.host.ControlPlane"
    assert probe["heavy"] == ["lmdb", "pysyncobj"]
    # Importing the raft layer does not swap pysyncobj's pickle; building an engine does.
    assert probe["pickle_untouched"] is True


# ------------------------------------------------------------------------ no import cycles
#
# Every import counts, wherever it sits: module level, inside a function, or by a literal name
# through importlib (`import_module("coreplane.x")`, `find_spec(...)`). A function-level import
# is a dependency deferred, not removed, and deferring is exactly how a cycle hides (the
# serialization <-> wire cycle was one: a function-level `import_module`). Only imports under
# `if TYPE_CHECKING:` are left out: they never run, and annotations may name anything.

_DYNAMIC_IMPORTS = {"import_module", "find_spec", "__import__"}


def _module_name(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("coreplane", *parts))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skip


def module_imports(rel: Path, source: str, modules: set[str]) -> set[str]:
    """The package modules one module imports (directly), as dotted names."""
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    package = _module_name(rel).split(".")
    if rel.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            name = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                sub = f"{name}.{alias.name}"
                found.add(sub if sub in modules else name)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in _DYNAMIC_IMPORTS
        ):
            found.add(node.args[0].value)
    return {name for name in found if name in modules}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the package is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_a_cycle_in(graph, comp) for comp in sorted(components)]


def _a_cycle_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A readable witness: a path from the component's first module back to itself."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, ()) & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component  # unreachable for a real component


def package_graph() -> dict[str, set[str]]:
    files = {_module_name(p.relative_to(PACKAGE)): p for p in sorted(PACKAGE.rglob("*.py"))}
    modules = set(files)
    return {
        name: module_imports(path.relative_to(PACKAGE), path.read_text(encoding="utf-8"), modules)
        - {name}
        for name, path in files.items()
    }


def test_no_import_cycles_in_the_package() -> None:
    cycles = find_cycles(package_graph())
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_cycle_check_sees_function_level_and_dynamic_imports() -> None:
    modules = {"coreplane.raft", "coreplane.raft.a", "coreplane.raft.b", "coreplane.raft.c"}
    a = "from coreplane.raft import b\n"
    b = "def f():\n    from . import c\n"
    c = "import importlib\nimportlib.import_module('coreplane.raft.a')\n"
    typed = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from coreplane.raft import a\n"
    )
    graph = {
        "coreplane.raft.a": module_imports(Path("raft/a.py"), a, modules),
        "coreplane.raft.b": module_imports(Path("raft/b.py"), b, modules),
        "coreplane.raft.c": module_imports(Path("raft/c.py"), c, modules),
    }
    assert graph == {
        "coreplane.raft.a": {"coreplane.raft.b"},
        "coreplane.raft.b": {"coreplane.raft.c"},
        "coreplane.raft.c": {"coreplane.raft.a"},
    }
    assert find_cycles(graph) == [
        ["coreplane.raft.a", "coreplane.raft.b", "coreplane.raft.c", "coreplane.raft.a"]
    ]
    graph["coreplane.raft.c"] = module_imports(Path("raft/c.py"), typed, modules)
    assert find_cycles(graph) == []


# ------------------------------------------------------------------------ tests share fixtures

TESTS = PACKAGE.parent / "tests"


def _is_sys_path(node: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def hygiene_violations(source: str) -> list[str]:
    """What a test module does that CONTRIBUTING.md forbids: importing another test module or a
    conftest (share set-up through fixtures instead), or editing sys.path."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base] if base else [alias.name for alias in node.names]
            names += [f"{base}.{alias.name}" for alias in node.names if base]
        for name in names:
            last = name.split(".")[-1]
            if last == "conftest" or last.startswith("test_"):
                found.append(f"line {node.lineno}: imports {name} (use a fixture)")
                break
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and _is_sys_path(node.func.value)
        ):
            found.append(f"line {node.lineno}: edits sys.path")
        if isinstance(node, (ast.Assign, ast.AugAssign)) and any(
            _is_sys_path(t) for t in getattr(node, "targets", [getattr(node, "target", None)])
        ):
            found.append(f"line {node.lineno}: edits sys.path")
    return sorted(set(found))


def test_tests_share_setup_through_fixtures() -> None:
    problems = []
    for path in sorted(TESTS.rglob("*.py")):
        for problem in hygiene_violations(path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(TESTS.parent)}: {problem}")
    assert problems == [], "\n".join(problems)


def test_hygiene_check_catches_imports_and_path_edits() -> None:
    bad = (
        "import sys\nfrom tests.integration.conftest import wait_until\n"
        "from .conftest import x\nfrom tests.integration.test_log_safety import _append\n"
        "import test_codec\nsys.path.insert(0, 'examples')\n"
    )
    assert hygiene_violations(bad) == [
        "line 2: imports tests.integration.conftest (use a fixture)",
        "line 3: imports conftest (use a fixture)",
        "line 4: imports tests.integration.test_log_safety (use a fixture)",
        "line 5: imports test_codec (use a fixture)",
        "line 6: edits sys.path",
    ]
    assert hygiene_violations("import sys\nsys.path = []\n") == ["line 2: edits sys.path"]
    ok = "from .logs import command_logs\nimport pytest\nprint(sys.path)\n"
    assert hygiene_violations(ok) == []
