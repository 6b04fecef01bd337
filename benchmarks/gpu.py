r"""One-GPU benchmark (issue 14 item 5): throughput and MFU at full size.

  bash benchmarks/gpu.sh            # the command (a 300 s wall-clock limit)
  python benchmarks/gpu.py [--tiny] [--out=benchmarks/results/gpu.json]

Measurements (random weights from `store.loader`; timing does not depend on
the weights), in this order, each written to --out as soon as it ends (the
file is replaced atomically; it starts with every measurement marked as not
finished, so a run killed by the timeout still leaves a readable file).
The default run leaves out the two comparison entries, sampler_bfloat16
and stage2_train (bf16 with the default attention, beside the fused
attention's): --all adds them (about 2 minutes more), --only picks; an entry
not measured is kept from the previous --out file, tagged with its run.

  matmul_peak       the device's matmul rate, float32 and bfloat16 inputs
                    (float32 accumulation): peak.py's `matmul_peak`,
                    the best of square n x n matmuls, n in 2048..8192.
  sampler_float32,  sampler.py's `bench_shape` at the ImageNet-256 shape
  sampler_bfloat16, (tokenizer "imagenet", Transformer 256), batch 64, the
  sampler_bfloat16_fused
                    config's num_iter (16), no guidance; the bf16 mode is the
                    transformer's `dtype` field (the tokenizer stays float32
                    unless --fast_tokenizer_dtype); the fused one is the bf16
                    one with `attention_impl="fused"` (cuDNN's flash
                    attention), timed interleaved in one run. value: images/s of the
                    whole sampler (decode + detokenize). mfu: the transformer
                    forward's model FLOP utilisation, FLOPs per forward
                    2*N*B*S + 4*L*B*S^2*d (one third of train_step.py's
                    analytic 6NBS + 12LBS^2d) / the median forward time /
                    the matmul peak of the same precision. sample_mfu: the
                    same FLOPs x num_iter forwards (x2 with guidance) over
                    the whole sampler time (detokenize included);
                    loop_forward_mfu: over (sample - detokenize) time, the
                    forward as the decode loop runs it.
                    Target: forward MFU >= 40% on an H200.
  stage2_train      the stage-2 train step (transformer_task's own), bfloat16
                    transformer, on cached tokens (the token-cache path, so
                    the step is the transformer's and the analytic count
                    covers it), at the largest batch of --stage2_batches
                    that fits (RESOURCE_EXHAUSTED moves on to the next).
                    value: MFU = analytic 6NBS + 12LBS^2d / step time /
                    bf16 matmul peak; XLA's cost analysis beside it.
                    Target: >= 45% on an H200.
  stage2_train_fused  stage2_train with `transformer.attention_impl="fused"`
                    (jax.nn.dot_product_attention: cuDNN's flash attention
                    on the GPU) and no attention dropout (the fused kernel
                    has none; the ImageNet recipe's is 0.1).
  stage1_train      the stage-1 train step (tokenizer_task's own, with the
                    configs/imagenet_vqgan.py recipe: GAN, R1; the perceptual
                    loss is off without its weights file), 256x256 images,
                    float32, the largest batch of --stage1_batches that fits.
                    value: MFU = XLA cost analysis FLOPs of the program
                    before optimisation (the compiled program's count
                    misses cuDNN's convolutions on GPU) / step time /
                    float32 matmul peak (also given against the bf16 peak).
  peak_memory       jax's device memory_stats()['peak_bytes_in_use'] (the
                    whole run; each measurement also records the running
                    peak when it ended); null where the backend has none.

Every measurement has a `value` (a number) or an `error` (a string); a
failure of one does not stop the others. Each train step's entry has a
`profile` and each sampler's a `forward_profile` (--no_profile: none): a
jax.profiler trace of --profile_calls calls after the timing, summed per XLA
operation on the device (benchmarks/gpu_profile.py), and `phases_s`, where
the measurement's wall time went.

Within the five minutes: random states are computed by the host CPU and
then placed (XLA:GPU took 79 s to compile the stage-2 state's jitted init),
and the samplers' programs are compiled together on a thread pool
(benchmarks/prepare.py).

Without a GPU the script records an error for every measurement and exits,
unless --tiny or --allow_cpu.
--tiny: CPU-sized shapes for tests ("tiny" presets, 16x16 images, batch 2,
one repeat, two decoding iterations, small matmuls).

Precision: float32 matmuls use jax's default precision (recorded as
`default_matmul_precision`; on NVIDIA GPUs XLA may use TF32 for them), the
same for the peak and for the models.
"""
import argparse
import datetime
import os
import pathlib
import platform
import sys

