"""Evaluators: evaluation inside the training loop, as hooks.

`config.evaluation` names the evaluators and their schedule:

  evaluation.enabled = True
  evaluation.evaluators.reconstruction.every = "2 epochs"  # stage 1
  evaluation.evaluators.generation.every = 5000            # stage 2

Each named evaluator runs at the end of its stage and, when `every` is
non-zero, every `every` (a duration: steps, "N epochs", "N examples",
converted to steps by `train_lib.run.resolve_durations`, the one place where
durations become steps). It evaluates the stage's current parameters (EMA
when kept) with `evaluate_lib.evaluate` (the same code as
`python -m maskgit_jax.evaluate`), writes WORKDIR/eval_<stage>_<step>.json
and logs its table, and its headline figures go to metrics.jsonl and
TensorBoard as `eval/<name>`. The shared settings (num_samples, num_real,
num_train, batch_size, seed, sample_labels, cache_dir) are keys of `config.evaluation`.

A report already written for a step is not computed again (a resumed run),
unless it was produced by other settings or other weights: the report keeps
a key of what produced it (`evaluator_key`), and a mismatch re-evaluates.

    run.train_and_evaluate(config, workdir, hooks=evaluators.make_hooks)
"""

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional

import ml_collections

from maskgit_jax.common import checks
from maskgit_jax.evaluation import report as report_lib
from maskgit_jax.store import loader
from maskgit_jax.train_lib import trainer

# Evaluator name -> the stage whose parameters it evaluates.
EVALUATORS = {"reconstruction": "tokenizer", "generation": "transformer"}
SETTINGS = ("num_samples", "num_real", "num_train", "batch_size", "seed",
            "sample_labels", "cache_dir")


def settings(config: ml_collections.ConfigDict
             ) -> Optional[ml_collections.ConfigDict]:
  """`config.evaluation` when it is enabled, else None."""
  section = config.get("evaluation")
  if section is None or not section.get("enabled", False):
    return None
  names = section.get("evaluators", None)
  for name in (names or {}):
    if name not in EVALUATORS:
      raise ValueError(f"evaluation.evaluators.{name}: unknown evaluator; "
                       f"expected some of {tuple(EVALUATORS)}")
  _check_settings(section)
  return section


def _check_settings(section: ml_collections.ConfigDict) -> None:
  """The shared settings, each one line naming `evaluation.KEY`, when the
  hooks are made (before anything trains), not when the first evaluation
  runs at the end of a stage."""
  # The evaluation stack (the FID network, scipy, the samplers) is imported
  # only by a run that evaluates: importing `maskgit_jax.train` takes about
  # half a second less without it (-X importtime: 2.60 s against 3.07 s).
  from maskgit_jax.evaluation import generation  # pylint: disable=import-outside-toplevel
  low = generation.PR_K + 1  # precision / recall's k nearest neighbours
  for key in ("num_samples", "num_real"):
    checks.check_int(f"evaluation.{key}", section.get(key, low), low=low,
                     note=f"precision / recall use k={generation.PR_K}")
  if section.get("num_train"):  # 0 or None: num_real
    checks.check_int("evaluation.num_train", section.num_train,
                     low=generation.CLASSIFIER_K,
                     note=f"the k-NN classifier's k={generation.CLASSIFIER_K};"
                     " 0: num_real")
  checks.check_int("evaluation.batch_size", section.get("batch_size", 1),
                   low=1)
  checks.check_int("evaluation.seed", section.get("seed", 0))
  labels = section.get("sample_labels", "reference") or "reference"
  if labels not in generation.SAMPLE_LABELS:
    checks.refuse("evaluation.sample_labels", labels, "one of " + ", ".join(
        map(repr, generation.SAMPLE_LABELS)))


def evaluator_names(section: ml_collections.ConfigDict, stage: str):
  """The evaluators of `stage` that the section names (both by default)."""
  names = section.get("evaluators", None)
  names = tuple(names) if names else tuple(EVALUATORS)
  return [n for n in names if EVALUATORS[n] == stage]


def every(section: ml_collections.ConfigDict, name: str):
  """The raw `every` duration of evaluator `name` (0: at the end only)."""
  spec = (section.get("evaluators", None) or {}).get(name, None)
  return spec.get("every", 0) if spec else 0


