"""Writes tests/data/release_decode_parity.npz from the released decoder.

Usage (once, by hand; not part of the test suite):
  PYTHONPATH=/path/to/google-research-maskgit python \
      tests/data/tools/make_release_decode_parity.py

The released `maskgit/libml/parallel_decode.py` annotates its state with
`jnp.DeviceArray`, which current JAX no longer has; replace it by `jax.Array`
in your checkout first. Each case runs the released `decode` on a fixed
`tokens_to_logits` (a lookup table over the current ids plus a per-position
term, stored in the file) and stores the tokens it returns, under both
settings of `jax_threefry_partitionable`.
"""
import pathlib

import jax
import jax.numpy as jnp
from maskgit.libml import parallel_decode as release_decode  # pylint: disable=import-error
import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[1] / "release_decode_parity.npz"
CASES = [  # (name, num_iter, start_iter, choice_temperature, method, seed)
    ("cosine_t4.5", 8, 0, 4.5, "cosine", 0),
    ("cosine_t1", 12, 0, 1.0, "cosine", 1),
    ("uniform_t0", 6, 0, 0.0, "uniform", 2),
    ("pow2.5_t2", 8, 0, 2.0, "pow2.5", 3),
    ("log_t1", 8, 0, 1.0, "log", 4),
    ("exp_t1", 8, 0, 1.0, "exp", 5),
    ("edit_start2", 12, 2, 4.5, "cosine", 6),
]


def main():
  rs = np.random.RandomState(0)
  batch, seq_len, vocab = 3, 17, 12
  table = rs.randn(vocab + 1, vocab).astype(np.float32) * 2
  position = rs.randn(seq_len, vocab).astype(np.float32)
  full = np.full((batch, seq_len), -1, np.int32)
  full[:, 0] = vocab + np.arange(batch)  # a "class" token at position 0
  partial = full.copy()
  partial[:, 1:9] = rs.randint(0, vocab, (batch, 8))
  out = dict(table=table, position=position, full=full, partial=partial)

  def tokens_to_logits(ids):
    rows = jnp.where(ids < 0, vocab, jnp.minimum(ids, vocab))
    return jnp.asarray(table)[rows] + jnp.asarray(position)[None]

  for partitionable in (True, False):
    jax.config.update("jax_threefry_partitionable", partitionable)
    for name, num_iter, start_iter, temp, method, seed in CASES:
      inputs = partial if start_iter else full
      seqs = release_decode.decode(
          jnp.asarray(inputs), jax.random.PRNGKey(seed), tokens_to_logits,
          mask_token_id=-1, num_iter=num_iter, start_iter=start_iter,
          choice_temperature=temp, mask_scheduling_method=method)
      out[f"{name}/partitionable={partitionable}"] = np.asarray(seqs)
  np.savez_compressed(OUT, **out)
  print("wrote", OUT, sorted(out))


if __name__ == "__main__":
  main()
