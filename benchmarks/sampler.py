r"""Sampler benchmark: decode overhead, fast precision mode, parallel vs sequential.

  python benchmarks/sampler.py --shapes=embedded,imagenet256 \
      [--sequential] --out=benchmarks/results/sampler.json
  python benchmarks/sampler.py --shapes=imagenet256 --batches=2,8 --floor \
      --out=benchmarks/results/sampler_floor.json

Shapes (random weights; timing does not depend on the weights):
  embedded     configs/fashion_mnist.py's models: 32x32x1 images, 8x8 tokens,
               tokenizer "small", transformer "small".
  imagenet256  the released ImageNet sizes: tokenizer preset "imagenet"
               (codebook 1024), Transformer preset 256 (24 layers, hidden
               768), 16x16 tokens, 1000 classes.
  tiny         for tests (benchmarks/gpu.py --tiny): the ImageNet config
               with the "tiny" presets, 16x16 images, 8x8 tokens, 3 classes.

Ratios are measured in the same run, with the timed calls interleaved (round
r runs every function once before round r + 1), each time the median of
--repeats rounds after one warm-up call:
- overhead = time(decode + detokenize, one jit) /
             (num_iter x time(one transformer forward) + time(detokenize));
  the target is <= 1.05 (the loop adds no host round trips).
- bf16 speed-up = time(float32 sampler) / time(bfloat16 sampler), where the
  fast mode is the transformer with dtype=bfloat16 (bf16 matmul inputs,
  float32 accumulation; see maskgit_transformer) and the tokenizer with
  --fast_tokenizer_dtype (default float32: see README/bench.md for why).
- parallel vs sequential (--sequential, at --sequential_shape):
  time(latent**2 iterations revealing one token each, "uniform"
  schedule) / time(num_iter iterations, cosine schedule), decoding only (no
  detokenize), float32, batch --sequential_batch; compiled ahead of time so
  no warm-up run of the slow program is needed.
"""
import argparse
import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from maskgit_jax import cli
from maskgit_jax.common import allocator
from maskgit_jax.libml import parallel_decode
from maskgit_jax.libml import sampling
from maskgit_jax.store import loader
from gpu_report import error_text  # benchmarks/gpu_report.py
import peak as peak_lib  # benchmarks/peak.py
import prepare  # benchmarks/prepare.py
import timing  # benchmarks/timing.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPES = ("embedded", "imagenet256", "tiny")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load_config(name="fashion_mnist"):
  return cli.load_config_file(str(ROOT / "configs" / f"{name}.py"))


def tiny(config):
  """`config` shrunk to the "tiny" presets (16x16 images, 3 classes), in
  place; for CPU tests of the full-size benchmarks."""
  config.tokenizer = ml_collections.ConfigDict(dict(preset="tiny"))
  config.transformer = ml_collections.ConfigDict(dict(preset="tiny"))
  config.image_size = 16
  config.num_classes = 3
  return config


def build_models(shape):
  """(tokenizer, tokenizer vars, transformer, transformer vars, classes, size),
  random weights from the one model loader (`store.loader`)."""
  if shape == "embedded":
    config = load_config()
  elif shape == "imagenet256":
    config = load_config("imagenet")
  elif shape == "tiny":
    config = tiny(load_config("imagenet"))
  else:
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
  device = jax.devices()[0]
  # Random weights computed by the host CPU, then placed: XLA:GPU is slow
  # to compile a large jitted init (benchmarks/prepare.py).
  with jax.default_device(prepare.host_device()):
    models = loader.load_models(config, random_init=True,
                                required=loader.STAGES)
  tok_vars, tr_vars = jax.device_put(
      (models.tokenizer_variables, models.transformer_variables), device)
  return (models.tokenizer, tok_vars, models.transformer, tr_vars,
          config.num_classes, config.image_size)


def _decode_kwargs(num_iter, method="cosine"):
  return dict(num_iter=num_iter, start_iter=0, choice_temperature=4.5,
              mask_scheduling_method=method, guidance_scale=0.0,
              guidance_schedule="constant", sampling_temperature=1.0, top_k=0,
              return_masks=False, position_scheduler="confidence",
              halton_random_shift=False)


def _inputs(s, batch):
  return jnp.asarray(np.concatenate([
      s.class_tokens([i % s.num_classes for i in range(batch)], batch),
      np.full((batch, s.latent_size**2), sampling.MASK_TOKEN_ID, np.int32)],
                                    1))


