"""benchmarks/gpu.py's sampler measurements (sampler_float32,
sampler_bfloat16, sampler_bfloat16_fused: one interleaved
`sampler.bench_shape` run) and the configs both it and the train steps
use."""
from maskgit_jax.nets import factory
from maskgit_jax.store import loader
from gpu_report import SAMPLERS, measure
import sampler  # benchmarks/sampler.py
import train_step  # benchmarks/train_step.py

FORWARD_FORMULA = "2*N*B*S + 4*L*B*S^2*d"


def load_config(name, tiny):
  config = sampler.load_config(name)
  return sampler.tiny(config) if tiny else config


def forward_flops(transformer, batch):
  """FLOPs of one transformer forward: a third of train_step.py's analytic
  count of a train step (backward = 2 x forward)."""
  shapes = loader.expected_tree(None, "transformer", transformer)
  a = train_step.analytic_transformer_flops(transformer, shapes, batch)
  return dict(a, formula=FORWARD_FORMULA,
              flops_per_forward=a["flops_per_step"] / 3,
              train_formula=a["formula"]), a["flops_per_step"] / 3


def sampler_entries(args, peaks, profile=None, names=SAMPLERS):
  """({entry name: (images/s, fields)}, {mode: compile error}) of one
  interleaved sampler.bench_shape run (float32 and, of `names`, the
  bfloat16 and the fused bfloat16 measured together; a fused sampler that
  cuDNN refuses is an error, the others measured)."""
  shape = "tiny" if args.tiny else "imagenet256"
  config = load_config("imagenet", args.tiny)
  num_iter = args.num_iter or config.sampling.num_iter
  guidance = 0.0  # sampler._decode_kwargs
  forwards = num_iter * (2 if guidance else 1)
  r = sampler.bench_shape(shape, args.sampler_batch, num_iter, args.repeats,
                          args.fast_tokenizer_dtype,
                          fused_bf16="sampler_bfloat16_fused" in names,
                          profile=profile,
                          unfused_bf16="sampler_bfloat16" in names)
  transformer = factory.transformer_from_config(config)
  analytic, flops = forward_flops(transformer, args.sampler_batch)
  out = {}
  for mode in r["modes"]:
    m = r[mode]
    dtype = "float32" if mode == "float32" else "bfloat16"
    peak = peaks.get(dtype)
    fields = {
        "unit": "images/s", "shape": shape, "batch": r["batch"],
        "image_size": r["image_size"], "latent_size": r["latent_size"],
        "num_iter": num_iter, "guidance_scale": guidance,
        "forwards_per_batch": forwards, "repeats": r["repeats"],
        "transformer_dtype": dtype,
        "attention_impl": "fused" if mode.endswith("_fused") else "default",
        "tokenizer_dtype": ("float32" if mode == "float32"
                            else args.fast_tokenizer_dtype),
        "forward_s": m["forward_s"], "detokenize_s": m["detokenize_s"],
        "sample_s": m["sample_s"], "overhead": m["overhead"],
        "compile_s": m["compile_s"], "times": m["times"],
        "forward_flops": analytic,
        "forward_flops_per_s": flops / m["forward_s"],
        "matmul_peak": peak, "mfu_reference": f"{dtype} matmul peak",
        "mfu": flops / m["forward_s"] / peak if peak else None,
        "sample_mfu": (forwards * flops / m["sample_s"] / peak if peak
                       else None),
        # The forward as the decode loop runs it: (sample - detokenize) /
        # forwards, the per-iteration token choice included (no dispatch
        # per forward, loop-invariant work hoisted by XLA).
        "loop_forward_s": (m["sample_s"] - m["detokenize_s"]) / forwards,
        "loop_forward_mfu": (forwards * flops / (m["sample_s"] -
                                                 m["detokenize_s"]) / peak
                             if peak and m["sample_s"] > m["detokenize_s"]
                             else None),
        "bf16_speedup": r["bf16_speedup"],
        "bf16_speedup_against": r["bf16_mode"],
        "phases_s": r["phases"],  # where the measurement's wall time went
        "forward_profile": m.get("forward_profile"),
        "load_average_start": r["load_average_start"]}
    if not peak:
      fields["mfu_error"] = "no matmul peak (see matmul_peak)"
    out[f"sampler_{mode}"] = (r["batch"] / m["sample_s"], fields)
  return out, r["errors"]


def run_sampler(report, args, peaks, deadline, profile=None,
                names=SAMPLERS):
  """The sampler entries of `names` (one shared run: one error fills them
  all)."""
  holder, errors = {}, {}

  def bench():
    entries, failed = sampler_entries(args, peaks, profile, names)
    holder.update(entries)
    errors.update(failed)
    return holder["sampler_float32"]
  measure(report, "sampler_float32", bench, deadline)
  entry = report.data["measurements"]["sampler_float32"]
  for name in [n for n in SAMPLERS[1:] if n in names]:
    if name in holder:
      value, fields = holder[name]
      report.set(name, value=value, wall_s=entry["wall_s"],
                 peak_bytes_in_use_so_far=entry["peak_bytes_in_use_so_far"],
                 **fields)
    elif entry["error"] or name != "sampler_bfloat16_fused":
      report.set(name, error=entry["error"] or "not measured")
    else:  # cuDNN refused it; the others were measured
      report.set(name, error=errors.get("bfloat16_fused", "not measured"))
