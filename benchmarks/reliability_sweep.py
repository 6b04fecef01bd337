"""The reliability suite's sweep part (benchmarks/reliability.py): every
leaf key of the demo's config and of the folder config (on the tests' small
colour folder) set to each of the fuzz's bad values for its type, through every check a training run makes before it writes
config.json (in this process; nothing trains).

Each override must be refused by the flag parser or with one ValueError /
FileNotFoundError line (what `python -m maskgit_jax.train` prints as its
one `error:` line), or accepted; any other exception is a failure. The
accepted ones are listed: most are valid if odd (a seed of 0, a period of
10^15 steps), and the list is what to read for values that should not be.
"""
from absl import flags
from ml_collections import config_flags

from reliability_fuzz import BAD_VALUES, leaf_keys
from reliability_runs import ROOT


# The configs swept, with the flags they need: the demo's, and the folder
# config on the tests' small colour folder (its derived fields resolved).
CONFIGS = {"fashion_mnist": (),
           "folder": ("--config.data.path=" + str(ROOT / "tests" / "data" /
                                                 "folder_colour"),)}


def parse(name, *overrides):
  """Config `name` with `--config.KEY=VALUE` overrides, parsed as the
  command line does."""
  argv = ["prog", f"--config={ROOT / 'configs' / (name + '.py')}",
          *CONFIGS[name], *overrides]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      "config", lock_config=True, flag_values=values, sys_argv=argv)
  values(argv)
  return holder.value


def sweep(workdir, names=tuple(CONFIGS)):
  """{"accepted": [...], "failures": [...], "refused": n, "overrides": n}
  over the configs `names`, each override through `run.prepare` (what a
  run checks before it writes config.json); entries read "CONFIG:
  KEY=VALUE"."""
  from maskgit_jax.train_lib import run  # pylint: disable=import-outside-toplevel
  accepted, failures, refused = [], [], 0
  for name in names:
    leaves = leaf_keys(name)
    for key in sorted(k for k in leaves if k != "class_names"):
      kind = type(leaves[key])
      for value in BAD_VALUES.get(kind, BAD_VALUES[object]):
        override = f"--config.{key}={value}"
        case = f"{name}: {key}={value}"
        try:
          config = parse(name, override)
        except flags.Error:
          refused += 1
          continue
        try:
          run.prepare(config, str(workdir / name), log=lambda _: None)
        except (ValueError, FileNotFoundError) as e:
          if "\n" in str(e).strip():
            failures.append(f"{case}: a message of several lines")
          refused += 1
          continue
        except Exception as e:  # pylint: disable=broad-except
          failures.append(f"{case}: {type(e).__name__}: {str(e)[:120]}")
          continue
        accepted.append(case)
  return {"overrides": refused + len(accepted) + len(failures),
          "refused": refused, "accepted": accepted, "failures": failures}


def part_sweep(runner, scratch, args, rng):
  del runner, args, rng
  workdir = scratch / "sweep"
  workdir.mkdir(parents=True, exist_ok=True)
  result = sweep(workdir)
  result["passed"] = not result["failures"]
  return result
