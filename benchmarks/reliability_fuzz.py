"""The reliability suite's fuzz part (benchmarks/reliability.py): wrong
config values and broken image folders, each one clean `error:` line."""
import hashlib
import os
import random
import re
import shutil
import sys

import numpy as np

from reliability_runs import ROOT, log


TINY = [
    "--config.tokenizer.preset=tiny", "--config.transformer.preset=tiny",
    "--config.image_size=8", "--config.tokenizer_training.num_steps=2",
    "--config.transformer_training.num_steps=2",
    "--config.tokenizer_training.batch_size=8",
    "--config.transformer_training.batch_size=8",
    "--config.tokenizer_training.image_every=0",
    "--config.transformer_training.image_every=0",
    "--config.sampling.samples_per_class=1", "--config.sampling.num_iter=2",
    "--config.sampling.grid_scale=1",
]


def leaf_keys(name="fashion_mnist"):
  """{dotted key: default} of every leaf of configs/NAME.py."""
  sys.path.insert(0, str(ROOT))
  from maskgit_jax import cli  # pylint: disable=import-outside-toplevel
  config = cli.load_config_file(str(ROOT / "configs" / f"{name}.py"))
  leaves = {}

  def walk(node, prefix):
    for key in node.keys():
      value = node[key]
      name = f"{prefix}{key}"
      if hasattr(value, "keys"):
        walk(value, name + ".")
      else:
        leaves[name] = value
  walk(config, "")
  return leaves


def case_key(seed, i, keys):
  """Case `i`'s key: the one of `keys` with the smallest hash of (seed, i,
  key) (rendezvous hashing). A key added to or removed from the config
  changes a case only where it wins or was the winner (about 1 case in
  len(keys)), so runs of one seed stay comparable across versions."""
  return min(keys, key=lambda k: hashlib.sha256(
      f"{seed}/{i}/{k}".encode()).digest())


def case_rng(seed, i, what):
  """Case `i`'s own random numbers (its value, its folder), from the seed,
  the case and its key: independent of the other cases."""
  return random.Random(f"{seed}/{i}/{what}")


# The wrong-typed and out-of-range values tried for a field, by the type of
# its default (the sweep part tries them all).
BAD_VALUES = {
    bool: ["maybe", "2", "yes please", "[]"],
    int: ["-7", "0", "-1", "abc", "2.5", "1e400", "[]", str(10**15)],
    float: ["-1.0", "nan", "inf", "-inf", "abc", "1e30", "()"],
    str: ["bogus", "", "no_such_name_123", "../../etc/passwd",
          "\u00e9\u00e8\u00ea", "-1"],
    tuple: ["(3,1,1)", "()", "(-1,-1,1)", "(0,1,1)", "('x',)", "(1,2)",
            "abc"],
    object: ["abc", "-1", "()"],
}


def _bad_value(value, rng):
  """A wrong-typed or out-of-range value for a field holding `value`."""
  kind = type(value) if type(value) in BAD_VALUES else object
  return rng.choice(BAD_VALUES[kind])


