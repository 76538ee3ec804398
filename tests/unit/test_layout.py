"""The package's structure: no import circle, a model folder that stands alone, an import that changes nothing.

The imports are read with ``ast`` from the source (module-level and function-level alike), so these checks
cost no import and see the imports a run only reaches on some paths.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "anomalib_divass"
MODELS = PACKAGE / "models"
# What the model folder may import besides itself and the standard library.
MODEL_DEPENDENCIES = {"torch", "torchvision", "anomalib", "lightning"}
# anomalib's export back-ends: only in export.py, and only inside its functions (imported when exporting).
EXPORT_BACKENDS = {"openvino", "nncf"}
EXPORT_MODULE = MODELS / "divide_assemble" / "export.py"


@dataclass(frozen=True)
class Import:
    """One imported module (absolute dotted name) of a source file."""

    target: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    """The dotted name of a source file of the package (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


class _ImportReader(ast.NodeVisitor):
    """Collects the imports of a module, resolving relative ones, noting those inside a function."""

    def __init__(self, path: Path) -> None:
        name = module_name(path)
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.imports: list[Import] = []
        self.depth = 0

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function  # noqa: N815

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.imports.append(Import(alias.name, node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        # ``from package import submodule`` imports the submodule; any other name comes from ``target`` itself.
        submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
        names = submodules if len(submodules) == len(node.names) else [*submodules, target]
        self.imports.extend(Import(name, node.lineno, self.depth > 0) for name in names)


def imports_of(path: Path) -> list[Import]:
    """Every import of a source file."""
    reader = _ImportReader(path)
    reader.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return reader.imports


def package_module(target: str) -> str | None:
    """The module of the package that an import of ``target`` loads (``None`` outside the package)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (module-level and function-level imports)."""
    graph = {}
    for name, path in MODULES.items():
        targets = {package_module(item.target) for item in imports_of(path)}
        graph[name] = {target for target in targets if target is not None and target != name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules, the first repeated at the end), or ``None``."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_the_reader_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "anomalib_divass.models.divide_assemble.lightning_model" in graph["anomalib_divass.models.divide_assemble"]
    assert "anomalib_divass.inference.command" in graph["anomalib_divass.compat"]  # inside a function
    assert "anomalib_divass.configs" in graph["anomalib_divass.cli"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package() -> None:
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_model_folder_imports_only_torch_anomalib_lightning_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | MODEL_DEPENDENCIES
    wrong = []
    for path in sorted(MODELS.rglob("*.py")):
        for item in imports_of(path):
            top = item.target.partition(".")[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{item.line} imports {item.target}"
            if item.target.startswith("anomalib_divass"):
                if not (item.target + ".").startswith("anomalib_divass.models."):
                    wrong.append(f"{where} (outside the model folder)")
            elif top in EXPORT_BACKENDS:
                if path != EXPORT_MODULE or not item.in_function:
                    wrong.append(f"{where} (export back-ends only inside the functions of export.py)")
            elif top not in allowed:
                wrong.append(f"{where} (not torch, anomalib, Lightning or the standard library)")
    assert not wrong, "\n".join(wrong)


def test_export_back_ends_are_imported_where_they_are_used() -> None:
    lazy = {item.target.partition(".")[0] for item in imports_of(EXPORT_MODULE) if item.in_function}
    assert lazy >= EXPORT_BACKENDS  # the check above guards something that is there


CHECK_UNTOUCHED = textwrap.dedent(
    """
    import importlib, inspect, pkgutil, sys

    # Leave out the .pth hook: it prepares anomalib's command line when anomalib.cli.cli is imported, which is
    # the command line's business; here only the import of the package is judged.
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "_anomalib_divass_cli_watcher", False)]
    for name in ("anomalib.cli.cli", "anomalib.data.utils", "anomalib.data.utils.image", "anomalib.data.predict",
                 "anomalib.deploy", "anomalib.engine", "anomalib.models", "lightning.pytorch"):
        importlib.import_module(name)

    def members():
        found = {}
        for module_name, module in list(sys.modules.items()):
            if module is None or not module_name.startswith(("anomalib", "lightning")):
                continue
            for name, value in list(vars(module).items()):
                if inspect.isfunction(value) or inspect.isclass(value):
                    found[module_name, name] = value
                if inspect.isclass(value) and value.__module__ == module_name:
                    for attribute, member in list(vars(value).items()):
                        found[module_name, f"{name}.{attribute}"] = member
        return found

    from anomalib.cli.cli import AnomalibCLI
    from anomalib.data import utils
    instantiate_classes, read_image = AnomalibCLI.instantiate_classes, utils.read_image
    before = members()

    import anomalib_divass
    for module in pkgutil.walk_packages(anomalib_divass.__path__, "anomalib_divass."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)

    assert AnomalibCLI.instantiate_classes is instantiate_classes
    assert utils.read_image is read_image
    after = members()
    changed = sorted(".".join(key) for key, value in before.items() if after.get(key) is not value)
    assert not changed, changed
    print("untouched", len(before))
    """
)


def test_importing_the_package_changes_nothing_in_anomalib() -> None:
    process = subprocess.run(
        [sys.executable, "-c", CHECK_UNTOUCHED], capture_output=True, text=True, timeout=300, check=False
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.startswith("untouched ")


def test_model_readme_lists_every_argument_of_the_model() -> None:
    """The model README's argument table names exactly the constructor's arguments (anomalib's components aside)."""
    import inspect
    import re

    from anomalib_divass import DivideAssemble

    readme = (MODELS / "divide_assemble" / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Configuration") : readme.index("## Layout")]
    documented = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    components = {"self", "pre_processor", "post_processor", "evaluator", "visualizer"}
    arguments = set(inspect.signature(DivideAssemble.__init__).parameters) - components
    assert documented == arguments, f"missing: {sorted(arguments - documented)}, gone: {sorted(documented - arguments)}"
    files = {path.name for path in (MODELS / "divide_assemble").glob("*.py")} - {"__init__.py"}
    listed = set(re.findall(r"`(\w+\.py)`", readme[readme.index("## Layout") :]))
    assert files <= listed, f"not in the model README's layout: {sorted(files - listed)}"