if __name__ == "__main__":  # before the imports below, which take seconds
  from maskgit_jax.common import allocator  # pylint: disable=g-import-not-at-top
  allocator.maybe_reexec()  # as the entry points run

if "--tiny" in sys.argv[1:]:
  # XLA:CPU compiles ~3x faster unoptimised; the tiny run is all compiling.
  # (Read when the backend starts, after these imports.) XLA:CPU traces its
  # operations for the profiles only with the traceme flag.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0"
                             " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp
import numpy as np

from maskgit_jax.common import allocator
from maskgit_jax.nets import factory
from maskgit_jax.store import loader
from maskgit_jax.train_lib import run as run_lib
from maskgit_jax.train_lib import tokenizer_task
from maskgit_jax.train_lib import transformer_task
from gpu_report import (NAMES, SAMPLERS, START, Report, largest_fitting,  # pylint: disable=g-multiple-import
                        measure, memory_stats, no_batch_error)
from gpu_sampler import load_config, run_sampler
import gpu_profile  # benchmarks/gpu_profile.py
import peak as peak_lib  # benchmarks/peak.py
import sampler  # benchmarks/sampler.py
import train_step  # benchmarks/train_step.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 1000  # only resolves durations; nothing here depends on it


def run_peak(sizes, repeats):
  peaks = {}
  by_size = {}
  for name in sampler.DTYPES:
    peaks[name], sizes_ = peak_lib.matmul_peak(sampler.DTYPES[name], sizes,
                                                 repeats)
    by_size[name] = {str(k): v for k, v in sizes_.items()}
  fields = {"unit": "FLOP/s", "float32": peaks["float32"],
            "bfloat16": peaks["bfloat16"], "by_size": by_size,
            "method": "peak.matmul_peak: best of n x n matmuls, n in "
                      f"{list(sizes)}, 2 n^3 FLOPs, float32 accumulation, "
                      f"median of {repeats} after a warm-up"}
  return peaks["bfloat16"], fields


def run_stage2(args, peaks, deadline, fused=False):
  config = load_config("imagenet", args.tiny)
  config.transformer.dtype = "bfloat16"
  if fused:  # cuDNN's flash attention, which has no attention dropout
    config.transformer.attention_impl = "fused"
    config.transformer.attention_probs_dropout_prob = 0.0
  tokenizer = factory.tokenizer_from_config(config)
  transformer = factory.transformer_from_config(config)
  section = run_lib.resolve_durations(config.transformer_training,
                                      STEPS_PER_EPOCH, "transformer_training")
  task = transformer_task.make_task(section, tokenizer, None, transformer,
                                    config.num_classes)
  n_tokens = transformer.max_position_embeddings - 1
  rs = np.random.RandomState(0)

  def attempt(b):
    batch = {"tokens": jnp.asarray(rs.randint(0, tokenizer.codebook_size,
                                              (b, n_tokens)), jnp.int32),
             "label": jnp.asarray(rs.randint(0, config.num_classes, b),
                                  jnp.int32)}
    return train_step.bench_task(task, batch, None, args.repeats,
                                 profile=profiler(args))

  b, r, tried = largest_fitting(args.stage2_batches, attempt, deadline,
                                args.min_attempt_s)
  fields = {"unit": "MFU (fraction of the bf16 matmul peak)",
            "dtype": "bfloat16", "input": "cached tokens",
            "attention_impl": transformer.attention_impl,
            "attention_probs_dropout_prob":
                transformer.attention_probs_dropout_prob,
            "batches_tried": tried, "batch": b}
  if r is None:
    fields["error"] = no_batch_error(args.stage2_batches, tried)
    return None, fields
  analytic = train_step.analytic_transformer_flops(
      transformer, loader.expected_tree(None, "transformer", transformer), b)
  peak = peaks.get("bfloat16")
  fields.update(r, analytic=analytic, matmul_peak=peak,
                flops_counting="analytic " + analytic["formula"])
  fields["analytic_flops_per_s"] = analytic["flops_per_step"] / r["step_s"]
  fields["mfu"] = fields["analytic_flops_per_s"] / peak if peak else None
  fields["xla_mfu"] = r["achieved_flops_per_s"] / peak if peak else None
  if not peak:
    fields["error"] = "no bf16 matmul peak (see matmul_peak)"
  return fields["mfu"], fields


