"""The package's shape, read from its source: settings reach steps through resources, and no
module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_assets"

# Entry points resolve the environment's settings: the resolver itself, the CLI, `mlops run`,
# and what a code location loads (definitions, components, defs/) — when they load, never at
# import.
SETTINGS_ENTRIES = ("settings", "cli", "run", "definitions", "components", "defs")
# Entry points that may touch os.environ: the resolver, the CLI (it starts `dagster dev`),
# `mlops run` (one switch Dagster reads only from the environment), and the dbt component
# (under `dg dev`, dbt parses a changed project in the code location's environment).
ENVIRONMENT_ENTRIES = ("settings", "cli", "run.execute", "components.dbt_project")
# Process-wide knobs read where they apply, not settings of a home. Each is named, with why.
ENVIRONMENT_KNOBS = {
    "faults": "MLOPS_CRASH_AT: the crash tests' fault injection, set in a child process",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _within(name: str, entries: tuple[str, ...]) -> bool:
    return any(name == entry or name.startswith(f"{entry}.") for entry in entries)


class _Uses(ast.NodeVisitor):
    """Calls of get_settings (and whether at import time) and uses of os.environ/getenv."""

    def __init__(self) -> None:
        self.settings: list[tuple[int, bool]] = []  # (line, at import time)
        self.environment: list[int] = []
        self._depth = 0

    def _function(self, node) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Call(self, node: ast.Call) -> None:
        called = node.func
        name = called.id if isinstance(called, ast.Name) else getattr(called, "attr", None)
        if name == "get_settings":
            self.settings.append((node.lineno, self._depth == 0))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (
            isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "putenv", "unsetenv")
        ):
            self.environment.append(node.lineno)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "os" and {a.name for a in node.names} & {"environ", "getenv"}:
            self.environment.append(node.lineno)


def test_no_step_resolves_settings_or_reads_the_environment():
    """Before, steps called get_settings() (at import and in their bodies) and the runner wrote
    MLOPS_HOME into os.environ for them and for dbt. Settings are resolved by entry points
    when definitions load, and reach steps as resource fields."""
    wrong = []
    for name, path in sorted(_modules().items()):
        uses = _Uses()
        uses.visit(ast.parse(path.read_text(), filename=str(path)))
        for line, at_import in uses.settings:
            if at_import or not _within(name, SETTINGS_ENTRIES):
                wrong.append(f"{name}:{line} calls get_settings()" + " at import" * at_import)
        if uses.environment and not (
            _within(name, ENVIRONMENT_ENTRIES) or name in ENVIRONMENT_KNOBS
        ):
            wrong += [f"{name}:{line} uses os.environ" for line in uses.environment]
    assert not wrong, "\n".join(wrong)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports, at import time or inside a function (``from a
    import b``: the module a.b if there is one, else a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def module_of(target: str) -> str:
        module = target.removeprefix("mlops_assets").lstrip(".")
        while module and module not in modules:
            module = module.rpartition(".")[0]
        return module

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = ["mlops_assets", *filter(None, package.split("."))]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {module_of(t) for t in targets if t.startswith("mlops_assets")}
    return found - {"", name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_circles():
    """Before, resources.py imported the dbt resource from transform/assets.py, which imported
    resources.py. A circle, even through an import inside a function, means neither side
    can be understood, tested or moved without the other."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import():
    graph = {"resources": {"warehouse"}, "transform.assets": {"resources"}, "warehouse": set()}
    assert _cycles(graph) == []
    graph["resources"].add("transform.assets")  # `from ... import dbt_resource` in a function
    assert _cycles(graph) == [["resources", "transform.assets"]]
