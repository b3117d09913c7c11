"""The layout's rules, read from the code's own imports (ast): at most ten top-level modules, no import circles,
no project import hidden inside a function, and data/ standing on its own. Each rule is also checked on a small
hand-made tree, so a checker that sees nothing cannot pass."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "run", "evaluation", "experiments", "course")


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the top-level .py files and the packages' modules (tests left out)."""
    modules = {path.stem: path for path in root.glob("*.py")}
    for package in PACKAGES:
        for path in (root / package).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def imports(path: Path, modules: dict) -> list[tuple[str, bool]]:
    """(project module imported, whether the import sits inside a function) for every import in the file."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
            found.extend((name, inside) for name in names if name in modules)
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def circles(root: Path) -> list[list[str]]:
    """Every import circle among the project's modules (depth-first search for back edges)."""
    modules = project_modules(root)
    graph = {name: sorted({imported for imported, _ in imports(path, modules)} - {name})
             for name, path in modules.items()}
    found, state, stack = [], {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for imported in graph[name]:
            if state.get(imported) == "open":
                found.append(stack[stack.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return found


def function_local_imports(root: Path) -> list[str]:
    modules = project_modules(root)
    return [f"{path.relative_to(root)}: {name}" for path in modules.values()
            for name, inside in imports(path, modules) if inside]


def test_checks_see_a_circle_and_a_hidden_import(tmp_path):
    (tmp_path / "a.py").write_text("from b import f\n")
    (tmp_path / "b.py").write_text("import c\n")
    (tmp_path / "c.py").write_text("def g():\n    from a import f\n    return f\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("")
    (tmp_path / "data" / "d.py").write_text("import a\n")
    assert circles(tmp_path) == [["a", "b", "c", "a"]]
    assert function_local_imports(tmp_path) == ["c.py: a"]


def test_at_most_ten_top_level_modules():
    top = sorted(path.name for path in REPO.glob("*.py"))
    assert len(top) <= 10, top


def test_no_import_circles():
    assert circles(REPO) == []


def test_no_project_import_inside_a_function():
    assert function_local_imports(REPO) == []


def test_data_imports_only_data():
    modules = project_modules(REPO)
    outside = [f"{name}: {imported}" for name, path in modules.items() if name.split(".")[0] == "data"
               for imported, _ in imports(path, modules) if imported.split(".")[0] != "data"]
    assert outside == []