def _folder_case(root, kind, rng):
  """A data folder of random bytes (and variants)."""
  shutil.rmtree(root, ignore_errors=True)
  exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
  from PIL import Image  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel

  def png_bytes(value):
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()

  def truncated_jpeg():
    buf = io.BytesIO()
    noise = np.random.RandomState(rng.randint(0, 2**31)).randint(
        0, 256, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    data = buf.getvalue()
    return data[:rng.randint(len(data) // 3, 2 * len(data) // 3)]
  for c in ("a", "b"):
    os.makedirs(root / c)
    for i in range(rng.randint(5, 10)):
      name = root / c / f"{i}{rng.choice(exts)}"
      if kind == "random_bytes":
        data = os.urandom(rng.randint(0, 3000))
      elif kind == "truncated_jpegs":
        # Pass the header check, fail to decode when loaded.
        name = root / c / f"{i}.jpg"
        data = truncated_jpeg()
      elif kind == "empty_files":
        data = b""
      else:  # one class fine, the other random bytes
        data = os.urandom(rng.randint(10, 500))
        if c == "a":
          data = png_bytes(rng.randint(0, 255))
          name = root / c / f"{i}.png"
      name.write_bytes(data)
  return root


FOLDER_CONFIG = """
import importlib.util
spec = importlib.util.spec_from_file_location("fm", {config!r})
fm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fm)


def get_config():
  config = fm.get_config()
  config.data.source = "folder"
  config.data.path = {path!r}
  return config
"""


_ABSL_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d")


def _verdict(code, err, needles):
  """How the command ended; logged warnings (absl format) may precede the
  error line."""
  lines = [l for l in err.strip().splitlines() if l.strip()]
  if code == "timeout":
    return "hang (timeout)"
  if "Traceback" in err:
    return "traceback"
  if code == 0:
    return "accepted"
  errors = [l for l in lines if l.startswith("error: ")]
  if len(errors) != 1 or lines[-1] != errors[0]:
    return "no single final 'error:' line"
  if any(not _ABSL_LOG_LINE.match(l) for l in lines[:-1]):
    return "stray stderr lines"
  if " stopped: the loss is " in errors[0]:
    return "non-finite loss stop (names the step)"
  if not any(n and n in errors[0] for n in needles):
    return "does not name the key, value or file"
  return "clean error"


def part_fuzz(runner, scratch, args, rng):
  del rng  # each case draws from its own (case_rng)
  leaves = leaf_keys()
  keys = sorted(k for k in leaves if k not in ("class_names",))
  cases = []
  n = args.fuzz_cases
  folder_kinds = ["random_bytes", "truncated_jpegs", "empty_files",
                  "one_class_of_random_bytes"]
  n_folder = max(len(folder_kinds), n // 6)
  for i in range(n):
    workdir = scratch / f"fuzz{i}"
    shutil.rmtree(workdir, ignore_errors=True)
    if i < n - n_folder:
      key = case_key(args.seed, i, keys)
      value = _bad_value(leaves[key], case_rng(args.seed, i, key))
      flags = ["--config=configs/fashion_mnist.py", *TINY,
               f"--config.{key}={value}"]
      needles = [key, key.split(".")[-1], value] if value else [key,
                                                                 key.split(".")[-1]]
      case = {"kind": "config", "key": key, "value": value,
              "default": repr(leaves[key])}
    else:
      kind = folder_kinds[(i - (n - n_folder)) % len(folder_kinds)]
      root = _folder_case(scratch / f"images{i}", kind,
                          case_rng(args.seed, i, kind))
      config = scratch / f"folder_config{i}.py"
      config.write_text(FOLDER_CONFIG.format(
          config=str(ROOT / "configs" / "fashion_mnist.py"), path=str(root)))
      flags = [f"--config={config}", *TINY]
      needles = [str(root)]
      case = {"kind": "folder", "folder": kind}
    code, out, err, seconds = runner.run(workdir, *flags,
                                         timeout=args.fuzz_timeout)
    case.update(exit_code=code, seconds=round(seconds, 1),
                stderr=err.strip().splitlines()[-3:],
                verdict=_verdict(code, err, needles))
    if case["verdict"] == "traceback":
      case["traceback_tail"] = err.strip().splitlines()[-1:]
    cases.append(case)
    log(f"fuzz {i + 1}/{n}: {case.get('key', case.get('folder'))}="
        f"{case.get('value', '')!s:.30} -> {case['verdict']} "
        f"({seconds:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)
  counts = {}
  for c in cases:
    counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
  fine = ("clean error", "accepted", "non-finite loss stop (names the step)")
  bad = [c for c in cases if c["verdict"] not in fine]
  return {"cases": cases, "verdicts": counts,
          "failures": len(bad), "passed": not bad,
          "accepted": [f"{c.get('key', c.get('folder'))}={c.get('value', '')}"
                       for c in cases if c["verdict"] == "accepted"]}
