"""Quality read against the real-data floor: the ratios a report is judged by.

FID between two finite sets of real images is not zero: at N=1000 it is ~20
on Fashion-MNIST. A model's FID means something only beside that floor,
measured at the same N. `summary(report, targets)` turns an evaluation
report (maskgit_jax.evaluation.evaluate_lib) into rows

  (name, measured, reference, ratio, target, met)

for the tokenizer's reconstruction FID and codebook usage, and the
generator's FID and k-NN class accuracy (generated against real eval
images). `targets` (a run config's `quality_targets`, optional) holds
`rfid_over_floor` and `fid_over_floor` (maxima), `class_accuracy_over_real`
and `codebook_usage` (minima, usage as a fraction).
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

from maskgit_jax.common import checks

Row = Tuple[str, Optional[float], Optional[float], Optional[float],
            Optional[str], Optional[bool]]

TARGET_KEYS = ("rfid_over_floor", "fid_over_floor", "class_accuracy_over_real",
               "codebook_usage")


def check_targets(targets: Optional[Mapping[str, Any]]) -> Dict[str, float]:
  """The known, numeric targets of a config's `quality_targets`."""
  out = {}
  for key, value in dict(targets or {}).items():
    if key not in TARGET_KEYS:
      raise ValueError(f"quality_targets.{key}: unknown target; expected one "
                       f"of {', '.join(TARGET_KEYS)}")
    checks.check_number(f"quality_targets.{key}", value, 0, open_low=True,
                        finite=False)
    out[key] = float(value)
  return out


def _ratio(a, b):
  if a is None or b is None or b == 0:
    return None
  return float(a) / float(b)


def _row(name, measured, reference, ratio, targets, key, at_most):
  target = targets.get(key)
  if target is None:
    return (name, measured, reference, ratio, None, None)
  value = ratio if key != "codebook_usage" else measured
  met = None if value is None else (value <= target if at_most
                                    else value >= target)
  return (name, measured, reference, ratio,
          f"{'<=' if at_most else '>='} {target:g}", met)


def summary(report: Mapping[str, Any],
            targets: Optional[Mapping[str, Any]] = None) -> List[Row]:
  """The rows of a report (see the module docstring); stages not in the
  report are left out."""
  targets = check_targets(targets)
  rows: List[Row] = []
  tok = report.get("tokenizer")
  if tok:
    rows.append(_row("reconstruction FID / floor", tok.get("rfid"),
                     tok.get("rfid_floor"),
                     _ratio(tok.get("rfid"), tok.get("rfid_floor")),
                     targets, "rfid_over_floor", True))
    usage = tok.get("codebook_usage_percent")
    usage = None if usage is None else usage / 100.
    rows.append(_row("codebook usage", usage, None, None, targets,
                     "codebook_usage", False))
  tr = report.get("transformer") or report.get("samples")
  if tr:
    rows.append(_row("sample FID / floor", tr.get("fid"), tr.get("fid_floor"),
                     _ratio(tr.get("fid"), tr.get("fid_floor")), targets,
                     "fid_over_floor", True))
    cf = tr.get("class_fidelity") or {}
    gen, real = cf.get("generated_accuracy"), cf.get("real_eval_accuracy")
    rows.append(_row("k-NN class accuracy / real", gen, real,
                     _ratio(gen, real), targets, "class_accuracy_over_real",
                     False))
  return rows


def format_rows(rows: List[Row]) -> List[str]:
  """Table lines for `summary`'s rows."""
  fmt = lambda v, f=".3g": "n/a" if v is None else format(v, f)  # noqa: E731
  lines = [f"  {'measure':<28} {'measured':>9} {'reference':>9} "
           f"{'ratio':>7}  {'target':<8} met"]
  for name, measured, reference, ratio, target, met in rows:
    lines.append(
        f"  {name:<28} {fmt(measured):>9} {fmt(reference):>9} "
        f"{fmt(ratio, '.2f'):>7}  {target or '':<8} "
        f"{'' if met is None else ('yes' if met else 'NO')}")
  return lines
