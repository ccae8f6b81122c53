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