def sample_and_tokens(s, num_iter):
  """Sampler `s`'s decode + detokenize as the benchmarks time it:
  (transformer vars, tokenizer vars, inputs, rng) -> (images, final token
  grid `[b, latent, latent]`)."""
  def sample(tr_v, tok_v, x, r):
    seqs = s._decode_tokens(  # pylint: disable=protected-access
        tr_v, x, r, **_decode_kwargs(num_iter))
    grid = seqs[:, -1, 1:].reshape(-1, s.latent_size, s.latent_size)
    return s.tokenizer.apply(tok_v, grid,
                             method=s.tokenizer.decode_from_indices), grid
  return sample


def _lowered(s, batch, num_iter):
  """The forward, detokenize and sample (decode + detokenize) programs of
  sampler `s`, lowered: {name: (jax Lowered, its arguments)}."""
  inputs = _inputs(s, batch)
  ids = jnp.zeros((batch, s.latent_size, s.latent_size), jnp.int32)
  rng = jax.random.PRNGKey(0)
  tr_vars, tok_vars = s.transformer_variables, s.tokenizer_variables

  def forward(v, x):
    return s.transformer.apply(v, x)

  def detokenize(v, x):
    return s.tokenizer.apply(v, x, method=s.tokenizer.decode_from_indices)

  sample = lambda *a: sample_and_tokens(s, num_iter)(*a)[0]  # pylint: disable=unnecessary-lambda-assignment
  out = {}
  for name, fn, args in (("forward", forward, (tr_vars, inputs)),
                         ("detokenize", detokenize, (tok_vars, ids)),
                         ("sample", sample, (tr_vars, tok_vars, inputs, rng))):
    out[name] = (jax.jit(fn).lower(*args), args)
  return out


def bench_shape(shape, batch, num_iter, repeats, fast_tokenizer_dtype,
                fused_bf16=False, profile=None, unfused_bf16=True):
  """The float32 and bfloat16 samplers (and with `fused_bf16` a third,
  "bfloat16_fused": the bfloat16 one with `attention_impl="fused"`, cuDNN's
  flash attention on a GPU), timed interleaved. `unfused_bf16=False` (with
  `fused_bf16`) leaves the plain bfloat16 one out (gpu.py's default run).
  `profile(fn, hlo_text=)`, when given, annotates each mode's forward after
  the timing (gpu.py: gpu_profile.safe_profile)."""
  start = time.perf_counter()
  tokenizer, tok_vars, transformer, tr_vars, classes, _ = build_models(shape)
  jax.block_until_ready((tok_vars, tr_vars))
  phases = {"build_s": time.perf_counter() - start}
  samplers = {
      "float32": sampling.MaskGitSampler(
          tokenizer.clone(dtype=jnp.float32), tok_vars,
          transformer.clone(dtype=jnp.float32), tr_vars, num_classes=classes),
      "bfloat16": sampling.MaskGitSampler(
          tokenizer.clone(dtype=DTYPES[fast_tokenizer_dtype]), tok_vars,
          transformer.clone(dtype=jnp.bfloat16), tr_vars,
          num_classes=classes),
  }
  if fused_bf16:  # the bf16 one (inference: no attention dropout either way)
    bf16 = samplers["bfloat16"]
    samplers["bfloat16_fused"] = sampling.MaskGitSampler(
        bf16.tokenizer, tok_vars,
        bf16.transformer.clone(attention_impl="fused",
                               attention_probs_dropout_prob=0.0), tr_vars,
        num_classes=classes)
    if not unfused_bf16:
      del samplers["bfloat16"]
  lowered, args, errors = {}, {}, {}
  for mode, s in list(samplers.items()):
    try:
      programs = _lowered(s, batch, num_iter)
    except Exception as e:  # pylint: disable=broad-except
      if mode != "bfloat16_fused":
        raise
      # cuDNN may refuse the shape: the other two are measured all the same.
      errors[mode] = error_text(e)
      continue
    for k, (low, a) in programs.items():
      lowered[f"{mode}/{k}"], args[f"{mode}/{k}"] = low, a
  phases["lower_s"] = time.perf_counter() - start - phases["build_s"]
  start = time.perf_counter()
  # Every program compiled at once (XLA compiles outside the GIL).
  compiled, program_s, failed = prepare.compile_all(lowered)
  phases["compile_s"] = time.perf_counter() - start
  for name, err in failed.items():
    if not name.startswith("bfloat16_fused/"):
      raise RuntimeError(f"sampler program {name} did not compile: {err}")
    errors.setdefault("bfloat16_fused", err)
  for mode in list(samplers):
    if mode in errors:
      del samplers[mode]
  fns = {name: (lambda c=c, a=args[name]: c(*a))
         for name, c in compiled.items()
         if name.split("/")[0] in samplers}
  # Each mode's programs' own compile seconds (they overlapped).
  compile_s = {mode: sum(v for k, v in program_s.items()
                         if k.startswith(mode + "/")) for mode in samplers}
  load_start = timing.load_average()
  cpu = {}
  start = time.perf_counter()
  for fn in fns.values():  # the warm-up, timed apart from the rounds
    jax.block_until_ready(fn())
  phases["warmup_s"] = time.perf_counter() - start
  start = time.perf_counter()
  times = timing.interleaved_times(fns, repeats, warmup=False, cpu=cpu)
  phases["timed_s"] = time.perf_counter() - start
  result = {"shape": shape, "batch": batch, "num_iter": num_iter,
            "repeats": repeats, "image_size": samplers["float32"].image_size,
            "latent_size": samplers["float32"].latent_size,
            "transformer_params": int(sum(
                np.size(x) for x in jax.tree.leaves(tr_vars))),
            "tokens_per_forward": batch * (
                samplers["float32"].latent_size ** 2 + 1),
            "modes": list(samplers), "errors": errors,
            "fast_mode": {"transformer_dtype": "bfloat16",
                          "tokenizer_dtype": fast_tokenizer_dtype},
            "load_average_start": load_start, "phases": phases,
            "load_average_end": timing.load_average()}
  for mode in samplers:
    t = {k: timing.median(times[f"{mode}/{k}"])
         for k in ("forward", "detokenize", "sample")}
    result[mode] = dict(
        forward_s=t["forward"], detokenize_s=t["detokenize"],
        sample_s=t["sample"],
        overhead=t["sample"] / (num_iter * t["forward"] + t["detokenize"]),
        compile_s=compile_s[mode],
        times={k: times[f"{mode}/{k}"] for k in ("forward", "detokenize",
                                                 "sample")},
        cpu_times={k: cpu[f"{mode}/{k}"] for k in ("forward", "detokenize",
                                                   "sample")})
    if profile is not None:  # after every timed round
      result[mode]["forward_profile"] = profile(
          fns[f"{mode}/forward"],
          hlo_text=compiled[f"{mode}/forward"].as_text())
  # Process CPU seconds per wall second over all timed calls: about the
  # core count when the benchmark had the machine to itself.
  result["cpu_per_wall"] = (sum(map(sum, cpu.values())) /
                            sum(map(sum, times.values())))
  # Against the plain bf16 sampler, else the fused one (unfused_bf16=False;
  # none when that one did not compile either).
  bf16 = next((m for m in ("bfloat16", "bfloat16_fused") if m in samplers),
              None)
  result["bf16_mode"] = bf16
  for key, part in (("bf16_speedup", "sample_s"),
                    ("bf16_forward_speedup", "forward_s"),
                    ("bf16_detokenize_speedup", "detokenize_s")):
    result[key] = (result["float32"][part] / result[bf16][part]
                   if bf16 else None)
  return result


