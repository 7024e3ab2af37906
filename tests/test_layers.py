"""The package's import structure: no cycle (module-level and function-level imports alike) and no import from a
lower layer into a higher one (docs/architecture.md, "Layers of the package").

Run alone with ``python -m pytest -q tests/test_layers.py``; it parses the sources and imports nothing.
"""
import ast
import collections
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "consistency"

# Bottom to top, by folder (or top-level module) of the package; the longest listed prefix decides.
# A module may import its own layer and the layers below it.
LAYERS = [
    ("core", {"core"}),
    ("maths", {"diffusion"}),
    ("networks and data", {"nets", "data"}),
    ("metrics", {"metrics"}),
    ("objectives", {"objectives"}),
    ("method contract, registry and shared parts", {"methods.base", "methods.__init__", "methods.components"}),
    ("methods", {"methods"}),
    ("config", {"config", "presets"}),
    ("run", {"run"}),
    ("inference api", {"api"}),
    ("tools", {"tools"}),
    ("cli", {"main", "__init__"}),
]
# Known upward imports, each with the reason it is still there (issue: method-owned config blocks).
ALLOWED_UPWARD = {
    ("consistency.methods.components.teachers", "consistency.config"):
        "a teacher workdir's config.json is read through the run-config schema",
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("consistency",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    edges = collections.defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for candidate in [f"{source}.{alias.name}" for alias in node.names] + [source]:
                    if candidate in modules and candidate != name:
                        edges[name].add(candidate)
                        break
            elif isinstance(node, ast.Import):
                edges[name].update(alias.name for alias in node.names if alias.name in modules and alias.name != name)
    return edges


def _layer_of(module: str) -> tuple[int, str]:
    parts = module.split(".")[1:]
    if PACKAGE.joinpath(*parts, "__init__.py").is_file():  # a package's own __init__: "methods.__init__", "__init__"
        parts.append("__init__")
    for n in range(len(parts), 0, -1):  # the longest listed prefix decides: methods.components before methods
        prefix = ".".join(parts[:n])
        for rank, (_, members) in enumerate(LAYERS):
            if prefix in members:
                return rank, prefix
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py; add its folder or module to LAYERS")


def _cycles(edges: dict[str, set[str]], nodes) -> list[list[str]]:
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    modules = _modules()
    assert _cycles(_imports(modules), sorted(modules)) == []


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    upward = []
    for source, targets in sorted(_imports(modules).items()):
        (mine, my_top) = _layer_of(source)
        for target in sorted(targets):
            (theirs, their_top) = _layer_of(target)
            if theirs > mine and (source, target) not in ALLOWED_UPWARD:
                upward.append(f"{source} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert upward == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges, ["a", "b", "c", "d"]) == [["a", "b", "c"]]
    assert _layer_of("consistency.run.train") > _layer_of("consistency.methods.cd")
    assert _layer_of("consistency.diffusion.solvers")[0] == 1


def test_the_maths_layer_never_imports_flax():
    for path in (PACKAGE / "diffusion").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in node.names} | {node.module or "" for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom)}
        assert not any(n.split(".")[0] == "flax" for n in names), path


def test_the_contract_registry_and_shared_method_parts_are_below_every_method():
    assert _layer_of("consistency.methods.components.common")[0] < _layer_of("consistency.methods.cd")[0]
    assert _layer_of("consistency.methods")[0] == _layer_of("consistency.methods.base")[0]  # the registry
    assert _layer_of("consistency")[1] == "__init__"


def test_no_two_modules_share_a_name_except_a_method_and_its_objective():
    by_name = collections.defaultdict(list)
    for name, path in _modules().items():
        if path.name != "__init__.py":
            by_name[path.stem].append(name)
    shared = {stem: sorted(names) for stem, names in by_name.items() if len(names) > 1}
    pairs = {stem: names for stem, names in shared.items()
             if names == sorted([f"consistency.methods.{stem}", f"consistency.objectives.{stem}"])}
    assert {stem: names for stem, names in shared.items() if stem not in pairs} == {}
