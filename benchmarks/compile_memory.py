r"""Compile-only memory check of the train steps on a simulated device mesh.

  python benchmarks/compile_memory.py                      # the default set
  python benchmarks/compile_memory.py --devices=64 --mesh=1,64,1 \
      --config=configs/imagenet512.py --out=/tmp/m.json

No accelerator and no real allocation: the CPU backend is given `--devices`
simulated devices (`XLA_FLAGS=--xla_force_host_platform_device_count=N`, set
before jax is imported; the script re-executes itself if jax was already
imported), every array is a `jax.ShapeDtypeStruct`, and the step is only
lowered and compiled. The step is built exactly as training builds it
(maskgit_jax/train_lib/run.py and trainer.py):

  config -> factory.tokenizer_from_config / transformer_from_config(
      activation_rules=config.logical_axis_rules)
  -> transformer_task.make_task (stage 2; the tokenizer variables, abstract,
     are the replicated `frozen` argument) or tokenizer_task.make_task (stage 1)
  -> jax.eval_shape(task.init, rng) -> sharding_lib.state_shardings
  -> batch with data.make_data_sharding(mesh, sharding_lib.BATCH_AXES)
  -> jax.jit(task.train_step, donate_argnums=0, out_shardings=(shardings,
     None)).lower(...).compile() under sharding_lib.mesh_context(mesh).

Reported per (config, mesh): `compiled.memory_analysis()` (argument, output,
alias, temp and generated-code bytes; these are per device: the SPMD program
of one device), `peak = argument + output - alias + temp`, lower and compile
seconds, and an analytic breakdown: exact parameter / optimizer-state / EMA
bytes (whole model, and per device from the state shardings), and the
activation residuals autodiff saves per example (JAX level, before XLA's
fusion, counted on the loss function at batch 1).

The CPU backend's buffer assignment is not a TPU's or GPU's (different
fusion, no latency-hiding scheduler, no memory-driven rematerialisation), so
`temp` is indicative; argument/output/alias sizes follow from the shardings
and are the same on any backend. XLA:CPU merges the recomputation of an
unrolled `remat` back into the forward pass; `--honour_remat` compiles with
MEMORY_FLAGS (the memory-minimising scheduler, no CSE), which keep it apart
as a TPU or GPU compiler does. Scanned layers need no flag.

Rematerialisation (ImageNet-512 stage 2, 64 devices, 4 images per device):
  python benchmarks/compile_memory.py --config=configs/imagenet512.py \
      --mesh=1,64,1 --set transformer.scan_layers=True \
      --set transformer.remat=full --append
"""
import argparse
import datetime
import json
import os
import sys
import time

import config_overrides  # benchmarks/config_overrides.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ("configs/imagenet.py", "configs/imagenet512.py")
DEFAULT_MESHES = ("1,64,1", "8,8,1", "64,1,1")
IMAGENET_TRAIN_EXAMPLES = 1_281_167  # resolves "N epochs" durations
COUNT_FLAG = "--xla_force_host_platform_device_count"
# XLA:CPU, left to itself, undoes the rematerialisation of unrolled layers: it
# drops the optimisation barriers that keep a recomputation apart, CSE then
# merges the recomputed forward into the original one, and its default
# scheduler orders for concurrency, not memory. A TPU or GPU compiler keeps the
# barriers and schedules for memory. --honour_remat adds these two flags so
# that XLA:CPU does the same (an 8-layer MLP's gradient: temp 22.5 -> 6.0 MiB
# with jax.checkpoint; 23.0 either way without them). Scanned layers
# (transformer.scan_layers) need neither: the loop bounds what is live.
MEMORY_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",
                "--xla_disable_hlo_passes=cse")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--devices", type=int, default=64,
                 help="simulated CPU devices (default 64)")
  p.add_argument("--config", action="append", default=None,
                 help="config file (repeatable; default: %s)" %
                 ", ".join(DEFAULT_CONFIGS))
  p.add_argument("--mesh", action="append", default=None,
                 help="data,fsdp,model sizes, one -1 allowed (repeatable; "
                 "default: %s)" % " ".join(DEFAULT_MESHES))
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override, e.g. transformer.preset=tiny "
                 "(value parsed as a Python literal, else a string)")
  p.add_argument("--batch_size", type=int, default=0,
                 help="global batch (default: the config's)")
  p.add_argument("--honour_remat", action="store_true",
                 help="compile with MEMORY_FLAGS, so that XLA:CPU keeps an "
                 "unrolled remat's recomputation apart (see the module doc)")
  p.add_argument("--no_residuals", action="store_true",
                 help="skip the per-example activation-residual count")
  p.add_argument("--out", default="benchmarks/results/compile_memory.json",
                 help="JSON report ('' = none)")
  p.add_argument("--append", action="store_true",
                 help="merge into an existing --out report (an entry with "
                 "the same config, overrides, mesh and batch is replaced)")
  return p.parse_args(argv)


