"""Checkpoint fingerprints: the host route gives the device route's integers."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from maskgit_jax.store import fingerprints as fp


def _leaves():
  rng = np.random.default_rng(0)
  mesh = Mesh(np.array(jax.devices()), ("d",))
  return [
      jnp.asarray(rng.standard_normal((3, 5, 7)), jnp.float32),
      jnp.asarray(rng.standard_normal((30, 7)), jnp.bfloat16),
      jnp.asarray(rng.standard_normal((4,)), jnp.float16),
      jnp.asarray(rng.integers(0, 255, (9, 4)), jnp.uint8),
      jnp.asarray(rng.integers(-5, 5, (11,)), jnp.int32),
      jnp.asarray(rng.random((6, 3)) > 0.5),
      jnp.asarray(3, jnp.int32),
      jax.random.PRNGKey(3),
      jax.random.key(5),
      np.arange(10),  # int64 on the host: int32 as JAX sees it
      np.float32(2.5),
      jax.device_put(jnp.asarray(rng.standard_normal((8, 6)), jnp.float32),
                     NamedSharding(mesh, P("d"))),
  ]


def test_known_answer():
  # words 1, 2 at positions 0, 1: weights 1 and 0x9E3779B1 (odd already).
  expected = (1 + 2 * 0x9E3779B1) % 2**32
  x = np.array([1, 2], np.uint32)
  assert fp._host_fingerprint(x) == expected
  assert int(jax.device_get(fp._fingerprints([jnp.asarray(x)]))[0]) == expected


def test_host_route_equals_device_route(monkeypatch):
  leaves = _leaves()
  device = [int(v) for v in jax.device_get(fp._fingerprints(leaves))]
  state = {"a": leaves}
  names = [f"a/{i}" for i in range(len(leaves))]
  assert fp._on_host(leaves)  # one process on a CPU
  assert fp.fingerprints(state) == dict(zip(names, device))
  monkeypatch.setattr(fp, "_CHUNK", 7)  # chunks that split the arrays
  assert fp.fingerprints(state) == dict(zip(names, device))
  monkeypatch.setattr(fp, "_on_host", lambda leaves: False)
  assert fp.fingerprints(state) == dict(zip(names, device))


def test_every_bit_counts():
  x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
  base = fp._host_fingerprint(x)
  flipped = x.copy()
  flipped.view(np.uint32)[3, 2] ^= np.uint32(1 << 17)
  assert fp._host_fingerprint(flipped) != base
  swapped = x.copy()
  swapped[[0, 1]] = swapped[[1, 0]]  # same values, other positions
  assert fp._host_fingerprint(swapped) != base
