"""The rows of `make bench`'s report (benchmarks/run_all.py): each figure of
the benchmarks' JSON results beside its target, with how it was measured.

`build_rows(results, demo_measured)` takes {benchmark name: its JSON report
or None} and returns the rows (metric, value, target, passed, how, source)
that run_all.py writes to bench.json and bench.md.
"""
import os

TARGETS = {
    "overhead": 1.05, "bf16_speedup": 1.8, "parallel_speedup": 25.0,
    "fid_ratio": 1.1, "sampler_floor": 1.25, "demo_wall_s": 15 * 60, "demo_rss_mb": 2048.0,
}


def _row(metric, value, unit, target, how, higher_is_better=False,
         fmt="{:.3g}"):
  if value is None:
    passed, text = None, "not measured"
  else:
    text = fmt.format(value) + (f" {unit}" if unit else "")
    if target is None:
      passed = None
    else:
      passed = bool(value >= target if higher_is_better else value <= target)
  target_text = ("—" if target is None else
                 ("≥ " if higher_is_better else "≤ ") + fmt.format(target) +
                 (f" {unit}" if unit else ""))
  return {"metric": metric, "value": value, "unit": unit, "value_text": text,
          "target": target, "target_text": target_text,
          "higher_is_better": higher_is_better, "passed": passed, "how": how}


def _cpu_text(result):
  if "cpu_per_wall" not in result:
    return ""
  return (f"; process CPU/wall {result['cpu_per_wall']:.2f} (of "
          f"{os.cpu_count()} cores)")


# Issue 14's train-step targets, against the peak of the precision the step
# computes in, at the embedded default's and at the ImageNet-256 shapes.
STEP_TARGETS = {"tokenizer": 0.35, "transformer": 0.50}


def _largest_batch(result):
  """The sampler benchmark's row of the largest batch."""
  return max(result["results"], key=lambda x: x["batch"])


def _train_step_rows(rows, ts, shape_text, label):
  """Utilisation, steps/s and compiled memory of each stage in `ts` (a
  benchmarks/train_step.py report)."""
  for stage, title in (("tokenizer", "Stage 1 (tokenizer)"),
                       ("transformer", "Stage 2 (transformer)")):
    s = ts["stages"].get(stage)
    if not s:
      continue
    ref = s.get("utilisation_reference", ts["utilisation_reference"])
    title = f"{title}{label}, {s['dtype']}" if label else title
    how = (f"{shape_text}, batch {s['batch_size']}, {s['dtype']}, "
           f"median of {s['repeats']} steps: {s['steps_per_s']:.3g} "
           f"steps/s, {s['flops_per_step'] / 1e9:.4g} GFLOP/step (XLA cost "
           "analysis of the compiled step: fwd + bwd + optimizer")
    if "analytic" in s:
      a = s["analytic"]
      how += (f"; analytic {a['formula']} = "
              f"{a['flops_per_step'] / 1e9:.4g} GFLOP, N={a['N']}, "
              f"B={a['B']}, S={a['S']}, L={a['L']}, d={a['d']}")
    how += (f") / step time, vs the {ref} matmul rate timed in turn "
            "with each step (median over rounds); "
            f"{s['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s")
    if "utilisation_vs_best_peak" in s:
      how += (f"; {s['utilisation_vs_best_peak']:.1%} of the best-of-sizes "
              "peak measured after the steps")
    rows.append(_row(f"{title} train step: FLOP utilisation",
                     s["utilisation"], "", STEP_TARGETS[stage], how,
                     higher_is_better=True, fmt="{:.1%}"))
    rows.append(_row(f"{title} train step: steps/s", s["steps_per_s"], "",
                     None, f"batch {s['batch_size']}, median of "
                     f"{s['repeats']} steps", fmt="{:.3g}"))
    mem = s.get("compiled_memory") or {}
    if mem:
      rows.append(_row(
          f"{title} train step: compiled memory", mem[
              "peak_estimate_bytes"] / 2**20, "MiB", None,
          "XLA memory analysis of the compiled step: arguments "
          f"{mem.get('argument_size_in_bytes', 0) / 2**20:.0f} + outputs "
          f"{mem.get('output_size_in_bytes', 0) / 2**20:.0f} - aliased "
          f"{mem.get('alias_size_in_bytes', 0) / 2**20:.0f} + temporaries "
          f"{mem.get('temp_size_in_bytes', 0) / 2**20:.0f} MiB",
          fmt="{:.0f}"))


