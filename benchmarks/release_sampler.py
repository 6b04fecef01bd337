r"""The float32 sampler against the release's, on the same weights and key.

  python benchmarks/release_sampler.py --release_path=DIR \
      [--batches=2,8] [--num_iter=8] [--repeats=3] \
      [--out=benchmarks/results/release_sampler.json]

DIR is a checkout of github.com/google-research/maskgit (the directory that
holds `maskgit/`; default: $MASKGIT_RELEASE_PATH). Its code is imported only
here, by this benchmark; the package never depends on it. Its
`parallel_decode` annotates its state with `jnp.DeviceArray`, which current
JAX no longer has: the name is pointed at `jax.Array` before the import, and
the checkout is left as it is.

At the ImageNet-256 shape (random weights from `store.loader`, which uses
the released checkpoints' layout, so the release's modules apply the very
same variables), batch B, each side compiles one program of decode +
detokenize, float32, the release's sampling (choice temperature 4.5, cosine
schedule, no guidance, token temperature 1):

  release  `maskgit.libml.parallel_decode.decode` over the release's
           `maskgit_transformer.Transformer` (logits sliced to the codebook,
           as its `inference.py` does), then its `VQVAE.decode_from_indices`;
  ours     `MaskGitSampler`'s decode and the tokenizer's
           `decode_from_indices`, the program `benchmarks/sampler.py` times
           (`sampler.sample_and_tokens`).

It checks that both give the same tokens (to the bit) and images (to float32
rounding), then times them in interleaved rounds (`timing.interleaved_times`)
and reports time(ours) / time(release), the medians. Issue 14's target:
<= 1.0. A checkout that is missing or does not import stops with one
`error:` line.
"""
import argparse
import json
import os
import pathlib
import platform
import sys

if __name__ == "__main__":  # before the imports below, which take seconds
  from maskgit_jax.common import allocator  # pylint: disable=g-import-not-at-top
  allocator.maybe_reexec()  # as the entry points run

import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.common import allocator
import prepare  # benchmarks/prepare.py
import sampler as sampler_bench  # benchmarks/sampler.py
import timing  # benchmarks/timing.py
from maskgit_jax.libml import sampling

TARGET = 1.0


def import_release(path):
  """The release's (parallel_decode, maskgit_transformer, vqgan_tokenizer,
  class-conditional config) modules from checkout `path`; SystemExit with
  one `error:` line when they cannot be imported."""
  if not path:
    raise SystemExit("error: no release checkout: pass --release_path=DIR "
                     "or set MASKGIT_RELEASE_PATH (a checkout of "
                     "github.com/google-research/maskgit).")
  if not (pathlib.Path(path) / "maskgit" / "libml" /
          "parallel_decode.py").is_file():
    raise SystemExit(f"error: --release_path={path} holds no "
                     "maskgit/libml/parallel_decode.py (a checkout of "
                     "github.com/google-research/maskgit expected).")
  if not hasattr(jnp, "DeviceArray"):
    jnp.DeviceArray = jax.Array  # what the release's annotations name
  sys.path.insert(0, str(pathlib.Path(path).resolve()))
  try:
    # pylint: disable=import-outside-toplevel,import-error
    from maskgit.configs import maskgit_class_cond_config
    from maskgit.libml import parallel_decode
    from maskgit.nets import maskgit_transformer
    from maskgit.nets import vqgan_tokenizer
  except Exception as e:  # pylint: disable=broad-except
    raise SystemExit(f"error: the release's modules under {path} do not "
                     f"import: {type(e).__name__}: {e}") from None
  return (parallel_decode, maskgit_transformer, vqgan_tokenizer,
          maskgit_class_cond_config)


def release_program(release, image_size, num_iter, choice_temperature):
  """The release's decode + detokenize as one function
  (transformer variables, tokenizer variables, inputs, rng) ->
  (images, final tokens), built as its `inference.py` builds it."""
  decode_lib, transformer_lib, tokenizer_lib, config_lib = release
  cf = config_lib.get_config()
  cf.image_size = image_size
  latent = image_size // cf.transformer.patch_size
  codebook = cf.vqvae.codebook_size
  transformer = transformer_lib.Transformer(
      vocab_size=codebook + cf.num_class + 1,
      hidden_size=cf.transformer.num_embeds,
      num_hidden_layers=cf.transformer.num_layers,
      num_attention_heads=cf.transformer.num_heads,
      intermediate_size=cf.transformer.intermediate_size,
      hidden_dropout_prob=cf.transformer.dropout_rate,
      attention_probs_dropout_prob=cf.transformer.dropout_rate,
      max_position_embeddings=latent**2 + 1)
  tokenizer = tokenizer_lib.VQVAE(config=cf, dtype=jnp.float32, train=False)

  def generate(tr_vars, tok_vars, inputs, rng):
    def tokens_to_logits(seq):
      logits = transformer.apply(tr_vars, seq, deterministic=True)
      return logits[..., :codebook]
    seqs = decode_lib.decode(
        inputs, rng, tokens_to_logits, num_iter=num_iter,
        choice_temperature=choice_temperature,
        mask_token_id=cf.transformer.mask_token_id, start_iter=0)
    grid = jnp.reshape(seqs[:, -1, 1:], [-1, latent, latent])
    images = tokenizer.apply(tok_vars, grid,
                             method=tokenizer.decode_from_indices,
                             mutable=False)
    return images, grid
  return generate


