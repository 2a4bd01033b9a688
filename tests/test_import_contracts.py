"""The import contracts cover every module, the import graph has no cycle, and function-level imports say why.

``lint-imports`` (in .ci/run) checks the contracts in .importlinter; it cannot notice a module that no contract
names. These tests do: a new top-level module of kf_core or service must be placed in each list it belongs to.
The cycle check builds the same graph import-linter builds (grimp, type-checking imports left out, imports inside
functions included) and looks for strongly connected components between modules.
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
_PUBLIC = {"errors", "ort", "evaluation"}  # kf_core's public modules besides the package itself


def _contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    return parser


def _listed(contract: str, key: str) -> set[str]:
    return set(_contracts()[f"importlinter:contract:{contract}"][key].split())


def _top_level(package: str) -> set[str]:
    """The modules and subpackages directly under ``package`` (Python only: service/ui is static files)."""
    base = ROOT / package.replace(".", "/")
    modules = {p.stem for p in base.glob("*.py") if p.stem != "__init__"}
    return modules | {p.name for p in base.iterdir() if (p / "__init__.py").is_file()}


def test_the_engine_contract_names_every_engine_module() -> None:
    engine = {f"kf_core.{m}" for m in _top_level("kf_core") - {"evaluation"}}
    assert engine - _listed("engine-without-evaluation", "source_modules") == set()


def test_the_service_may_import_only_kf_cores_public_modules() -> None:
    private = {f"kf_core.{m}" for m in _top_level("kf_core") - _PUBLIC}
    private |= {f"kf_core.evaluation.{m}" for m in _top_level("kf_core.evaluation")}
    assert private - _listed("kf-core-public-names", "forbidden_modules") == set()


def test_every_service_module_has_a_layer_and_only_the_edge_imports_http() -> None:
    layers = set()
    for line in _contracts()["importlinter:contract:service-layers"]["layers"].split("\n"):
        layers |= {name.strip() for name in line.split("|") if name.strip()}
    assert _top_level("service") == layers
    not_http = {f"service.{m}" for m in _top_level("service") - {"api", "main"}} | {"kf_core"}
    assert not_http == _listed("http-at-the-edge", "source_modules")


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    work: list[tuple[str, Iterator[str]]] = []  # the depth-first path: a module and the imports left to visit

    def enter(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        work.append((v, iter(sorted(graph.find_modules_directly_imported_by(v) & modules))))

    for root in sorted(modules):
        if root in index:
            continue
        enter(root)
        while work:
            v, targets = work[-1]
            w = next(targets, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        u = stack.pop()
                        on_stack.discard(u)
                        component.append(u)
                        if u == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif w not in index:
                enter(w)
            elif w in on_stack:
                low[v] = min(low[v], index[w])
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("kf_core", "service", exclude_type_checking_imports=True)


def test_the_cycle_finder_finds_a_cycle() -> None:
    fake = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        fake.add_import(importer=a, imported=b)
    assert _cycles(fake, set(fake.modules)) == [["p.a", "p.b", "p.c"]]


def test_no_import_cycle_in_kf_core_or_service(graph: grimp.ImportGraph) -> None:
    modules = {m for m in graph.modules if m.split(".")[0] in ("kf_core", "service")}
    assert len(modules) > 100
    assert _cycles(graph, modules) == []


def _function_level_imports(source: str) -> Iterator[tuple[int, bool]]:
    """(line, explained) for each import inside a function. Explained: a comment on its line, or on the line above
    it or above the run of imports it belongs to (one comment may explain a group)."""
    lines = source.splitlines()

    def commented(node: ast.stmt) -> bool:
        above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        return "#" in lines[node.lineno - 1] or above.startswith("#")

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[int, bool]]:
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for field in ("body", "orelse", "finalbody", "handlers"):
            group_explained = False
            statements = getattr(node, field, None)
            for child in statements if isinstance(statements, list) else []:
                if inside and isinstance(child, ast.Import | ast.ImportFrom):
                    group_explained = group_explained or commented(child)
                    yield child.lineno, group_explained
                else:
                    group_explained = False
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inside)

    return visit(ast.parse(source), False)


def test_every_function_level_import_says_why_it_is_not_at_the_top() -> None:
    unexplained = []
    for package in ("kf_core", "service"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, explained in _function_level_imports(path.read_text()):
                if not explained:
                    unexplained.append(f"{path.relative_to(ROOT)}:{line}")
    assert unexplained == [], "imports inside functions without a comment saying why:\n" + "\n".join(unexplained)
