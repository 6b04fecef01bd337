r"""Train-step benchmark: steps/s and achieved FLOP/s against the machine's peak.

  python benchmarks/train_step.py --out=benchmarks/results/train_step.json
  python benchmarks/train_step.py --transformer_dtype=bfloat16 \
      --out=benchmarks/results/train_step_bf16.json
  python benchmarks/train_step.py --config=configs/imagenet.py \
      --stages=transformer --batch_size=2 --token_cache --repeats=3 \
      --train_examples=1281167 [--transformer_dtype=bfloat16]

For each stage of the embedded default (configs/fashion_mnist.py), the jitted
train step (the project's own `Task.train_step`) runs on random batches.

FLOPs per step: XLA's cost analysis of the compiled step (forward, backward
and optimizer update as compiled; for stage 2 it includes the frozen
tokenizer's forward unless the step reads a token cache, which it does when
the config's `transformer_training.token_cache` is set, as the embedded
default's is, or with `--token_cache`). For stage 2 the analytic count is given beside it:
6 * N * B * S + 12 * L * B * S^2 * d, with N the parameters that multiply
activations (every kernel plus the tied output embedding), B the batch,
S the sequence length, L layers, d the hidden size (2 FLOPs per
multiply-add, backward = 2 x forward; the second term is the attention's
two S x S products).

Achieved FLOP/s = FLOPs per step / median step time (--repeats steps after
one warm-up). The peak is measured in the same run: the best of square
matmuls of several sizes (2 n^3 FLOPs each), inputs float32 and bfloat16
(float32 accumulation) separately. On a shared machine both swing from
minute to minute (a 2-core VM here: the float32 peak between 83 and 160
GFLOP/s within ten minutes), so the utilisation is measured interleaved:
each of --repeats rounds times one step and one matmul of the peak's size
(n = 2048 on a CPU), and the figure is the median over rounds of
(FLOPs / step time) / (matmul FLOP/s) of the same round
(`utilisation`); `utilisation_vs_best_peak` is achieved FLOP/s against the
best-of-sizes peak measured after the steps, the earlier figure. On a CPU the steps run in float32 and
utilisation is against the float32 peak. On a GPU
(`jax.devices()[0].platform == "gpu"`) the peak is the card's bfloat16
matmul rate and the utilisation is model FLOP utilisation (MFU) against it.

Devices: the config's `cpu_devices` (the embedded default: one CPU device
per core) unless `--cpu_devices` says otherwise; the step runs data parallel
over every device (batch sharded, state replicated), as the trainer's
default mesh does, and its FLOPs are the partitioned program's cost times the
device count. `--cpu_devices=0` measures one device (the figures before
`config.cpu_devices`).

Memory: XLA's memory analysis of each compiled step (arguments + outputs -
aliased + temporaries), the process's peak resident set size after each
stage, and on a GPU the allocator's peak bytes in use.
"""
import argparse
import json
import os
import pathlib
import platform
import resource
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.common import allocator
from maskgit_jax.common import cpu_devices
from maskgit_jax.nets import factory
from maskgit_jax.store import loader
from maskgit_jax.train_lib import data_parallel
from maskgit_jax.train_lib import run as run_lib
from maskgit_jax.train_lib import sharding as sharding_lib
from maskgit_jax.train_lib import tokenizer_task
from maskgit_jax.train_lib import transformer_task
import peak as peak_lib  # benchmarks/peak.py
import prepare  # benchmarks/prepare.py
import timing  # benchmarks/timing.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
ANALYTIC_FORMULA = "6*N*B*S + 12*L*B*S^2*d"


def load_config(path):
  from maskgit_jax import cli  # pylint: disable=import-outside-toplevel
  return cli.load_config_file(str(ROOT / path) if not os.path.isabs(path)
                              else path)


def rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory(compiled):
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  out = {k: int(getattr(m, k)) for k in (
      "argument_size_in_bytes", "output_size_in_bytes",
      "alias_size_in_bytes", "temp_size_in_bytes",
      "generated_code_size_in_bytes") if hasattr(m, k)}
  out["peak_estimate_bytes"] = (out.get("argument_size_in_bytes", 0) +
                                out.get("output_size_in_bytes", 0) -
                                out.get("alias_size_in_bytes", 0) +
                                out.get("temp_size_in_bytes", 0))
  return out


def most_steps_phase(task):
  """The static phase (`Task.phase`) most of the stage's steps run in,
  read at 1,001 evenly spaced steps: the step the trainer runs most."""
  steps = np.linspace(0, task.num_steps - 1, num=min(task.num_steps, 1001))
  phases = [task.phase(int(i)) for i in steps]
  return max(set(phases), key=phases.count)


