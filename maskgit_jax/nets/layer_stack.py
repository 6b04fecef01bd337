"""The transformer's layers as one scanned stack, and back.

With `Transformer.scan_layers=True` the layers are one `nn.scan` (compiled
once, and with `remat` the backward pass keeps one layer's activations at a
time whatever the compiler's scheduling). Their variables then live under
`STACK` with a leading `[num_layers]` axis (logical axis "layers") instead of
`TransformerLayer_0 ... TransformerLayer_{n-1}`, the release's layout.
`to_layout` converts a parameter tree either way, so released checkpoints
load into a scanned model and exports stay in the release's layout.
"""
import re
from typing import Any, Dict

import jax
import numpy as np

STACK = "TransformerLayers"
_LAYER = re.compile(r"^TransformerLayer_(\d+)$")


def is_scanned(params: Dict[str, Any]) -> bool:
  """Whether a transformer's parameter tree has its layers stacked."""
  return STACK in params


def stack(params: Dict[str, Any]) -> Dict[str, Any]:
  """`TransformerLayer_<i>` subtrees -> one `STACK` subtree, leaves
  `[num_layers, ...]` in layer order. A tree without the layers
  `TransformerLayer_0..N-1` comes back unchanged, for the tree check that
  follows every load to name the file and what differs; so do layers that
  differ in structure or shapes."""
  found = sorted((int(m.group(1)), k) for k in params
                 for m in [_LAYER.match(k)] if m)
  if not found or [i for i, _ in found] != list(range(len(found))):
    return dict(params)
  rest = {k: v for k, v in params.items() if not _LAYER.match(k)}
  layers = [params[k] for _, k in found]
  try:
    rest[STACK] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
  except ValueError:  # layers of different structure or shapes
    return dict(params)
  return rest


def unstack(params: Dict[str, Any]) -> Dict[str, Any]:
  """The inverse of `stack`."""
  rest = {k: v for k, v in params.items() if k != STACK}
  stacked = params[STACK]
  count = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(count):
    rest[f"TransformerLayer_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return rest


def to_layout(params: Dict[str, Any], scanned: bool) -> Dict[str, Any]:
  """`params` (a transformer's parameter tree, either layout) in the scanned
  layout if `scanned`, else in the release's."""
  if is_scanned(params) == scanned:
    return params
  return stack(params) if scanned else unstack(params)
