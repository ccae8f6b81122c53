"""Layout rules the code keeps: small single-job pipeline modules, no reaching into another object's privates."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "avatar_node" / "pipeline"
MAX_PIPELINE_LINES = 300


def test_pipeline_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PIPELINE.glob("*.py")}
    assert sizes and all(n <= MAX_PIPELINE_LINES for n in sizes.values()), sizes


def _private_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{name}")
    return found


def test_no_module_touches_another_objects_underscore_names():
    files = [*ROOT.joinpath("avatar_node").rglob("*.py"), *ROOT.joinpath("clients").rglob("*.py"),
             *ROOT.joinpath("integrations").rglob("*.py")]
    found = [use for f in files for use in _private_uses(f)]
    assert not found, "\n".join(found)


def test_no_asyncio_wait_for_in_shipped_code():
    """On Python 3.11, `asyncio.wait_for` returns the awaited result when it completes in the
    same loop step as a cancellation, and the cancellation is lost: a loop that reads frames
    through it ignores Ctrl-C/SIGTERM and cleanup that cancels it waits forever. Seen as a
    virtual camera that ignored SIGTERM under load. `async with asyncio.timeout(...)` does not."""
    files = [*ROOT.joinpath("avatar_node").rglob("*.py"), *ROOT.joinpath("clients").rglob("*.py"),
             *ROOT.joinpath("integrations").rglob("*.py")]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "wait_for" and isinstance(node.value, ast.Name) \
                    and node.value.id == "asyncio":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "use `async with asyncio.timeout(...)` instead of asyncio.wait_for:\n" + "\n".join(found)


PACKAGES = {
    "avatar_node": ROOT / "avatar_node",
    "avatar_client": ROOT / "clients" / "avatar_client",
    "avatar_livekit": ROOT / "integrations" / "avatar_livekit",
    "avatar_obs": ROOT / "integrations" / "avatar_obs",
    "avatar_pipecat": ROOT / "integrations" / "avatar_pipecat",
}
INTEGRATIONS = ("avatar_livekit", "avatar_obs", "avatar_pipecat")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at module level or inside functions. An import
    of a module's own enclosing package is left out: Python always runs that package first."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                wanted = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in wanted:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_the_import_graph_has_no_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_the_client_never_imports_an_integration():
    upward = [f"{module} -> {target}" for module, targets in import_graph().items()
              if module.startswith("avatar_client") for target in targets if target.split(".")[0] in INTEGRATIONS]
    assert not upward, "\n".join(upward)


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "avatar_node.engines.livetalk.checkpoints" in graph["avatar_node.engines.livetalk.vae"]  # in a function
    assert "avatar_client.cli_kit" in graph["avatar_client.virtualcam.command"]  # relative, two dots
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