def run_stage1(args, peaks, deadline):
  config = load_config("imagenet_vqgan", args.tiny)
  if args.tiny:  # the recipe's discriminator is 512 wide whatever the size
    config.tokenizer_training.discriminator.max_filters = 16
  tokenizer = factory.tokenizer_from_config(config)
  section = run_lib.resolve_durations(config.tokenizer_training,
                                      STEPS_PER_EPOCH, "tokenizer_training")
  task = tokenizer_task.make_task(section, tokenizer, config.image_size,
                                  note=lambda m: None)
  size, ch = config.image_size, tokenizer.channels
  rs = np.random.RandomState(0)

  def attempt(b):
    batch = {"image": jnp.asarray(rs.rand(b, size, size, ch), jnp.float32),
             "label": jnp.asarray(rs.randint(0, config.num_classes, b),
                                  jnp.int32)}
    return train_step.bench_task(task, batch, None, args.repeats,
                                 profile=profiler(args))

  b, r, tried = largest_fitting(args.stage1_batches, attempt, deadline,
                                args.min_attempt_s)
  fields = {"unit": "MFU (fraction of the float32 matmul peak)",
            "dtype": "float32", "image_size": size,
            "perceptual_loss": bool(section.perceptual_weights),
            "batches_tried": tried, "batch": b,
            "flops_counting": "XLA cost analysis of the step's program "
                              "before optimisation (hlo_flops_per_step)"}
  if r is None:
    fields["error"] = no_batch_error(args.stage1_batches, tried)
    return None, fields
  peak, peak16 = peaks.get("float32"), peaks.get("bfloat16")
  fields.update(r, matmul_peak=peak)
  # XLA:GPU's compiled cost analysis leaves out the convolutions it hands
  # to cuDNN (the 2026-12-04 H200 run: 0.077 of 20.7 TFLOP per step);
  # the unoptimised program's count keeps them.
  flops = r["hlo_flops_per_step"] or r["flops_per_step"]
  fields["flops_per_s"] = flops / r["step_s"]
  fields["mfu"] = fields["flops_per_s"] / peak if peak else None
  fields["mfu_of_bf16_peak"] = (fields["flops_per_s"] / peak16
                                if peak16 else None)
  fields["compiled_cost_mfu"] = (r["achieved_flops_per_s"] / peak
                                 if peak else None)
  if not peak:
    fields["error"] = "no float32 matmul peak (see matmul_peak)"
  return fields["mfu"], fields


# Measured with --all (or --only) only: the bf16 sampler and stage-2 step
# with the default attention, beside the fused ones that the default run
# measures (cuDNN's flash attention: on the H200 45% MFU against 33%).
COMPARISONS = ("sampler_bfloat16", "stage2_train")


def selected(args):
  """The measurements this run makes: --only's, or every one with --all,
  else all but COMPARISONS; always the peak and the peak memory, and the
  float32 sampler with any other (they share one interleaved run)."""
  if args.only:
    run = set(args.only)
  else:
    run = set(NAMES) - (set() if args.all else set(COMPARISONS))
  run |= {"matmul_peak", "peak_memory"}
  if run & set(SAMPLERS):
    run.add("sampler_float32")
  return run


def profiler(args):
  """gpu_profile.safe_profile with --profile_calls, or None (--no_profile)."""
  if not args.profile:
    return None
  return lambda fn, hlo_text="": gpu_profile.safe_profile(
      fn, calls=args.profile_calls, hlo_text=hlo_text)


def ints(text):
  return [int(x) for x in text.split(",") if x.strip()]


def names(text):
  chosen = [x.strip() for x in text.split(",") if x.strip()]
  bad = [x for x in chosen if x not in NAMES]
  if bad or not chosen:
    raise argparse.ArgumentTypeError(
        f"unknown measurement(s) {bad or text!r}; expected some of "
        f"{', '.join(NAMES)}")
  return chosen


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tiny", action="store_true",
                      help="CPU-sized shapes (tests)")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                           "gpu.json"))
  parser.add_argument("--allow_cpu", action="store_true",
                      help="run the full sizes without a GPU (slow)")
  parser.add_argument("--budget_s", type=float, default=270.0,
                      help="no new measurement or batch attempt starts "
                           "after this many seconds (gpu.sh kills at 300)")
  parser.add_argument("--min_attempt_s", type=float, default=None,
                      help="a train-step batch attempt needs this much "
                           "budget left (default 40, 0 with --tiny)")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed runs after the warm-up (default 10, 1 "
                           "with --tiny)")
  parser.add_argument("--sampler_batch", type=int, default=None)
  parser.add_argument("--num_iter", type=int, default=None,
                      help="decoding iterations (default: the config's, "
                           "2 with --tiny)")
  parser.add_argument("--fast_tokenizer_dtype", default="float32",
                      choices=sorted(sampler.DTYPES))
  parser.add_argument("--all", action="store_true",
                      help="also the comparison entries left out of the "
                           f"default run ({', '.join(COMPARISONS)}: bf16 "
                           "with the default attention, ~2 min more)")
  parser.add_argument("--profile", default=True,
                      action=argparse.BooleanOptionalAction,
                      help="after each timing, a jax.profiler trace of the "
                           "step / each sampler's forward, summed per XLA "
                           "operation (`profile` / `forward_profile`)")
  parser.add_argument("--profile_calls", type=int, default=3)
  parser.add_argument("--stage2_batches", type=ints, default=None,
                      help="descending, comma-separated (default "
                           "256,128,64,32; 256 took 119 of the H200's 141 GB)")
  parser.add_argument("--stage1_batches", type=ints, default=None,
                      help="descending, comma-separated (default "
                           "32,16,8,4)")
  parser.add_argument("--peak_sizes", type=ints, default=None)
  parser.add_argument("--only", type=names, default=None,
                      help="comma-separated measurements to run instead of "
                           "the default ones (matmul_peak "
                           "always runs: the MFUs need it); the others are "
                           "kept from the existing --out file, tagged "
                           "with their run")
  args = parser.parse_args(argv)
  t = args.tiny
  defaults = dict(repeats=1 if t else 10, sampler_batch=2 if t else 64,
                  num_iter=2 if t else None, min_attempt_s=0 if t else 40,
                  stage2_batches=[2] if t else [256, 128, 64, 32],
                  stage1_batches=[2] if t else [32, 16, 8, 4],
                  peak_sizes=[64, 128] if t else
                  list(peak_lib.PEAK_SIZES["gpu"]))
  for k, v in defaults.items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  return args