def bench(release, batches, num_iter, repeats, shape="imagenet256"):
  """One result per batch: tokens equal, image difference, medians, ratio.
  `shape`: benchmarks/sampler.py's (imagenet256; tiny for tests, with a
  stand-in release whose config has the tiny sizes)."""
  tokenizer, tok_vars, transformer, tr_vars, classes, size = (
      sampler_bench.build_models(shape))
  s = sampling.MaskGitSampler(tokenizer, tok_vars, transformer, tr_vars,
                              num_classes=classes)
  kwargs = sampler_bench._decode_kwargs(num_iter)  # pylint: disable=protected-access
  programs = {
      "release": release_program(release, size, num_iter,
                                 kwargs["choice_temperature"]),
      "ours": sampler_bench.sample_and_tokens(s, num_iter)}
  rng = jax.random.PRNGKey(0)
  rows = []
  for batch in batches:
    inputs = sampler_bench._inputs(s, batch)  # pylint: disable=protected-access
    args = (tr_vars, tok_vars, inputs, rng)
    compiled, compile_s, failed = prepare.compile_all(
        {name: jax.jit(fn).lower(*args) for name, fn in programs.items()})
    if failed:
      raise SystemExit("error: a sampler program did not compile: " +
                       "; ".join(f"{k}: {v}" for k, v in failed.items()))
    outs = {name: jax.block_until_ready(c(*args))
            for name, c in compiled.items()}
    (img_r, tok_r), (img_o, tok_o) = outs["release"], outs["ours"]
    tokens_equal = bool(np.array_equal(np.asarray(tok_r), np.asarray(tok_o)))
    image_diff = float(np.max(np.abs(np.asarray(img_r) - np.asarray(img_o))))
    cpu = {}
    load_start = timing.load_average()
    times = timing.interleaved_times(
        {name: (lambda c=c: c(*args)) for name, c in compiled.items()},
        repeats, warmup=False, cpu=cpu)
    med = {name: timing.median(t) for name, t in times.items()}
    ratio = med["ours"] / med["release"]
    rows.append({
        "shape": shape, "batch": batch, "num_iter": num_iter,
        "dtype": "float32", "repeats": repeats,
        "tokens_equal": tokens_equal, "max_abs_image_difference": image_diff,
        "release_s": med["release"], "ours_s": med["ours"],
        "ours_over_release": ratio, "target": TARGET,
        "target_met": bool(ratio <= TARGET and tokens_equal),
        "times": times, "cpu_times": cpu, "compile_s": compile_s,
        "load_average_start": load_start,
        "load_average_end": timing.load_average()})
    print(f"batch {batch}: ours {med['ours']:.2f} s, release "
          f"{med['release']:.2f} s, ratio {ratio:.3f}; tokens equal "
          f"{tokens_equal}, images differ by {image_diff:.1e}", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--release_path",
                      default=os.environ.get("MASKGIT_RELEASE_PATH"),
                      help="a checkout of google-research/maskgit "
                      "(default: $MASKGIT_RELEASE_PATH)")
  parser.add_argument("--batches", default="2,8")
  parser.add_argument("--shape", default="imagenet256",
                      choices=("imagenet256", "tiny"),
                      help="tiny: for tests, with a stand-in release")
  parser.add_argument("--num_iter", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="benchmarks/results/release_sampler.json")
  args = parser.parse_args()
  release = import_release(args.release_path)
  batches = [int(b) for b in args.batches.split(",") if b]
  rows = bench(release, batches, args.num_iter, args.repeats, args.shape)
  report = {"device": str(jax.devices()[0]), "machine": platform.platform(),
            "allocator": allocator.current(), "cpu_count": os.cpu_count(),
            "jax_version": jax.__version__,
            "release_path": str(args.release_path), "results": rows}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.out}")
  return 0 if all(r["tokens_equal"] for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
