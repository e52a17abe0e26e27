"""zsc_core's modules import each other without a cycle, counting imports inside functions too (a lazy import
still ties two modules together: neither can be read, tested or replaced without the other)."""

import ast
import graphlib
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zsc_core")


def package_imports(package_dir: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its body (relative or absolute imports)."""
    name = os.path.basename(package_dir)
    modules = {f[:-3] for f in os.listdir(package_dir) if f.endswith(".py")}
    graph: dict[str, set[str]] = {}
    for mod in sorted(modules):
        with open(os.path.join(package_dir, mod + ".py")) as f:
            tree = ast.parse(f.read())
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level == 1 or base.split(".")[0] == name:
                    target = base.split(".")[-1] if node.level == 0 else base.split(".")[0]
                    if target and target != name:
                        deps.add(target)
                    else:  # `from . import a, b`: the names are modules
                        deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith(name + "."))
        graph[mod] = {d for d in deps if d in modules and d != mod}
    return graph


def test_the_import_graph_finder_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = package_imports(str(pkg))
    assert graph == {"__init__": set(), "a": {"b"}, "b": {"c"}, "c": {"a"}}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())


def test_zsc_core_has_no_import_cycle():
    graph = package_imports(PACKAGE)
    assert {"captioner", "checkpoint", "settings", "encode", "bridge", "towers"} <= set(graph)
    assert "captioner" not in graph["checkpoint"] and "bridge" not in graph["encode"]
    order = tuple(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError, naming the cycle
    assert set(order) == set(graph)
