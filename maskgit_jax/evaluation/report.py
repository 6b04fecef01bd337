"""The evaluation report: JSON (written atomically) and a readable table."""

import datetime
import json
import os
from typing import Any, Dict, Optional

import numpy as np

from maskgit_jax.common import files
from maskgit_jax.metrics import quality

REPORT_FORMAT = "maskgit_jax.evaluation/1"


def jsonable(value):
  """Numpy scalars -> Python, non-finite floats -> None, recursively."""
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if np.isfinite(value) else None
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  return value


def default_report_path(workdir: str, name: Optional[str] = None) -> str:
  """WORKDIR/eval_<name>.json; name defaults to the UTC time."""
  if name is None:
    name = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y%m%d-%H%M%S")
  return os.path.join(workdir, f"eval_{name}.json")


def relative(path: Optional[str], workdir: str) -> Optional[str]:
  """`path` relative to the workdir (what reports record: no machine's
  absolute paths); None stays None."""
  if path is None:
    return None
  return os.path.relpath(os.path.abspath(path), os.path.abspath(workdir))


def report_file(report: Dict[str, Any]) -> str:
  """Where a report was written (its "path" is relative to its workdir)."""
  return os.path.normpath(os.path.join(report["workdir"], report["path"]))


def check_output(path: Optional[str]) -> None:
  """A report path that may be written: new, or an earlier report (replaced
  whole). A folder, or any other file (a run's config.json, a typo for a
  source file), is one ValueError before anything is computed."""
  if path is None:
    return
  if os.path.isdir(path):
    raise ValueError(f"--output={path} is a folder; give a .json path")
  files.check_output_location(path)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      existing = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError):
    existing = None
  if not (isinstance(existing, dict) and
          str(existing.get("format", "")).startswith(
              REPORT_FORMAT.split("/")[0] + "/")):
    raise ValueError(f"--output={path} exists and is not an evaluation "
                     "report: it would be replaced; give a new path (or an "
                     "earlier report's).")


def write_report(report: Dict[str, Any], path: str) -> str:
  """Writes the JSON atomically: an existing file is replaced only whole."""
  text = json.dumps(jsonable(report), indent=1, allow_nan=False)

  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text + "\n")
  return files.atomic_write(path, write)


def data_summary(dataset, train_dataset, class_names) -> Dict[str, Any]:
  cfg = dataset.config
  out = {"source": cfg.source, "name": cfg.name,
         "image_size": int(dataset.image_shape[0]),
         "channels": int(dataset.image_shape[2]),
         "eval_examples": int(dataset.num_examples),
         "num_classes": int(dataset.num_classes),
         "class_names": list(class_names)}
  if train_dataset is not None:
    out["train_examples"] = int(train_dataset.num_examples)
  return out


def _num(value, fmt: str = ".4g") -> str:
  return "n/a" if value is None else format(value, fmt)


def _floor_text(value, images, note) -> str:
  if value is None:
    return f"(real-vs-real floor: n/a, {note})"
  return (f"(real-vs-real floor {_num(value)}: {images} held-out real "
          "images)")


def _model_text(info: Dict[str, Any]) -> str:
  if info.get("source") == "workdir":
    return f"step {info['step']}"
  if info.get("source") == "file":
    return info["path"]
  return info.get("source", "?")


def _sample_lines(section: Dict[str, Any], max_classes: int):
  """The rows of generated images' metrics."""
  lines = [
      f"  FID                  {_num(section['fid'])}  " + _floor_text(
          section["fid_floor"], section["fid_floor_images"],
          section["fid_floor_note"]),
      f"  precision / recall   {_num(section['precision'], '.3f')} / "
      f"{_num(section['recall'], '.3f')}  (k={section['precision_recall_k']})",
      f"  density / coverage   {_num(section['density'], '.3f')} / "
      f"{_num(section['coverage'], '.3f')}",
  ]
  cf = section.get("class_fidelity")
  if not cf:
    return lines + ["  class fidelity       n/a (no class labels)"]
  lines.append(
      f"  class fidelity       {_num(cf['generated_accuracy'], '.3f')} "
      f"generated, {_num(cf['real_eval_accuracy'], '.3f')} real eval "
      f"(k-NN k={cf['k']}, {cf['classifier_train_images']} train images)")
  per_class = cf["per_class"]
  if len(per_class) <= max_classes:
    lines.append(f"    {'class':<24} {'generated':>10} {'real eval':>10}")
    for c, row in per_class.items():
      lines.append(f"    {(c + ' ' + row['name'])[:24]:<24} "
                   f"{_num(row['generated'], '.3f'):>10} "
                   f"{_num(row['real_eval'], '.3f'):>10}")
  return lines


# How the samples' classes were chosen (`generation.SAMPLE_LABELS`).
_LABELS_TEXT = {"reference": "as in the reference", "balanced": "evenly"}


def format_report(report: Dict[str, Any], max_classes: int = 20) -> str:
  """A readable table of a report."""
  lines = [f"Evaluation of {report['workdir']}"]
  for stage, info in report["models"].items():
    lines.append(f"  {stage}: {_model_text(info)}")
  s = report["settings"]
  lines.append(f"  features: {s['feature_net']}")
  tok = report.get("tokenizer")
  if tok:
    lines += [
        f"Stage 1, tokenizer ({tok['num_images']} eval images)",
        f"  PSNR                 {_num(tok['psnr'], '.2f')} dB",
        f"  SSIM                 {_num(tok['ssim'], '.4f')}",
        f"  rFID                 {_num(tok['rfid'])}  " + _floor_text(
            tok["rfid_floor"], tok["rfid_floor_images"],
            tok["rfid_floor_note"]),
        f"  codebook usage       {tok['codebook_usage_percent']:.1f} % "
        f"({tok['codebook_used']} of {tok['codebook_size']} codes)",
        f"  codebook perplexity  {_num(tok['codebook_perplexity'], '.1f')}",
    ]
  tr = report.get("transformer")
  if tr:
    lines.append(
        f"Stage 2, transformer ({tr['num_samples']} samples, "
        f"{tr['samples_per_class_min']}-{tr['samples_per_class_max']} per "
        f"class, classes {_LABELS_TEXT.get(tr.get('sample_labels'), 'evenly')}"
        f", {tr['decode_options']['num_iter']} iterations)")
    lines += _sample_lines(tr, max_classes)
  given = report.get("samples")
  if given:
    per_class = (f", {given['samples_per_class_min']}-"
                 f"{given['samples_per_class_max']} per class"
                 if given.get("samples_per_class_min") is not None
                 else ", no labels")
    lines.append(f"Samples from {given['source']} ({given['num_samples']} "
                 f"images{per_class})")
    lines += _sample_lines(given, max_classes)
  rows = (report.get("quality") or {}).get("rows")
  if rows:
    lines.append("Ratios to the floors and to real accuracy, with the targets")
    lines += quality.format_rows([tuple(r.values()) for r in rows])
  for note in report.get("notes", []):
    lines.append(f"note: {note}")
  lines.append(f"({report['timings_s']['total_s']:.0f} s; report: "
               f"{report_file(report)})")
  return "\n".join(lines)
