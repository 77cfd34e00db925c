"""The app's modules import each other without circles, and only at the top of a module: an
import inside a function is how a circle hides, so only Django's own late hook (the app's
`ready()`, which runs once the models are loaded) may import there."""

import ast
from pathlib import Path

import registry_admin

PACKAGE = Path(registry_admin.__file__).parent
# Django's idiom: receivers and checks are wired once the models exist.
LATE_IMPORTS_ALLOWED = {("registry_admin.apps", "ready")}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "tests" in parts or "migrations" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


MODULES = dict(_modules())


def _targets(module, path, node):
    """The registry_admin modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(base + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = []
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            found.append(f"{base}.{alias.name}")
        elif base in MODULES:
            found.append(base)
    return found


def _imports():
    """{module: {imported module}} and [(module, function, imported)] for late imports."""
    graph, late = {name: set() for name in MODULES}, []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    for target in _targets(module, path, node):
                        if (module, function.name) not in LATE_IMPORTS_ALLOWED:
                            late.append((module, function.name, target))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[module].update(t for t in _targets(module, path, node) if t != module)
    return graph, late


def _circles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_another_inside_a_function():
    _, late = _imports()
    assert late == []


def test_no_import_circle_among_the_apps_modules():
    graph, _ = _imports()
    assert _circles(graph) == []


def test_the_checker_sees_a_circle_and_a_late_import():
    # The checks above must be able to fail: a made-up pair of modules that import each other.
    assert _circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    graph, _ = _imports()
    assert "registry_admin.signals" in graph["registry_admin.ingest"]
    assert len(MODULES) > 50
