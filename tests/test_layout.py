"""The package's layout: no import cycles, and the arrows point down.

Every `import` of a maskgit_jax module counts, including imports inside
functions (a cycle hidden in a function is still a cycle).
"""
import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "maskgit_jax"


def modules(root=ROOT):
  """{module name: file path} of the package."""
  out = {}
  for folder, _, names in os.walk(os.path.join(root, PACKAGE)):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        if module.endswith(".__init__"):
          module = module[:-len(".__init__")]
        out[module] = path
  return out


def import_graph(mods):
  """{module: set of maskgit_jax modules it imports}."""
  edges = {m: set() for m in mods}
  for module, path in mods.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        names = [f"{node.module}.{a.name}"
                 if f"{node.module}.{a.name}" in mods else node.module
                 for a in node.names]
      for name in names:
        if not name.startswith(PACKAGE):
          continue
        while name not in mods:
          name = name.rsplit(".", 1)[0]
        if name != module:
          edges[module].add(name)
  return edges


def cycles(edges):
  """The strongly connected components with more than one module."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in edges[v]:
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
  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def test_the_cycle_finder_finds_a_cycle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
      ["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
  assert cycles(import_graph(modules())) == []


def _package(module):
  parts = module.split(".")
  return parts[1] if len(parts) > 2 else None


@pytest.mark.parametrize("lower,upper", [
    ("nets", "libml"), ("nets", "train_lib"), ("nets", "evaluation"),
    ("train_lib", "evaluation"), ("common", "nets"), ("common", "store"),
    ("metrics", "train_lib"), ("data", "train_lib"), ("store", "train_lib"),
    ("store", "evaluation"), ("libml", "train_lib"), ("libml", "evaluation"),
])
def test_arrows_point_down(lower, upper):
  edges = import_graph(modules())
  wrong = sorted(f"{m} -> {t}" for m, targets in edges.items()
                 if _package(m) == lower for t in targets
                 if _package(t) == upper)
  assert not wrong, f"{lower} must not import {upper}: {wrong}"


def test_the_root_holds_entry_points_and_packages():
  root = os.path.join(ROOT, PACKAGE)
  files = sorted(n for n in os.listdir(root) if n.endswith(".py"))
  assert files == ["__init__.py", "cli.py", "evaluate.py", "export.py",
                   "sample.py", "train.py"]


def test_modules_stay_small():
  sizes = {m: sum(1 for _ in open(p)) for m, p in modules().items()}
  big = {m: n for m, n in sizes.items() if n > 400}
  assert not big, big


def top_level_imports(path):
  """The top-level packages a file imports (anywhere in it)."""
  names = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split(".")[0])
  return names


@pytest.mark.parametrize("entry", ["train", "sample", "evaluate", "export"])
def test_entry_points_only_turn_flags_into_a_library_call(entry):
  # No arrays in an entry point: the work is in a library function that
  # tests and the notebook call too.
  imports = top_level_imports(os.path.join(ROOT, PACKAGE, f"{entry}.py"))
  assert not imports & {"jax", "numpy", "flax", "optax", "orbax"}, imports


def test_train_imports_the_evaluation_stack_only_to_evaluate():
  # `python -m maskgit_jax.train` without evaluators does not import the FID
  # network, scipy or the samplers' evaluation (about half a second of
  # every start).
  code = ("import json, sys, maskgit_jax.train; print(json.dumps(sorted(m "
          "for m in sys.modules if m.startswith(('maskgit_jax.evaluation.',"
          " 'maskgit_jax.metrics.', 'scipy')))))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  loaded = json.loads(out)
  assert loaded and all(m in ("maskgit_jax.evaluation.evaluators",
                              "maskgit_jax.evaluation.report",
                              "maskgit_jax.metrics.quality")
                        for m in loaded), loaded