def evaluator_key(config: ml_collections.ConfigDict, stage: str,
                  variables: Dict[str, Any], tokenizer_variables=None) -> str:
  """What produced a report: the evaluation settings, the sampling options,
  the data and the weights evaluated (a digest)."""
  from maskgit_jax.evaluation import real_images  # pylint: disable=import-outside-toplevel
  section = config.get("evaluation") or {}
  what = {
      "stage": stage,
      "settings": {k: section.get(k) for k in SETTINGS},
      "sampling": (config.sampling.to_dict()
                   if stage == "transformer" and config.get("sampling")
                   else None),
      "data": config.data.to_dict() if config.get("data") else None,
      "weights": real_images.tree_digest(variables)[:16],
      "tokenizer": (real_images.tree_digest(tokenizer_variables)[:16]
                    if tokenizer_variables is not None else None),
  }
  text = json.dumps(what, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(path: str, key: str) -> Optional[Dict[str, Any]]:
  """The report at `path` if it was produced by `key`, else None."""
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      report = json.load(f)
  except (OSError, ValueError):
    return None
  return report if report.get("evaluator_key") == key else None


def headline(report: Dict[str, Any], stage: str) -> Dict[str, float]:
  """The scalars an evaluation logs: FIDs with their floors and ratios,
  PSNR and codebook usage (stage 1), precision / recall and class accuracy
  (stage 2)."""
  out = {}
  section = report.get(stage) or {}
  if stage == "tokenizer":
    keys = ("rfid", "rfid_floor", "psnr", "ssim", "codebook_usage_percent")
  else:
    keys = ("fid", "fid_floor", "precision", "recall", "density", "coverage")
  for k in keys:
    if section.get(k) is not None:
      out[k] = float(section[k])
  fid_key = "rfid" if stage == "tokenizer" else "fid"
  if section.get(fid_key) and section.get(f"{fid_key}_floor"):
    out[f"{fid_key}_over_floor"] = section[fid_key] / section[f"{fid_key}_floor"]
  fidelity = section.get("class_fidelity") or {}
  for k in ("generated_accuracy", "real_eval_accuracy"):
    if fidelity.get(k) is not None:
      out[f"class_{k}"] = float(fidelity[k])
  return out


def _evaluate(config, workdir, stage, step, variables, tokenizer_variables,
              feature_extractor, inception_params, log):
  """(report, True) after evaluating, or (report, False) when that step's
  report was already produced by the same settings and weights."""
  from maskgit_jax.evaluation import evaluate_lib  # pylint: disable=import-outside-toplevel
  section = settings(config)
  key = evaluator_key(config, stage, variables, tokenizer_variables)
  path = report_lib.default_report_path(workdir, f"{stage}_{step}")
  cached = _cached(path, key)
  if cached is not None:
    return cached, False
  log(f"evaluating the {stage} at step {step}")
  given = ({"tokenizer_variables": variables} if stage == "tokenizer" else
           {"tokenizer_variables": tokenizer_variables,
            "transformer_variables": variables})
  report = evaluate_lib.evaluate(
      config, workdir, stages=(stage,),
      num_samples=section.get("num_samples",
                              evaluate_lib.DEFAULT_NUM_SAMPLES),
      num_real=section.get("num_real", evaluate_lib.DEFAULT_NUM_REAL),
      num_train=section.get("num_train", 0) or None,
      batch_size=section.get("batch_size", evaluate_lib.DEFAULT_BATCH_SIZE),
      seed=section.get("seed", 0),
      sample_labels=section.get("sample_labels", "reference") or "reference",
      cache_dir=section.get("cache_dir", "") or None, output=path,
      feature_extractor=feature_extractor, inception_params=inception_params,
      progress=False, extra={"evaluator_key": key, "step": int(step)},
      **given)
  log(report_lib.format_report(report))
  return report, True


def evaluate_after_stage(config: ml_collections.ConfigDict, workdir: str,
                         stage: str, *, tokenizer_variables=None,
                         transformer_variables=None,
                         step: Optional[int] = None,
                         feature_extractor=None, inception_params=None,
                         log: Callable[[str], Any] = print
                         ) -> Optional[Dict[str, Any]]:
  """Evaluates a stage of a run with `config.evaluation` (when enabled).

  Writes WORKDIR/eval_<stage>_<step>.json and logs the table. A report of
  that step produced by the same settings and weights is returned as it is
  (a resumed run does not evaluate the same step again); one produced by
  other settings or weights is replaced.

  Args:
    config: the training config.
    workdir: the run folder.
    stage: "tokenizer" (the reconstruction evaluator) or "transformer"
      (the generation evaluator).
    tokenizer_variables, transformer_variables: the weights (None: the
      workdir's newest checkpoints, via `store.loader`).
    step: the step in the report's name (default: the newest checkpoint's).
    feature_extractor, inception_params: see `real_images.make_feature_fn`.
    log: where the table goes.

  Returns:
    The report, or None when evaluation is disabled.
  """
  if settings(config) is None:
    return None
  if stage not in EVALUATORS.values():
    raise ValueError(f"unknown stage {stage!r}; expected one of "
                     f"{tuple(EVALUATORS.values())}")
  loaded = loader.load_models(
      config, workdir, tokenizer_variables=tokenizer_variables,
      transformer_variables=transformer_variables,
      stages=loader.STAGES if stage == "transformer" else ("tokenizer",),
      required=loader.STAGES if stage == "transformer" else ("tokenizer",))
  if step is None:
    info = loaded.sources[stage]
    step = info.get("step") or 0
  report, _ = _evaluate(config, workdir, stage, step,
                        loaded.variables(stage), loaded.tokenizer_variables
                        if stage == "transformer" else None,
                        feature_extractor, inception_params, log)
  return report


def make_hooks(config: ml_collections.ConfigDict, workdir: str, stage: str,
               *, tokenizer_variables=None, log: Callable[[str], Any] = print,
               feature_extractor=None, inception_params=None
               ) -> List[trainer.Hook]:
  """The training loop's hooks for `stage` (see the module docstring).

  `every` is left as the config gives it; `run.train_and_evaluate` converts
  it to steps with the stage's other durations. A hook returns the headline
  scalars of a fresh evaluation (None for a report already made).
  """
  section = settings(config)
  if section is None:
    return []
  hooks = []
  for name in evaluator_names(section, stage):
    def fn(step, variables):
      report, fresh = _evaluate(config, workdir, stage, step, variables,
                                tokenizer_variables, feature_extractor,
                                inception_params, log)
      return headline(report, stage) if fresh else None
    hooks.append(trainer.Hook(name="eval", every=every(section, name), fn=fn))
  return hooks