def ensure_devices(n, argv, honour_remat=False):
  """Sets the CPU device count (and MEMORY_FLAGS with `honour_remat`)
  before jax is imported (re-execs if needed)."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith(COUNT_FLAG) and f not in MEMORY_FLAGS]
  extra = list(MEMORY_FLAGS) if honour_remat else []
  wanted = " ".join(flags + extra + [f"{COUNT_FLAG}={n}"])
  if (os.environ.get("XLA_FLAGS") == wanted and
      os.environ.get("JAX_PLATFORMS") == "cpu"):
    return
  os.environ["XLA_FLAGS"] = wanted
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # too late to change the backend: start afresh
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] +
             list(argv))


def tree_bytes(tree):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


def tree_count(tree):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)
                 if hasattr(x, "shape")))


def per_device_bytes(abstract, shardings):
  """Bytes of the largest shard of each leaf, summed: one device's share."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  total = 0
  for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(
      shardings, is_leaf=lambda v: isinstance(v, jax.sharding.Sharding))):
    total += int(np.prod(s.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
  return total


def residual_bytes(fn, *args):
  """Bytes autodiff saves for the backward pass of `fn(*args)`, excluding the
  arguments themselves (parameters are counted separately)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  try:
    from jax._src.ad_checkpoint import saved_residuals  # pylint: disable=import-outside-toplevel
    res = saved_residuals(fn, *args)
  except ImportError:  # pragma: no cover - the private helper moved
    res = []
  total = 0
  for aval, why in res:
    if "from the argument" in why or not hasattr(aval, "shape"):
      continue
    total += int(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize
  return total


def build(config, mesh_spec, devices):
  """The task, mesh, abstract arguments and jitted step for one case."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from maskgit_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  from maskgit_jax.nets import factory  # pylint: disable=import-outside-toplevel
  from maskgit_jax.train_lib import run as run_lib  # pylint: disable=import-outside-toplevel
  from maskgit_jax.train_lib import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from maskgit_jax.train_lib import tokenizer_task  # pylint: disable=import-outside-toplevel
  from maskgit_jax.train_lib import transformer_task  # pylint: disable=import-outside-toplevel

  mesh = sharding_lib.make_mesh(mesh_spec, jax.devices()[:devices])
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  tokenizer = factory.tokenizer_from_config(config)
  transformer = factory.transformer_from_config(config, activation_rules=rules)
  stage = config.stages[-1]  # the last stage is the one that matters here
  size, channels = config.image_size, tokenizer.channels
  if stage == "transformer":
    section = run_lib.resolve_durations(config.transformer_training,
                                        IMAGENET_TRAIN_EXAMPLES // config.transformer_training.batch_size,
                                        "transformer_training")
    # The released-format tokenizer variables, abstract: never allocated.
    tok_vars = jax.eval_shape(
        lambda r: factory.init_tokenizer(tokenizer, r, size),
        jax.random.PRNGKey(0))
    task = transformer_task.make_task(section, tokenizer, tok_vars,
                                      transformer, config.num_classes)
    frozen = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=sharding_lib.replicated(mesh)),
        tok_vars)
  else:
    section = run_lib.resolve_durations(config.tokenizer_training,
                                        IMAGENET_TRAIN_EXAMPLES // config.tokenizer_training.batch_size,
                                        "tokenizer_training")
    task = tokenizer_task.make_task(section, tokenizer, size,
                                    note=lambda m: None)
    frozen = None
  rng = jax.random.PRNGKey(0)
  boxed = jax.eval_shape(task.init, rng)
  shardings = sharding_lib.state_shardings(boxed, mesh, rules)
  abstract = nn.meta.unbox(boxed)
  state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, shardings)
  batch_size = int(section.batch_size)
  data_sharding = data_lib.make_data_sharding(mesh, sharding_lib.BATCH_AXES)
  batch = {
      "image": jax.ShapeDtypeStruct((batch_size, size, size, channels),
                                    jnp.float32, sharding=data_sharding),
      "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32,
                                    sharding=data_sharding)}
  if stage == "transformer":  # token_cache=True: codes instead of images
    seq = (size // tokenizer.downsample_factor) ** 2
    batch["tokens"] = jax.ShapeDtypeStruct((batch_size, seq), jnp.int32,
                                           sharding=data_sharding)
  batch = {k: batch[k] for k in task.batch_keys}
  import train_step as train_step_lib  # pylint: disable=import-outside-toplevel
  step = jax.jit(train_step_lib.trainer_step_fn(task), donate_argnums=0,
                 out_shardings=(shardings, None))
  return dict(stage=stage, section=section, mesh=mesh, task=task,
              tokenizer=tokenizer, transformer=transformer, abstract=abstract,
              shardings=shardings, state=state, batch=batch, frozen=frozen,
              step=step, batch_size=batch_size)


def analytic(case):
  """Exact state sizes (whole and per device) from the abstract state."""
  abstract, shardings = case["abstract"], case["shardings"]
  out = {
      "param_count": tree_count(abstract.params),
      "param_bytes": tree_bytes(abstract.params),
      "opt_state_bytes": tree_bytes(abstract.opt_state),
      "ema_bytes": tree_bytes(abstract.ema_params),
      "aux_bytes": tree_bytes(abstract.aux),  # stage 1: discriminator & co.
      "state_bytes": tree_bytes(abstract),
      "state_bytes_per_device": per_device_bytes(abstract, shardings),
      "params_bytes_per_device": per_device_bytes(abstract.params,
                                                  shardings.params),
      "frozen_bytes_per_device": tree_bytes(case["frozen"]),  # replicated
      "batch_bytes_per_device": per_device_bytes(
          case["batch"], {k: v.sharding for k, v in case["batch"].items()}),
  }
  if abstract.aux is not None and "d_params" in abstract.aux:
    out["discriminator_param_count"] = tree_count(abstract.aux["d_params"])
  return out


def activation_residuals(case, config):
  """Per-example bytes autodiff keeps for the backward pass (batch 1)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from maskgit_jax.libml import losses  # pylint: disable=import-outside-toplevel

  params = case["abstract"].params
  size = config.image_size
  if case["stage"] == "transformer":
    transformer = case["transformer"].clone(activation_rules=None)
    seq = transformer.max_position_embeddings
    codebook = case["tokenizer"].codebook_size
    ids = jax.ShapeDtypeStruct((1, seq - 1), jnp.int32)

    def loss_fn(p, inputs, targets):
      logits = transformer.apply({"params": p}, inputs, deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(0)})
      logits = logits[:, 1:, :codebook]
      return losses.smoothed_cross_entropy(
          logits, targets, jnp.ones(targets.shape, jnp.float32), 0.1)
    whole = residual_bytes(loss_fn, params,
                           jax.ShapeDtypeStruct((1, seq), jnp.int32), ids)
    layer = transformer.num_hidden_layers
    return {"residual_bytes_per_example": whole,
            "residual_bytes_per_example_per_layer": whole / layer,
            "what": "transformer loss (dropout on), batch 1, f32"}
  tokenizer = case["tokenizer"]
  images = jax.ShapeDtypeStruct((1, size, size, tokenizer.channels),
                                jnp.float32)

  def g_loss(p, x):
    recon, result = tokenizer.apply({"params": p}, x, train=True)
    return jnp.mean((recon - x) ** 2) + result["quantizer_loss"]
  return {"residual_bytes_per_example": residual_bytes(g_loss, params, images),
          "what": "tokenizer reconstruction + VQ loss (no discriminator, no "
                  "perceptual network), batch 1, f32"}


def compile_case(case):
  from maskgit_jax.train_lib import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  with sharding_lib.mesh_context(case["mesh"]):
    start = time.perf_counter()
    lowered = case["step"].lower(case["state"], case["batch"], case["frozen"])
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
  m = compiled.memory_analysis()
  mem = {k: int(getattr(m, f"{k}_size_in_bytes"))
         for k in ("argument", "output", "alias", "temp", "generated_code")}
  mem["peak"] = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]
  return mem, lower_s, compile_s


def gib(n):
  return n / 2**30


def main(argv):
  args = parse_args(argv)
  ensure_devices(args.devices, argv, args.honour_remat)
  import jax  # pylint: disable=import-outside-toplevel
  if jax.device_count() < args.devices:
    raise SystemExit(f"error: {jax.device_count()} devices, wanted "
                     f"{args.devices}")
  configs = args.config or list(DEFAULT_CONFIGS)
  meshes = args.mesh or list(DEFAULT_MESHES)
  results, residual_cache = [], {}
  for path in configs:
    config = config_overrides.load_config(path, args.set, args.batch_size)
    for mesh_text in meshes:
      mesh_spec = tuple(int(v) for v in mesh_text.strip("()").split(","))
      case = build(config, mesh_spec, args.devices)
      entry = {
          "config": path, "overrides": list(args.set),
          "honour_remat": args.honour_remat, "stage": case["stage"],
          "devices": args.devices, "mesh": list(case["mesh"].devices.shape),
          "global_batch": case["batch_size"],
          "per_device_batch": case["batch_size"] /
                              (case["mesh"].shape["data"] *
                               case["mesh"].shape["fsdp"]),
          **analytic(case)}
      if not args.no_residuals:
        if path not in residual_cache:
          residual_cache[path] = activation_residuals(case, config)
        entry["activations"] = residual_cache[path]
      mem, lower_s, compile_s = compile_case(case)
      entry.update(memory_per_device=mem, lower_s=round(lower_s, 2),
                   compile_s=round(compile_s, 2))
      results.append(entry)
      print(f"{path} mesh={tuple(entry['mesh'])} batch={entry['global_batch']}"
            f": peak {gib(mem['peak']):.2f} GiB/device, compile "
            f"{compile_s:.1f} s", flush=True)
  report = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "jax": jax.__version__, "backend": jax.default_backend(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "cpu_count": os.cpu_count(),
      "note": "memory_per_device: compiled.memory_analysis() of the SPMD "
              "program (one device); peak = argument + output - alias + "
              "temp. CPU backend: temp is indicative for TPU/GPU.",
      "results": results}
  if args.out and args.append and os.path.exists(args.out):
    with open(args.out) as f:
      old = json.load(f)
    key = lambda r: (r["config"], tuple(r["overrides"]), tuple(r["mesh"]),  # noqa: E731
                     r["global_batch"], r["devices"],
                     r.get("honour_remat", False))
    new_keys = {key(r) for r in results}
    report["results"] = [r for r in old.get("results", [])
                         if key(r) not in new_keys] + results
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
  print()
  print("| config | mesh (data,fsdp,model) | batch (per device) | params | "
        "state/device | argument | output | alias | temp | peak | compile |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in results:
    m = r["memory_per_device"]
    print(f"| {os.path.basename(r['config'])} ({r['stage']}) | "
          f"{tuple(r['mesh'])} | {r['global_batch']} "
          f"({r['per_device_batch']:g}) | {r['param_count'] / 1e6:.1f}M | "
          f"{gib(r['state_bytes_per_device']):.3f} GiB | "
          f"{gib(m['argument']):.3f} GiB | {gib(m['output']):.3f} GiB | "
          f"{gib(m['alias']):.3f} GiB | {gib(m['temp']):.3f} GiB | "
          f"{gib(m['peak']):.3f} GiB | {r['compile_s']:.0f} s |")
  if args.out:
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main(sys.argv[1:])