def build_rows(res, demo_measured):
  rows = []
  se = res.get("sampler_embedded")
  si = res.get("sampler_imagenet")
  t = TARGETS

  def overhead_rows(r, label, shape_text):
    if not r:
      rows.append(_row(f"Sampler overhead, {label}", None, "", t["overhead"],
                       "benchmark failed or skipped"))
      return
    x = _largest_batch(r)
    for mode, short in (("float32", "f32"), ("bfloat16", "bf16")):
      m = x[mode]
      rows.append(_row(
          f"Sampler overhead, {label}, {short}", m["overhead"], "",
          t["overhead"],
          f"{shape_text}, batch {x['batch']}, T={x['num_iter']}: "
          f"time(decode+detokenize, one jit) {m['sample_s']:.4g} s / "
          f"({x['num_iter']} x forward {m['forward_s']:.4g} s + detokenize "
          f"{m['detokenize_s']:.4g} s); medians of {x.get('repeats', '?')} interleaved "
          f"rounds, random weights{_cpu_text(x)}", fmt="{:.3f}"))

  overhead_rows(se, "embedded", "Fashion-MNIST config, 8x8 tokens")
  _tag(rows, "sampler_embedded")
  overhead_rows(si, "ImageNet-256",
                "Transformer 256 + tokenizer 'imagenet', 16x16 tokens, "
                "codebook 1024")
  if si:
    x = _largest_batch(si)
    fm = x.get("fast_mode", {"transformer_dtype": "bfloat16",
                             "tokenizer_dtype": "float32"})
    rows.append(_row(
        "bf16 sampler speed-up vs f32, ImageNet-256", x["bf16_speedup"], "x",
        t["bf16_speedup"],
        f"time(f32 sampler) / time(bf16 sampler), decode + detokenize, batch "
        f"{x['batch']}, T={x['num_iter']}, same run, interleaved; fast mode = "
        f"transformer {fm['transformer_dtype']} (bf16 matmul inputs, f32 "
        f"accumulation, f32 LayerNorm/softmax/logits), tokenizer "
        f"{fm['tokenizer_dtype']}. Parts: transformer forward "
        f"{x['float32']['forward_s'] / x['bfloat16']['forward_s']:.2f}x, "
        f"detokenize {x['float32']['detokenize_s'] / x['bfloat16']['detokenize_s']:.2f}x"
        f"{_cpu_text(x)}",
        higher_is_better=True, fmt="{:.2f}"))
  for x in (si or {}).get("results", []):
    f = x.get("bf16_floor")
    if not f:
      continue
    rows.append(_row(
        f"bf16 sampler vs its floor, ImageNet-256, batch {x['batch']}",
        f["decode_over_forwards_floor"], "x", t["sampler_floor"],
        f"(time(bf16 decode + detokenize) {x['bfloat16']['sample_s']:.3g} s "
        f"- detokenize {x['bfloat16']['detokenize_s']:.3g} s) / "
        f"({x['num_iter']} x 2 x {x['transformer_params'] / 1e6:.1f}M "
        f"parameters x {x['tokens_per_forward']} tokens at the bf16 matmul "
        f"peak {f['matmul_peak_bf16'] / 1e9:.0f} GFLOP/s = "
        f"{f['forwards_floor_s']:.3g} s), the peak the higher of two "
        "measured before and after the samplers in the same run",
        fmt="{:.2f}"))
  _tag(rows, "sampler_imagenet")
  pf = res.get("precision_fid")
  if pf:
    real = pf.get("fid_vs_real") or {}
    real_text = ""
    if real:
      real_text = (f"; vs {real['reference_images']} real images: f32 "
                   f"{real['float32 seed 0']:.1f}/{real['float32 seed 1']:.1f},"
                   f" bf16 {real['bfloat16 seed 2']:.1f}/"
                   f"{real['bfloat16 seed 3']:.1f}, real-vs-real floor "
                   f"{real['real_vs_real_floor']:.1f}")
    rows.append(_row(
        "bf16 samples' statistics: FID(bf16, f32) / FID(f32, f32)",
        pf["ratio_cross_to_floor"], "", pf["tolerance"],
        f"shipped Fashion-MNIST checkpoint (trained; random weights would "
        f"say nothing), {pf['num_samples']} class-balanced samples per set, "
        f"FID Inception features: mean FID over bf16 seeds 2,3 x f32 seeds "
        f"0,1 = {pf['fid_cross_mean']:.2f} vs floor FID(f32 seed 0, f32 seed "
        f"1) = {pf['fid_floor_f32_vs_f32']:.2f}; FID(bf16 2, bf16 3) = "
        f"{pf['fid_bf16_vs_bf16']:.2f}; same seed: "
        f"{pf['same_seed_token_agreement']:.1%} of tokens equal{real_text}",
        fmt="{:.3f}"))
  _tag(rows, "precision_fid")
  if si and si.get("sequential"):
    q = si["sequential"]
    rows.append(_row(
        "Parallel vs sequential decoding, ImageNet-256", q["parallel_speedup"],
        "x", t["parallel_speedup"],
        f"time({q['sequential_iterations']} iterations, one token each: "
        f"{q['sequential_s']:.1f} s) / time({q['parallel_iterations']} "
        f"iterations, cosine: {q['parallel_s']:.2f} s), token decoding only, "
        f"{q['dtype']}, batch {q['batch']}, same run, median of "
        f"{q['repeats']} interleaved rounds{_cpu_text(q)}",
        higher_is_better=True,
        fmt="{:.1f}"))
  _tag(rows, "sampler_imagenet")
  ts = res.get("train_step")
  if ts:
    ref = ts["utilisation_reference"]
    peak = ts["matmul_peak_bf16"] if ref == "bfloat16" else ts[
        "matmul_peak_f32"]
    peaks = (f"f32 {ts['matmul_peak_f32'] / 1e9:.0f}, " if
             ts["matmul_peak_f32"] else "") + (
                 f"bf16 {ts['matmul_peak_bf16'] / 1e9:.0f} GFLOP/s")
    rows.append(_row(
        "Matmul peak (this machine, this run)", peak / 1e9, "GFLOP/s", None,
        f"{ts['peak_method']}: {peaks}", fmt="{:.0f}"))
    _train_step_rows(rows, ts, "embedded config", "")
    rows.append(_row(
        "Train-step benchmark: process peak RSS", ts["peak_rss_mb"], "MiB",
        None, f"getrusage max RSS of the benchmark process (both stages, "
        f"{ts['stages']['tokenizer']['peak_rss_mb_after']:.0f} MiB after stage "
        "1)", fmt="{:.0f}"))
  _tag(rows, "train_step")
  for name in ("train_step_imagenet", "train_step_imagenet_bf16"):
    if res.get(name):
      _train_step_rows(rows, res[name], "ImageNet-256 config (the release's "
                       "models), from the token cache", ", ImageNet-256")
    _tag(rows, name)
  demo = res.get("demo")
  if demo:
    if demo_measured and demo.get("measured_in_this_run"):
      how = (f"`{demo.get('command', 'make demo')}` from a fresh git clone "
             f"(commit {demo.get('commit')}), this checkout's venv reused "
             "(make setup not included); measured in this run")
    else:
      how = ("NOT measured in this run (run `make bench BENCH_ARGS=--demo`): "
             f"{demo.get('source', 'an earlier run')}")
    rows.append(_row("make demo: wall time", demo["wall_s"] / 60, "min",
                     t["demo_wall_s"] / 60, how, fmt="{:.1f}"))
    rows.append(_row("make demo: peak RSS", demo["peak_rss_mb"], "MiB",
                     t["demo_rss_mb"],
                     how + (f"; {demo['peak_rss_method']}"
                            if "peak_rss_method" in demo else ""),
                     fmt="{:.0f}"))
  _tag(rows, "demo")
  ip = res.get("input_pipeline")
  if ip:
    for row in ip["rows"]:
      if row["case"] == "fashion_mnist train 32x32x3" and row.get("defaults"):
        rows.append(_row("Input pipeline, Fashion-MNIST train (demo)",
                         row["images_per_s"], "images/s", None,
                         "batch 128, augmentation, default threads",
                         fmt="{:.0f}"))
      if row["case"].startswith("folder train") and row.get("defaults"):
        rows.append(_row("Input pipeline, 256x256 JPEG folder train",
                         row["images_per_s"], "images/s", None,
                         "batch 128, random resized crop + flip, default "
                         "threads", fmt="{:.0f}"))
  _tag(rows, "input_pipeline")
  inc = res.get("inception")
  if inc:
    rows.append(_row("FID Inception feature throughput", inc["images_per_s"],
                     "images/s", None,
                     f"batch {inc['batch_size']}, {inc['input_size']}px "
                     f"resized to {inc['resized_to']}, weights "
                     f"{inc['weights']}", fmt="{:.1f}"))
    sbs = inc.get("network_side_by_side") or {}
    if "jax_over_torch" in sbs:
      ips = sbs["images_per_s"]
      rows.append(_row(
          "FID Inception network vs the TorchScript network run by torch",
          sbs["jax_over_torch"], "x", 1.0,
          f"batch {sbs['batch_size']} at 299x299, {sbs['repeats']} "
          f"interleaved rounds: {ips['jax_matmul']} images/s against torch "
          f"{sbs['torch']['torch_version']}'s {ips['torch']} (XLA "
          f"convolutions: {ips['jax_xla']}); features differ by "
          f"{sbs['max_abs_diff_vs_torch']:.1e}", higher_is_better=True,
          fmt="{:.2f}"))
  _tag(rows, "inception")
  rel = res.get("release_sampler")
  for r in (rel or {}).get("results", []):
    rows.append(_row(
        f"float32 sampler / the release's, ImageNet-256, batch {r['batch']}",
        r["ours_over_release"], "x", 1.0,
        f"the release's decode + detokenize (google-research/maskgit) and "
        f"ours on the same random weights and key, {r['num_iter']} "
        f"iterations, {r['repeats']} interleaved rounds: {r['ours_s']:.2f} s "
        f"against {r['release_s']:.2f} s; tokens "
        f"{'equal' if r['tokens_equal'] else 'NOT equal'}, images differ by "
        f"{r['max_abs_image_difference']:.1e}", fmt="{:.3f}"))
    if not r["tokens_equal"]:
      rows[-1]["passed"] = False
  _tag(rows, "release_sampler")
  return rows


def _tag(rows, source):
  for row in rows:
    row.setdefault("source", source)
