"""The device mesh, logical-axis rules, and shardings of the train state.

The mesh has three named axes, `("data", "fsdp", "model")`; its shape comes
from `config.mesh` (one entry may be -1: it takes the remaining devices).
Batches are sharded over `("data", "fsdp")`. Parameters that carry logical
axis names (the transformer's) are mapped by `config.logical_axis_rules`;
a mesh axis that does not divide its dimension (e.g. the odd vocabulary
2025 over 2 model shards) is dropped for that dimension. Parameters without
names (tokenizer, discriminator) are sharded by size under FSDP: the largest dimension that the `fsdp` axis divides, for arrays of at
least `min_fsdp_size` elements, else replicated. Optimizer state and EMA
follow their parameters because they have the same tree structure below
`params`-shaped subtrees.
"""

import contextlib
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis (MaxText-style). `embed` is sharded by FSDP,
# the wide dimensions by tensor (model) parallelism.
DEFAULT_RULES = (
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("vocab", "model"),
    ("norm", None),
    ("layers", None),  # the scanned layer stack (transformer.scan_layers)
)


def parse_rules(rules) -> Tuple[Tuple[str, Any], ...]:
  """`config.logical_axis_rules` as a tuple of (logical axis, mesh axes)
  pairs; the mesh axes are None, one of MESH_AXES or a tuple of them. One
  ValueError naming the bad entry otherwise."""
  def axes_ok(axes):
    if axes is None or axes in MESH_AXES:
      return True
    return (isinstance(axes, (tuple, list)) and
            all(a in MESH_AXES for a in axes))
  if not isinstance(rules, (tuple, list)):
    raise ValueError(f"config.logical_axis_rules={rules!r}: expected pairs "
                     "(logical axis, mesh axes).")
  out = []
  for rule in rules:
    if (not isinstance(rule, (tuple, list)) or len(rule) != 2 or
        not isinstance(rule[0], str) or not axes_ok(rule[1])):
      raise ValueError(
          f"config.logical_axis_rules entry {rule!r}: expected a pair "
          f"(logical axis name, mesh axes: None, one of {MESH_AXES} or a "
          "tuple of them).")
    axes = tuple(rule[1]) if isinstance(rule[1], list) else rule[1]
    out.append((rule[0], axes))
  return tuple(out)


def mesh_shape(shape: Sequence[int], num_devices: int) -> Tuple[int, ...]:
  """Resolves one -1 in a (data, fsdp, model) shape; checks the product."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"config.mesh must have {len(MESH_AXES)} entries "
                     f"{MESH_AXES}, got {shape}.")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"config.mesh={shape}: use positive sizes and at most "
                     "one -1.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"config.mesh={shape} does not divide {num_devices} "
                       "devices.")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"config.mesh={shape} needs {int(np.prod(shape))} "
                     f"devices, {num_devices} are available.")
  return shape


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """A (data, fsdp, model) mesh over `devices` (default: all)."""
  devices = jax.devices() if devices is None else devices
  resolved = mesh_shape(shape, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if devices is None or list(devices) == jax.devices():
    return jax.make_mesh(resolved, MESH_AXES, axis_types=auto)
  return Mesh(np.asarray(devices).reshape(resolved), MESH_AXES,
              axis_types=auto)


@contextlib.contextmanager
def mesh_context(mesh: Mesh):
  """The mesh in scope for jitted steps.

  Logical-axis rules are deliberately *not* put in scope: flax re-runs
  parameter initializers under `eval_shape` to check shapes, and a
  `DenseGeneral` kernel initializer sees a flattened shape there, which
  global rules would constrain with the wrong rank. Activation constraints
  get their rules explicitly (`Transformer.activation_rules`).
  """
  with jax.set_mesh(mesh):
    yield


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape, fsdp: int, min_size: int) -> P:
  if fsdp <= 1 or int(np.prod(shape)) < min_size:
    return P()
  order = sorted(range(len(shape)), key=lambda i: -shape[i])
  for i in order:
    if shape[i] % fsdp == 0:
      spec = [None] * len(shape)
      spec[i] = "fsdp"
      return P(*spec)
  return P()


def _divisible(spec: P, shape, mesh: Mesh) -> P:
  """Drops mesh axes that do not divide their dimension (e.g. an odd vocab)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    out.append(axes if dim % size == 0 else None)
  return P(*out)


def state_shardings(abstract_state: Any, mesh: Mesh,
                    rules: Sequence[Tuple[str, Any]] = DEFAULT_RULES,
                    min_fsdp_size: int = 2**14) -> Any:
  """NamedShardings for a (possibly boxed) abstract state.

  Args:
    abstract_state: output of `jax.eval_shape` of the init function, with
      `nn.LogicallyPartitioned` boxes where parameters have logical names.
    mesh: the mesh.
    rules: logical-to-mesh axis rules.
    min_fsdp_size: unnamed arrays smaller than this stay replicated.

  Returns:
    A tree of `NamedSharding` with the structure of the *unboxed* state.
  """
  boxed = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  # A box around no array (an optimizer state's placeholder for a parameter
  # that another transform updates, e.g. optax's MaskedNode) is its value.
  abstract_state = jax.tree.map(
      lambda x: x.unbox() if boxed(x) and not jax.tree.leaves(x.unbox())
      else x, abstract_state, is_leaf=boxed)
  specs = nn.get_partition_spec(abstract_state)
  unboxed = nn.meta.unbox(abstract_state)
  fsdp = mesh.shape["fsdp"]

  def to_sharding(spec, leaf):
    if leaf is None:
      return None
    if not hasattr(leaf, "shape"):
      return replicated(mesh)
    if spec is None or all(s is None for s in spec):
      return NamedSharding(mesh, _fsdp_spec(leaf.shape, fsdp, min_fsdp_size))
    mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules)
    return NamedSharding(mesh, _divisible(mesh_spec, leaf.shape, mesh))

  return jax.tree.map(to_sharding, specs, unboxed,
                      is_leaf=lambda x: isinstance(x, P) or x is None)
