"""The package's imports point down only, and never in a circle: domain/ (pure) at the bottom, the command line
and the deployment at the top (README, "What is where")."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "learning_pipelines"
# Bottom first; a module may import its own level and any lower one.
LAYERS = (
    ("domain", "settings", "errors", "pause_points"),
    ("db", "ingest"),
    ("flows", "observability", "dagster_reports"),
    ("defs",),
    ("definitions", "demo", "cli", "deploy"),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module of the package `path` imports, wherever the import stands (a lazy or TYPE_CHECKING import
    still ties the two modules together)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("learning_pipelines.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in _imports(path) if target in modules and target != name}
            for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS")


def test_every_import_points_to_the_same_layer_or_below():
    upward = sorted(f"{source} -> {target}" for source, targets in _graph().items() if source != "learning_pipelines"
                    for target in targets if _layer(target) > _layer(source))
    assert upward == []


def test_no_module_imports_itself_through_others():
    graph = _graph()
    cycles = set()

    def visit(module: str, path: list[str]) -> None:
        for target in graph[module]:
            if target in path:
                cycle = path[path.index(target):]
                start = cycle.index(min(cycle))
                cycles.add(" -> ".join(cycle[start:] + cycle[:start] + [min(cycle)]))
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert sorted(cycles) == []


DEFS = PACKAGE / "defs"
MOST_DEFS_MODULE_LINES = 150
MOST_ASSET_BODY_LINES = 15  # guards, one recipe call (flows/) and its result
SQL_OUTSIDE_DB = {"ingest/readers.py",  # an Anki collection's own tables, not the warehouse
                  "deploy/stack_setup.py"}  # creating the stack's databases


def _assets(tree: ast.Module) -> list[ast.FunctionDef]:
    def is_asset(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return isinstance(target, ast.Attribute) and target.attr in ("asset", "multi_asset")
    return [node for node in tree.body if isinstance(node, ast.FunctionDef) and any(map(is_asset, node.decorator_list))]


def test_defs_modules_are_thin_wiring():
    for path in sorted(DEFS.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= MOST_DEFS_MODULE_LINES, f"{path.name}: over {MOST_DEFS_MODULE_LINES} lines"
        if path.name != "resources.py":
            assert "sqlalchemy" not in text, f"{path.name} touches SQLAlchemy (only defs/resources.py may)"


def test_each_asset_body_is_guards_one_recipe_call_and_its_result():
    for path in sorted(DEFS.glob("*.py")):
        for asset in _assets(ast.parse(path.read_text())):
            body = asset.body[1:] if isinstance(asset.body[0], ast.Expr) else asset.body  # without its docstring
            lines = body[-1].end_lineno - body[0].lineno + 1
            assert lines <= MOST_ASSET_BODY_LINES, f"{path.name}:{asset.name} body is {lines} lines"


def test_no_warehouse_sql_outside_db():
    statements = ("sa.text(", "sa.select(", ".insert()", ".delete()", ".update()", "exec_driver_sql(")
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("db/") or relative in SQL_OUTSIDE_DB:
            continue
        text = path.read_text()
        assert not [s for s in statements if s in text], f"{relative} holds SQL: move it to db/"
