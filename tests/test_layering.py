"""The runtime's layers: nothing below the runner imports it, and no import is deferred to
dodge a cycle (issue 15).

Above the runner are only the commands (``fastopt.commands``, ``fastopt.cli``) and the
MMEngine integration; everything else (dist, fileio, logging, hooks, loops, dataset, ...)
must work without importing ``fastopt.runner``: hooks and loops get the runner they serve as
an argument and name its type under ``TYPE_CHECKING`` only.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import fastopt_subprocess_env

import fastopt

PACKAGE = Path(fastopt.__file__).resolve().parent
ABOVE_THE_RUNNER = {"runner", "commands", "cli", "__main__", "integrations"}
BELOW_THE_RUNNER = sorted(
    p.stem if p.suffix == ".py" else p.name
    for p in PACKAGE.iterdir()
    if (p.suffix == ".py" or (p / "__init__.py").is_file())
    and p.stem not in ABOVE_THE_RUNNER
    and p.name != "__init__.py"
)


def _modules_below() -> list[Path]:
    files = []
    for name in BELOW_THE_RUNNER:
        path = PACKAGE / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [PACKAGE / f"{name}.py"]
    return files


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import not under ``if TYPE_CHECKING:``."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_the_layer_lists_cover_the_package():
    assert {"dist", "fileio", "hooks", "loops", "logging", "dataset", "evaluator"} <= set(
        BELOW_THE_RUNNER
    )
    assert {"runner", "commands"} & set(BELOW_THE_RUNNER) == set()


def test_no_module_below_the_runner_imports_it_at_run_time():
    offenders = []
    for path in _modules_below():
        module = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        for line, target in _runtime_imports(tree, module, path.name == "__init__.py"):
            if target == "fastopt.runner" or target.startswith("fastopt.runner."):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
            if target in ("fastopt.commands", "fastopt.cli") or target.startswith(
                "fastopt.commands."
            ):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert offenders == []


def test_importing_every_package_below_the_runner_leaves_it_unimported():
    # one fresh interpreter: if importing all of them together does not load the runner,
    # importing any one of them does not either
    modules = [f"fastopt.{name}" for name in BELOW_THE_RUNNER]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('fastopt.runner', "
        "'fastopt.commands'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=fastopt_subprocess_env(),
        cwd=PACKAGE.parent.parent,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stderr


DEFERRED_FOR_A_CYCLE = re.compile(
    r"#.*\b(deferred|lazy|late)\b.*(cycle|circular|imports (this|us)|fastopt\.runner)",
    re.IGNORECASE,
)


def test_no_import_is_deferred_to_dodge_a_cycle():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if DEFERRED_FOR_A_CYCLE.search(line) or re.search(r"#.*\bcycle\b.*import", line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert offenders == []