def trainer_step_fn(task):
  """`(state, batch, frozen) -> ...`: the task's step as the trainer runs it
  for most of the stage (its static phase, when the task has phases)."""
  if getattr(task, "phase", None) is None:
    return task.train_step
  phase = most_steps_phase(task)
  return lambda s, b, f: task.train_step(s, b, f, phase)


def compile_step(task, batch, frozen, phases=None):
  """(one, FLOPs, compiled, HLO FLOPs): the task's jitted step compiled
  data parallel over every device (one device: the plain jit), the batch
  sharded and the state replicated, as the trainer's default mesh does;
  `one()` runs a step on the carried state and returns its loss. FLOPs:
  XLA's cost analysis of the partitioned program times the device count.
  HLO FLOPs: the same analysis of the program before optimisation, which
  still holds the convolutions and dots that XLA:GPU hands to cuDNN /
  cuBLAS, where the compiled count misses them (lowered for the host CPU
  where the device's lowering has no count). `phases` (a dict), when
  given, gets the seconds of the state's creation, lowering and compiling
  (init_s, lower_s, compile_s)."""
  phases = {} if phases is None else phases
  start = time.perf_counter()
  mesh = sharding_lib.make_mesh((-1, 1, 1))
  replicated = sharding_lib.replicated(mesh)
  batch = jax.device_put(batch, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(sharding_lib.BATCH_AXES)))
  if frozen is not None:
    frozen = jax.device_put(frozen, replicated)
  # Computed by the host CPU, then placed (prepare.on_host: XLA:GPU is slow
  # to compile a large model's jitted init; the values are the same).
  state = prepare.on_host(lambda r: nn.meta.unbox(task.init(r)),
                          jax.random.PRNGKey(0), placement=replicated)
  jax.block_until_ready(state)
  phases["init_s"] = time.perf_counter() - start
  step = jax.jit(trainer_step_fn(task), donate_argnums=0,
                 out_shardings=(replicated, replicated))
  start = time.perf_counter()
  # Traced with the mesh in scope, as the trainer's steps are
  # (train_lib/data_parallel.py reads it).
  with sharding_lib.mesh_context(mesh):
    lowered = step.lower(state, batch, frozen)
    per_shard = data_parallel.split_axis() is not None
  phases["lower_s"] = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  phases["compile_s"] = time.perf_counter() - start
  flops = prepare.cost_flops(compiled.cost_analysis()) * len(jax.devices())
  # A step whose gradients are computed per shard (data_parallel) counts
  # one shard's FLOPs before optimisation: the whole step's count is that of
  # the same step lowered without the mesh in scope (XLA's partitioning).
  hlo_flops = prepare.cost_flops(
      (step.lower(state, batch, frozen) if per_shard else lowered
       ).cost_analysis())
  if not hlo_flops:  # XLA:GPU reports none before optimisation
    hlo_flops = prepare.host_hlo_flops(trainer_step_fn(task), state, batch,
                                       frozen)
  holder = {"state": state}

  def one():
    holder["state"], metrics = compiled(holder["state"], batch, frozen)
    return metrics["loss"]
  return one, flops, compiled, hlo_flops


def bench_task(task, batch, frozen, repeats, peak=None, profile=None):
  """Times the compiled step; `peak` = (matmul fn, its FLOPs) times it
  interleaved with the step, for the utilisation (see the module
  docstring). Without it (benchmarks/gpu.py, which measures its own peak)
  the step alone. `profile(fn, hlo_text=)`, when given, annotates the
  result after the timing (gpu.py: gpu_profile.safe_profile)."""
  phases = {}
  one, flops, compiled, hlo_flops = compile_step(task, batch, frozen, phases)
  start = time.perf_counter()
  out = {"flops_per_step": flops, "repeats": repeats,
         "hlo_flops_per_step": hlo_flops,
         "compiled_memory": _memory(compiled),
         "phases_s": phases}  # where the wall time went
  if peak is None:
    t = timing.median_time(one, repeats)
  else:
    times = timing.interleaved_times({"step": one, "peak": peak[0]}, repeats)
    t = timing.median(times["step"])
    ratios = [(flops / s) / (peak[1] / p)
              for s, p in zip(times["step"], times["peak"])]
    out["interleaved"] = {
        "utilisation": timing.median(ratios),
        "utilisation_min": min(ratios), "utilisation_max": max(ratios),
        "peak_median_flops_per_s": peak[1] / timing.median(times["peak"]),
        "peak_min_flops_per_s": peak[1] / max(times["peak"]),
        "peak_max_flops_per_s": peak[1] / min(times["peak"])}
  phases["timed_s"] = time.perf_counter() - start  # warm-up and rounds
  out.update(step_s=t, steps_per_s=1 / t, achieved_flops_per_s=flops / t)
  if profile is not None:
    out["profile"] = profile(one, hlo_text=compiled.as_text())
  return out


