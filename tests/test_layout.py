"""The package's shape (DESIGN: no import cycles; the package never imports a script), read from the source
with ast: nothing is imported, so a cycle that happens to import fine today is still caught."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nanorlvr"
SCRIPTS = {"train", "sample", "analyze"}


def imports(path):
    """Top-level names of every module `path` imports (at module level or inside a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "nanorlvr":  # from nanorlvr import grpo, dist
                out |= {f"nanorlvr.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def package_graph():
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    return {name: {m.split(".")[1] for m in imports(p) if m.startswith("nanorlvr.")} & set(modules)
            for name, p in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    done, path = set(), []

    def visit(n):
        if n in path:
            return path[path.index(n):] + [n]
        if n in done:
            return None
        path.append(n)
        for d in sorted(graph[n]):
            if cycle := visit(d):
                return cycle
        path.pop()
        done.add(n)
        return None
    return next((c for n in sorted(graph) if (c := visit(n))), None)


def test_find_cycle_finds_a_planted_cycle_and_none_in_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = package_graph()
    assert {"grpo", "grpo_loss", "engine", "checkpoint"} <= set(graph)  # the graph was read
    assert find_cycle(graph) is None


def test_the_package_never_imports_a_script():
    for p in PACKAGE.glob("*.py"):
        assert not {m.split(".")[0] for m in imports(p)} & SCRIPTS, p.name
