r"""Sampler benchmark: decode overhead, fast precision mode, parallel vs sequential.

  python benchmarks/sampler.py --shapes=embedded,imagenet256 \
      --out=benchmarks/results/sampler.json

Ratios are measured in the same run, on random weights:
- overhead = time(decode + detokenize, one jit) /
             (num_iter x time(one transformer forward) + time(detokenize));
  the target is <= 1.05 (the loop adds no host round trips).
- bf16 speed-up = time(float32 sampler) / time(bfloat16 sampler).
- parallel vs sequential = time(256 iterations, one token each) /
  time(num_iter iterations), only with --sequential (slow on a CPU).
Each time is the median of --repeats runs after one warm-up (compilation).
"""
import argparse
import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax import models
from timing import median_time  # benchmarks/timing.py
from maskgit_jax.libml import sampling
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer

SHAPES = {
    # name: (tokenizer preset, transformer preset, image size, classes, channels)
    "embedded": ("small", "small", 32, 10, 1),
    "imagenet256": ("imagenet", "imagenet256", 256, 1000, 3),
}


def build(shape, dtype):
  tok_preset, tr_preset, size, classes, channels = SHAPES[shape]
  tokenizer = vqgan_tokenizer.VQVAE.from_preset(tok_preset, channels=channels)
  transformer = maskgit_transformer.Transformer.from_preset(
      tr_preset, num_classes=classes, dtype=dtype,
      codebook_size=tokenizer.codebook_size,
      latent_size=size // tokenizer.downsample_factor)
  tok_vars = models.init_tokenizer(tokenizer, jax.random.PRNGKey(0), size)
  tr_vars = models.init_transformer(transformer, jax.random.PRNGKey(1))
  return sampling.MaskGitSampler(tokenizer, tok_vars, transformer, tr_vars,
                                 num_classes=classes)


def bench_shape(shape, batch, num_iter, repeats, sequential):
  result = {"shape": shape, "batch": batch, "num_iter": num_iter}
  labels = list(range(batch))
  for dtype_name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    s = build(shape, dtype)
    inputs = np.concatenate([
        s.class_tokens(labels, batch),
        np.full((batch, s.latent_size**2), -1, np.int32)], 1)
    ids = jnp.zeros((batch, s.latent_size, s.latent_size), jnp.int32)
    forward = jax.jit(lambda v, x, s=s: s.transformer.apply(v, x))
    detok = jax.jit(lambda v, x, s=s: s.tokenizer.apply(
        v, x, method=s.tokenizer.decode_from_indices))

    @jax.jit
    def sample(tr_vars, tok_vars, inputs, rng, s=s):
      seqs = s._decode_tokens(  # pylint: disable=protected-access
          tr_vars, inputs, rng, num_iter=num_iter, start_iter=0,
          choice_temperature=4.5, mask_scheduling_method="cosine",
          guidance_scale=0.0, guidance_schedule="constant",
          sampling_temperature=1.0, top_k=0, return_masks=False)
      grid = seqs[:, -1, 1:].reshape(ids.shape)
      return s.tokenizer.apply(tok_vars, grid,
                               method=s.tokenizer.decode_from_indices)

    t_fwd = median_time(lambda: forward(s.transformer_variables, inputs), repeats)
    t_detok = median_time(lambda: detok(s.tokenizer_variables, ids), repeats)
    t_sample = median_time(lambda: sample(
        s.transformer_variables, s.tokenizer_variables, inputs,
        jax.random.PRNGKey(0)), repeats)
    result[dtype_name] = dict(
        forward_s=t_fwd, detokenize_s=t_detok, sample_s=t_sample,
        overhead=t_sample / (num_iter * t_fwd + t_detok))
    if sequential and dtype_name == "float32":
      n = s.latent_size**2
      t_seq = median_time(lambda: s.decode_tokens(
          inputs, jax.random.PRNGKey(0), num_iter=n,
          mask_scheduling_method="uniform"), 1)
      t_par = median_time(lambda: s.decode_tokens(
          inputs, jax.random.PRNGKey(0), num_iter=num_iter), repeats)
      result["sequential_s"], result["parallel_s"] = t_seq, t_par
      result["parallel_speedup"] = t_seq / t_par
  result["bf16_speedup"] = result["float32"]["sample_s"] / result["bfloat16"][
      "sample_s"]
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shapes", default="embedded")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--num_iter", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--sequential", action="store_true")
  parser.add_argument("--out", default="benchmarks/results/sampler.json")
  args = parser.parse_args()
  for shape in args.shapes.split(","):
    if shape not in SHAPES:
      parser.error(f"unknown shape {shape!r}; expected one of {sorted(SHAPES)}")
  rows = [bench_shape(s, args.batch, args.num_iter, args.repeats,
                      args.sequential) for s in args.shapes.split(",")]
  report = {"device": str(jax.devices()[0]), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "results": rows}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  print("| shape | batch | T | forward f32 (s) | sample f32 (s) | overhead f32 |"
        " overhead bf16 | bf16 speed-up |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    f32, b16 = r["float32"], r["bfloat16"]
    print(f"| {r['shape']} | {r['batch']} | {r['num_iter']} | "
          f"{f32['forward_s']:.4f} | {f32['sample_s']:.4f} | "
          f"{f32['overhead']:.3f} | {b16['overhead']:.3f} | "
          f"{r['bf16_speedup']:.2f}x |")
    if "parallel_speedup" in r:
      print(f"  parallel ({r['num_iter']} it) vs sequential: "
            f"{r['parallel_speedup']:.1f}x")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
