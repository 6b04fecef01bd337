"""Writing a benchmark's JSON report (no JAX: the numpy-only scripts use it)."""
import json
import os


def write_report(path: str, report: dict) -> None:
  """Writes `report` as indented JSON to `path` (its folder made if need
  be) and prints where."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {path}")
