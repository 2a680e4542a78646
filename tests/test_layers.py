"""Dependencies point one way: configs <- infer_pack <- train <- tools <- infer-web.py."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

# Which first-party packages each layer may import.
ALLOWED: dict[str, set[str]] = {
    "configs": {"configs"},
    "infer_pack": {"configs", "infer_pack"},
    "train": {"configs", "infer_pack", "train"},
    "tools": {"configs", "infer_pack", "train", "tools"},
}
FIRST_PARTY = set(ALLOWED) | {"bench", "tests"}
HEAVY = {"torch", "faiss", "gradio", "onnxruntime", "onnx", "matplotlib"}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, at module level) for each import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int, bool]] = []
    top_level = set(id(node) for node in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name.split(".")[0], node.lineno, id(node) in top_level))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], node.lineno, id(node) in top_level))
    return found


def test_layers_import_only_downwards() -> None:
    violations = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((REPO_ROOT / layer).rglob("*.py")):
            for module, line, _ in _imports(path):
                if module in FIRST_PARTY and module not in allowed:
                    violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert not violations, "layer rule broken:\n" + "\n".join(violations)


def test_cli_and_web_entry_do_not_import_heavy_modules_at_top_level() -> None:
    entry_points = [REPO_ROOT / "tools" / "cli.py", REPO_ROOT / "infer-web.py"]
    violations = []
    for path in entry_points:
        if not path.exists():
            continue
        for module, line, top in _imports(path):
            if top and module in HEAVY:
                violations.append(f"{path.name}:{line} imports {module} at module level")
    assert not violations, "\n".join(violations)


# What the command line and the web tabs may import of the project: the API and the app's own plumbing.
EDGE_ALLOWED = {
    "tools.api",  # one function per action (and its submodules' types and constants)
    "tools.labels", "tools.jobs", "tools.jobproc", "tools.ui_jobs", "tools.ui_common", "tools.web",
    "tools.ui_pitch_editor",  # the Convert tab's pitch editor, a part of that tab kept in a module of its own
    "tools.project",  # the project folder handle the API functions take
    "infer_pack.errors", "infer_pack.progress",
    "configs",  # the typed vocabulary (Version, SampleRateTag)
}


def _first_party_modules(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in FIRST_PARTY:
                if node.module == "tools":  # `from tools import api` / `from tools import ui_x`
                    found += [(f"tools.{alias.name}", node.lineno) for alias in node.names]
                else:
                    found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] in FIRST_PARTY]
    return found


def test_cli_and_tabs_reach_the_project_only_through_the_api() -> None:
    edges = [REPO_ROOT / "tools" / "cli.py", *sorted((REPO_ROOT / "tools").glob("ui_*.py"))]
    violations = []
    for path in edges:
        for module, line in _first_party_modules(path):
            allowed = any(module == a or module.startswith(a + ".") for a in EDGE_ALLOWED)
            is_tab = module.startswith("tools.ui_") and path.name == "web.py"
            if not allowed and not is_tab:
                violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert not violations, "the CLI and the tabs must go through tools.api:\n" + "\n".join(violations)


def test_no_module_is_over_about_600_lines() -> None:
    """Small modules: a newcomer reads one top to bottom (tests and benchmarks excepted)."""
    too_long = []
    for layer in ALLOWED:
        for path in sorted((REPO_ROOT / layer).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > 650:
                too_long.append(f"{path.relative_to(REPO_ROOT)}: {lines} lines")
    assert not too_long, "split these modules:\n" + "\n".join(too_long)