def analytic_transformer_flops(transformer, params, batch_size):
  """6*N*B*S + 12*L*B*S^2*d (see the module docstring)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  n = sum(int(np.prod(x.shape)) for path, x in flat
          if getattr(path[-1], "key", None) == "kernel")
  n += transformer.vocab_size * transformer.hidden_size  # tied output layer
  s, layers, d = (transformer.max_position_embeddings,
                  transformer.num_hidden_layers, transformer.hidden_size)
  return {"formula": ANALYTIC_FORMULA, "N": n, "B": batch_size, "S": s,
          "L": layers, "d": d,
          "flops_per_step": float(6 * n * batch_size * s +
                                  12 * layers * batch_size * s * s * d)}


def build_parser(description):
  """The options that say which steps to build (shared with
  benchmarks/profile_step.py)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--transformer_dtype", default="float32",
                      choices=("float32", "bfloat16"),
                      help="stage 2's compute dtype (bfloat16: the fast "
                      "precision mode, float32 parameters and accumulation; "
                      "its utilisation is against the bfloat16 peak)")
  parser.add_argument("--config", default="configs/fashion_mnist.py",
                      help="config file (default: the embedded default's)")
  parser.add_argument("--batch_size", type=int, default=0,
                      help="batch of both stages (default: the config's)")
  parser.add_argument("--stages", default="tokenizer,transformer")
  parser.add_argument("--token_cache", action=argparse.BooleanOptionalAction,
                      default=None,
                      help="stage 2 on token batches (no tokenizer forward "
                      "in the step), as with transformer_training.token_cache"
                      " (default: the config's setting)")
  parser.add_argument("--train_examples", type=int, default=60000,
                      help="resolves epoch durations (1281167 for ImageNet)")
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="config.cpu_devices (default: the config's): 0 = "
                      "JAX's one CPU device, -1 = one per core (data "
                      "parallel, batch sharded), N = N devices")
  return parser


