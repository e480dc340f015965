"""The import structure: imports run one way, from the CLI down to the ground floor, with no circle.

Every `import` of a seal module (at the top of a file or inside a function) is read from the
source; a module may import only from its own layer or the layers below, never from a layer
above, the engine never from a domain, and no two modules import each other (even indirectly).
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# From the bottom up. A module belongs to the layer of the longest prefix that names it.
LAYERS = [
    ["seal.errors", "seal.config", "seal.datasets", "seal.stats", "seal.report", "seal.files"],  # the ground floor
    ["seal.store", "seal.models"],
    ["seal.status", "seal.tracking"],  # what a run's records tell while it runs
    ["seal.domains", "seal.grading"],  # what a context, a self-edit, a plan and a grade are
    ["seal.engine"],  # train and score K adapters: no domain in it
    ["seal.policy"],  # the ReST-EM M-step
    ["seal.cluster"],  # where model work runs
    ["seal.experiments.steps", "seal.experiments.qa", "seal.experiments.knowledge_steps", "seal.experiments.arc_steps"],
    ["seal.experiments.rest_em"],  # the outer loop, once for every domain
    ["seal.experiments", "seal.memory"],  # one module per experiment; a user's library of adapters
    ["seal.cli", "seal.__main__"],
]
FORBIDDEN = [
    ("seal.engine", "seal.domains"),  # the engine knows no domain
    ("seal.engine", "seal.experiments"),
    ("seal.engine", "seal.grading"),  # graders are the knowledge side's: scoring is handed in
    ("seal.domains.knowledge", "seal.domains.arc"),  # no imports between domains
    ("seal.domains.arc", "seal.domains.knowledge"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def seal_imports(path: Path) -> set[str]:
    """Every seal module the file imports, wherever the import stands."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.startswith("seal")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seal"):
            # `from seal import policy` imports the module seal.policy
            out |= {f"{node.module}.{alias.name}" if node.module == "seal" else node.module for alias in node.names}
    return out


def layer(name: str) -> int:
    matches = [(len(prefix), i) for i, prefixes in enumerate(LAYERS) for prefix in prefixes if _within(name, prefix)]
    assert matches, f"{name} is in no layer: add it to LAYERS"
    return max(matches)[1]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import in `graph` (module -> the seal modules it imports) from a layer above or across a forbidden
    line."""
    out = []
    for module, imports in sorted(graph.items()):
        for imported in sorted(imports):
            if layer(imported) > layer(module):
                out.append(f"{module} (layer {layer(module)}) imports {imported} from above")
            out += [
                f"{module} imports {imported}"
                for importer, target in FORBIDDEN
                if _within(module, importer) and _within(imported, target)
            ]
    return out


def import_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports among the modules of `graph` (its modules, the first one again at the end), or None."""
    modules = {m: {i for i in imports if i in graph and i != m} for m, imports in graph.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(modules[module]):
            if state.get(imported) == "open":
                walk = path + [module]
                return walk[walk.index(imported) :] + [imported]
            if imported not in state:
                found = visit(imported, path + [module])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(modules):
        if module not in state:
            found = visit(module, [])
            if found:
                return found
    return None


GRAPH = {module_name(p): seal_imports(p) for p in sorted((SRC / "seal").rglob("*.py")) if module_name(p) != "seal"}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_from_a_layer_above_it_or_across_a_forbidden_line(module):
    assert upward_imports({module: GRAPH[module]}) == []


def test_no_import_circle():
    circle = import_circle(GRAPH)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_a_circle_or_an_upward_import_would_be_caught():
    """The checks above on made-up graphs: a clean one passes, an upward import, a forbidden import and a
    circle are each reported."""
    clean = {"seal.cli": {"seal.experiments.arc"}, "seal.experiments.arc": {"seal.store"}, "seal.store": set()}
    assert upward_imports(clean) == [] and import_circle(clean) is None
    upward = clean | {"seal.engine.loop": {"seal.policy"}, "seal.policy": set()}
    assert upward_imports(upward) == ["seal.engine.loop (layer 4) imports seal.policy from above"]
    across = clean | {"seal.domains.arc.ttt": {"seal.domains.knowledge"}, "seal.domains.knowledge": set()}
    assert upward_imports(across) == ["seal.domains.arc.ttt imports seal.domains.knowledge"]
    circle = clean | {"seal.store": {"seal.models"}, "seal.models": {"seal.store"}}
    assert upward_imports(circle) == [] and import_circle(circle) == ["seal.store", "seal.models", "seal.store"]