def bench_sequential(shape, batch, num_iter, repeats):
  """Parallel (num_iter iterations) vs sequential (one token per iteration)
  token decoding, float32, same run, interleaved."""
  tokenizer, tok_vars, transformer, tr_vars, classes, _ = build_models(shape)
  s = sampling.MaskGitSampler(tokenizer, tok_vars, transformer, tr_vars,
                              num_classes=classes)
  inputs = _inputs(s, batch)
  rng = jax.random.PRNGKey(0)
  n = s.latent_size**2
  compiled = {}
  for name, (iters, method) in (("parallel", (num_iter, "cosine")),
                                ("sequential", (n, "uniform"))):
    fn = jax.jit(lambda v, x, r, iters=iters, method=method:
                 s._decode_tokens(  # pylint: disable=protected-access
                     v, x, r, **_decode_kwargs(iters, method)))
    compiled[name] = fn.lower(s.transformer_variables, inputs, rng).compile()
  fns = {name: (lambda c=c: c(s.transformer_variables, inputs, rng))
         for name, c in compiled.items()}
  # The "uniform" schedule over n iterations leaves n - 1 - t tokens masked
  # after iteration t: one token is revealed per iteration.
  left = [int(parallel_decode.num_masked_after(t, n, n, n - t, "uniform"))
          for t in range(n - 1)]
  one_per_iter = left == [n - 1 - t for t in range(n - 1)]
  load_start = timing.load_average()
  cpu = {}
  times = timing.interleaved_times(fns, repeats, warmup=False, cpu=cpu)
  t_par, t_seq = (timing.median(times[k]) for k in ("parallel", "sequential"))
  return {"shape": shape, "dtype": "float32", "batch": batch,
          "parallel_iterations": num_iter, "sequential_iterations": n,
          "sequential_one_token_per_iteration": one_per_iter,
          "repeats": repeats, "parallel_s": t_par, "sequential_s": t_seq,
          "parallel_speedup": t_seq / t_par, "times": times,
          "cpu_times": cpu, "cpu_per_wall": (sum(map(sum, cpu.values())) /
                                             sum(map(sum, times.values()))),
          "load_average_start": load_start,
          "load_average_end": timing.load_average()}