def main(argv=None):
  args = parse_args(argv)
  deadline = START + args.budget_s
  device = jax.devices()[0]
  header = {
      "benchmark": "benchmarks/gpu.py (issue 14 item 5)",
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "tiny": args.tiny, "started": datetime.datetime.now(
          datetime.timezone.utc).isoformat(timespec="seconds"),
      "device": str(device), "platform": device.platform,
      "device_kind": getattr(device, "device_kind", None),
      "device_count": jax.device_count(), "jax_version": jax.__version__,
      "default_matmul_precision": jax.config.jax_default_matmul_precision,
      "machine": platform.platform(),
      "allocator": allocator.current(), "cpu_count": os.cpu_count(),
      "memory_bytes_limit": memory_stats().get("bytes_limit"),
      "args": {k: v for k, v in vars(args).items() if k != "out"},
      "targets": {"stage2_train.mfu": ">= 0.45 on an H200",
                  "sampler forward mfu": ">= 0.40 on an H200"},
      "complete": False}
  run = selected(args)
  report = Report(args.out, header, keep=[n for n in NAMES if n not in run])
  print(f"device: {device} ({device.platform}); writing {args.out}",
        flush=True)
  if device.platform != "gpu" and not (args.tiny or args.allow_cpu):
    msg = (f"no GPU: jax's device is {device.platform} ({device}); install "
           "a CUDA jax (pip install -e . 'jax[cuda12]') or pass --tiny / "
           "--allow_cpu")
    for name in NAMES:
      report.set(name, error=msg)
    print(msg, file=sys.stderr)
    return 2
  peaks = {}

  def peak():
    value, fields = run_peak(args.peak_sizes, max(args.repeats, 3))
    peaks.update(float32=fields["float32"], bfloat16=fields["bfloat16"])
    return value, fields
  measure(report, "matmul_peak", peak, deadline)
  if "sampler_float32" in run:
    run_sampler(report, args, peaks, deadline, profiler(args),
                [n for n in SAMPLERS if n in run])
  if "stage2_train" in run:
    measure(report, "stage2_train",
            lambda: run_stage2(args, peaks, deadline), deadline)
  if "stage2_train_fused" in run:
    measure(report, "stage2_train_fused",
            lambda: run_stage2(args, peaks, deadline, fused=True), deadline)
  if "stage1_train" in run:
    measure(report, "stage1_train",
            lambda: run_stage1(args, peaks, deadline), deadline)
  stats = memory_stats()
  report.set("peak_memory", value=stats.get("peak_bytes_in_use"),
             error=(None if stats.get("peak_bytes_in_use") is not None else
                    f"memory_stats() has no peak_bytes_in_use on "
                    f"{device.platform} (null)"),
             unit="bytes", memory_stats={k: v for k, v in stats.items()
                                         if isinstance(v, (int, float))})
  report.data["complete"] = True
  report.write()
  ms = report.data["measurements"]
  print("| measurement | value | mfu | error |")
  print("|---|---|---|---|")
  for name, m in ms.items():
    v = m["value"]
    mfu = m.get("mfu")
    print(f"| {name} | {'' if v is None else f'{v:.4g}'} | "
          f"{'' if mfu is None else f'{mfu:.1%}'} | "
          f"{(m['error'] or '')[:80]} |")
  print(f"wrote {args.out} ({report.data['wall_s']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