def configure(args):
  """(config, {stage: resolved training section}) for the parsed options;
  applies `--cpu_devices` (before JAX starts its backends)."""
  config = load_config(args.config)
  if args.cpu_devices is None:
    args.cpu_devices = config.get("cpu_devices", 0)
  note = cpu_devices.apply(args.cpu_devices)
  if note:
    print(note)
  config.transformer.dtype = args.transformer_dtype
  sections = {"tokenizer": config.tokenizer_training,
              "transformer": config.transformer_training}
  for stage, section in sections.items():
    if args.batch_size:
      section.batch_size = args.batch_size
    sections[stage] = run_lib.resolve_durations(
        section, args.train_examples // section.batch_size, f"{stage}_training")
  if args.token_cache is None:
    args.token_cache = bool(config.transformer_training.token_cache)
  sections["transformer"].token_cache = args.token_cache
  return config, sections


def make_stage(config, stage, section):
  """(task, batch, frozen) for one stage's train step on random inputs:
  the project's own `Task`, a batch of its keys, and the frozen tokenizer's
  variables that stage 2 reads (None for stage 1)."""
  tokenizer = factory.tokenizer_from_config(config)
  size, ch = config.image_size, tokenizer.channels
  rs = np.random.RandomState(0)
  n = section.batch_size
  seq = (size // tokenizer.downsample_factor) ** 2
  batch = {"image": jnp.asarray(rs.rand(n, size, size, ch), jnp.float32),
           "label": jnp.asarray(rs.randint(0, config.num_classes, n),
                                jnp.int32),
           "tokens": jnp.asarray(rs.randint(0, tokenizer.codebook_size,
                                            (n, seq)), jnp.int32)}
  if stage == "tokenizer":
    task = tokenizer_task.make_task(section, tokenizer, size,
                                    note=lambda m: None)
    return task, {"image": batch["image"]}, None
  tok_vars, _ = loader.load_stage(config, "tokenizer", tokenizer,
                                  random_init=True)
  task = transformer_task.make_task(
      section, tokenizer, tok_vars, factory.transformer_from_config(config),
      config.num_classes)
  return task, {k: batch[k] for k in task.batch_keys}, tok_vars


def main():
  parser = build_parser(__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="benchmarks/results/train_step.json")
  args = parser.parse_args()
  config, sections = configure(args)
  device = jax.devices()[0]
  gpu = device.platform == "gpu"
  repeats = args.repeats * (5 if gpu else 1)  # GPU steps take milliseconds
  stages = args.stages.split(",")
  rss_start = rss_mb()
  results = {}
  peak_n = peak_lib.PEAK_SIZES["gpu" if gpu else "cpu"][-1]

  def peak_fn(dtype_name):
    bf16 = peak_lib.reference_is_bf16(gpu, dtype_name)
    return peak_lib.peak_matmul_fn(jnp.bfloat16 if bf16 else jnp.float32,
                                   peak_n)

  if "tokenizer" in stages:
    t1 = sections["tokenizer"]
    stage1, batch1, _ = make_stage(config, "tokenizer", t1)
    results["tokenizer"] = dict(batch_size=t1.batch_size, dtype="float32",
                                **bench_task(stage1, batch1, None, repeats,
                                             peak_fn("float32")))
    results["tokenizer"]["peak_rss_mb_after"] = rss_mb()
  if "transformer" in stages:
    t2 = sections["transformer"]
    stage2, batch2, tok_vars = make_stage(config, "transformer", t2)
    results["transformer"] = dict(
        batch_size=t2.batch_size, dtype=args.transformer_dtype,
        token_cache=args.token_cache,
        **bench_task(stage2, batch2, tok_vars, repeats,
                     peak_fn(args.transformer_dtype)))
    results["transformer"]["peak_rss_mb_after"] = rss_mb()
    transformer = factory.transformer_from_config(config)
    tr_params = loader.load_stage(config, "transformer", transformer,
                                  random_init=True)[0]["params"]
    results["transformer"]["analytic"] = analytic_transformer_flops(
        transformer, tr_params, t2.batch_size)

  sizes = peak_lib.PEAK_SIZES["gpu" if gpu else "cpu"]
  peak16, sizes16 = peak_lib.matmul_peak(jnp.bfloat16, sizes)
  peak32, sizes32 = ((None, {}) if gpu else
                      peak_lib.matmul_peak(jnp.float32, sizes))
  reference = "bfloat16" if gpu else "float32"
  peak_ref = peak16 if gpu else peak32
  for r in results.values():
    # Against the peak of the precision the step computes in.
    bf16 = peak_lib.reference_is_bf16(gpu, r["dtype"])
    r["utilisation_reference"] = "bfloat16" if bf16 else reference
    r["utilisation_vs_best_peak"] = r["achieved_flops_per_s"] / (
        peak16 if bf16 else peak_ref)
    r["utilisation"] = r["interleaved"]["utilisation"]
    r["utilisation_of_bf16_peak"] = r["achieved_flops_per_s"] / peak16
  report = {
      "device": str(device), "platform": device.platform,
      "device_kind": device.device_kind, "machine": platform.platform(),
      "allocator": allocator.current(),
      "cpu_count": os.cpu_count(), "jax_version": jax.__version__,
      "num_devices": len(jax.devices()), "cpu_devices_flag": args.cpu_devices,
      "flops_counting": "XLA cost analysis of the compiled train step "
                        "(forward + backward + optimizer update; stage 2 "
                        "includes the frozen tokenizer's encoder unless it "
                        "reads a token cache); stage 2 "
                        f"also analytic {ANALYTIC_FORMULA}",
      "peak_method": "utilisation: median over rounds of one step and one "
                     f"{peak_n} x {peak_n} matmul timed in turn; "
                     "matmul_peak_*: best of n x n matmuls, n in "
                     f"{list(sizes)}, 2 n^3 FLOPs, float32 accumulation",
      "utilisation_reference": reference,
      "matmul_peak_f32": peak32, "matmul_peak_bf16": peak16,
      "matmul_by_size_f32": sizes32, "matmul_by_size_bf16": sizes16,
      "stages": results,
      "peak_rss_mb_start": rss_start,
      "peak_rss_mb": rss_mb(),
      "load_average": timing.load_average(),
  }
  if gpu:
    stats = device.memory_stats() or {}
    report["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1, default=str)
  f32_text = "" if gpu else f"f32 {peak32 / 1e9:.0f} GFLOP/s, "
  print(f"matmul peak: {f32_text}bf16 (f32 accumulate) {peak16 / 1e9:.0f} "
        "GFLOP/s")
  print("| stage | dtype | batch | step (ms) | steps/s | GFLOP/step | "
        "GFLOP/s | of the peak, interleaved |")
  print("|---|---|---|---|---|---|---|---|")
  for name, r in results.items():
    print(f"| {name} | {r['dtype']} | {r['batch_size']} | "
          f"{r['step_s'] * 1e3:.1f} | "
          f"{r['steps_per_s']:.2f} | {r['flops_per_step'] / 1e9:.2f} | "
          f"{r['achieved_flops_per_s'] / 1e9:.1f} | "
          f"{r['utilisation']:.1%} ({r['utilisation_reference']}; "
          f"{r['interleaved']['utilisation_min']:.0%}-"
          f"{r['interleaved']['utilisation_max']:.0%} over rounds; "
          f"{r['utilisation_vs_best_peak']:.1%} of the best peak after) |")
  print(f"peak RSS {report['peak_rss_mb']:.0f} MB; wrote {args.out}")


if __name__ == "__main__":
  allocator.maybe_reexec()  # as the entry points run
  main()