def add_floor(result, peaks_bf16):
  """The bf16 sampler against its floor: num_iter forwards of
  2 x parameters x tokens FLOPs at the bf16 matmul peak, plus the detokenize
  measured in the same run (issue 14's target: <= 1.25x the forwards' part).
  `peaks_bf16`: the peak measured before and after the samplers; the higher
  is used, so that a slow moment of the machine cannot lower the floor."""
  peak_bf16 = max(peaks_bf16)
  forwards = (result["num_iter"] * 2 * result["transformer_params"] *
              result["tokens_per_forward"] / peak_bf16)
  b16 = result["bfloat16"]
  result["bf16_floor"] = {
      "matmul_peak_bf16": peak_bf16,
      "matmul_peak_bf16_before_after": list(peaks_bf16),
      "forwards_floor_s": forwards,
      "floor_s": forwards + b16["detokenize_s"],
      "sample_over_floor": b16["sample_s"] / (forwards + b16["detokenize_s"]),
      "decode_over_forwards_floor": (b16["sample_s"] - b16["detokenize_s"]) /
                                    forwards,
      "target": "sample <= 1.25 x forwards floor + detokenize"}
  result["bf16_floor"]["target_met"] = (
      b16["sample_s"] <= 1.25 * forwards + b16["detokenize_s"])


def _bf16_peak():
  return peak_lib.matmul_peak(jnp.bfloat16, peak_lib.PEAK_SIZES["cpu"])[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shapes", default="embedded")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--num_iter", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--fast_tokenizer_dtype", default="float32",
                      choices=sorted(DTYPES))
  parser.add_argument("--sequential", action="store_true",
                      help="also parallel vs sequential decoding (slow)")
  parser.add_argument("--sequential_shape", default="imagenet256",
                      choices=SHAPES)
  parser.add_argument("--sequential_batch", type=int, default=1)
  parser.add_argument("--sequential_repeats", type=int, default=2)
  parser.add_argument("--batches", default="",
                      help="comma-separated batches (overrides --batch)")
  parser.add_argument("--floor", action="store_true",
                      help="also measure the bf16 matmul peak and give the "
                      "bf16 sampler's time against its floor")
  parser.add_argument("--out", default="benchmarks/results/sampler.json")
  args = parser.parse_args()
  batches = [int(b) for b in (args.batches or str(args.batch)).split(",")]
  shapes = [s for s in args.shapes.split(",") if s]
  for shape in shapes:
    if shape not in SHAPES:
      parser.error(f"unknown shape {shape!r}; expected one of {SHAPES}")
  peaks16 = [_bf16_peak()] if args.floor else []  # before; after: below
  rows = []
  for shape in shapes:
    for batch in batches:
      rows.append(bench_shape(shape, batch, args.num_iter, args.repeats,
                              args.fast_tokenizer_dtype))
      r = rows[-1]
      print(f"{shape} batch {batch}: overhead f32 "
            f"{r['float32']['overhead']:.3f}, bf16 "
            f"{r['bfloat16']['overhead']:.3f}; bf16 speed-up "
            f"{r['bf16_speedup']:.2f}x", flush=True)
  if args.floor:
    peaks16.append(_bf16_peak())
    for r in rows:
      add_floor(r, peaks16)
      f = r["bf16_floor"]
      print(f"{r['shape']} batch {r['batch']}: bf16 sample "
            f"{r['bfloat16']['sample_s']:.2f} s, floor {f['floor_s']:.2f} s "
            f"(forwards {f['forwards_floor_s']:.2f} s at "
            f"{f['matmul_peak_bf16'] / 1e9:.0f} GFLOP/s); decode / forwards "
            f"floor {f['decode_over_forwards_floor']:.2f}", flush=True)
  sequential = None
  if args.sequential:
    sequential = bench_sequential(args.sequential_shape, args.sequential_batch,
                                  args.num_iter, args.sequential_repeats)
    print(f"parallel ({args.num_iter} it) vs sequential: "
          f"{sequential['parallel_speedup']:.1f}x", flush=True)
  report = {"device": str(jax.devices()[0]),
            "platform": jax.devices()[0].platform,
            "machine": platform.platform(),
            "allocator": allocator.current(), "cpu_count": os.cpu_count(),
            "jax_version": jax.__version__, "results": rows,
            "sequential": sequential}
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
  print(f"wrote {args.out}")


if __name__ == "__main__":
  allocator.maybe_reexec()  # as the entry points run
  main()
