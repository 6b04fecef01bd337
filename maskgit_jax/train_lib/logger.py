"""Scalars to the console, a JSONL file and TensorBoard; image grids to PNG.

No TensorFlow: TensorBoard event files are written with tensorboardX. Only
JAX process 0 writes anything.
"""

import json
import os
import sys
import time
from typing import Dict, Optional

import jax
import numpy as np

from maskgit_jax.common import grids


class Logger:
  """Writes `workdir/metrics.jsonl`, `workdir/tensorboard/` and PNG grids.

  Each record carries the stage name, so both stages share one file.
  """

  def __init__(self, workdir: str, stage: str, total_steps: int,
               tensorboard: bool = True, stream=None):
    self.workdir = workdir
    self.stage = stage
    self.total_steps = total_steps
    self.active = jax.process_index() == 0
    self.stream = stream or sys.stdout
    self._tb = None
    self._start_time = None
    self._start_step = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      if tensorboard:
        try:
          from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
          self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", stage))
        except ImportError:
          self.note("tensorboardX is not installed: no TensorBoard events.")

  def note(self, message: str) -> None:
    """A line on the console (process 0)."""
    if self.active:
      print(f"[{self.stage}] {message}", file=self.stream, flush=True)

  def start(self, step: int) -> None:
    self._start_time, self._start_step = time.time(), step

  def scalars(self, step: int, values: Dict[str, float]) -> Dict[str, float]:
    """Logs scalars; adds steps/s and prints a progress line with ETA."""
    values = {k: float(v) for k, v in values.items()}
    if self._start_time is not None and step > self._start_step:
      elapsed = time.time() - self._start_time
      rate = (step - self._start_step) / max(elapsed, 1e-9)
      values["steps_per_sec"] = rate
      eta = (self.total_steps - step) / max(rate, 1e-9)
    else:
      eta = None
    if not self.active:
      return values
    record = {"stage": self.stage, "step": step, "time": time.time(), **values}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, v, step)
    shown = " ".join(f"{k}={v:.4g}" for k, v in values.items()
                     if k in ("loss", "steps_per_sec") or k.endswith("_loss")
                     or k in ("codebook_usage", "psnr", "accuracy"))
    eta_text = f" eta {_fmt_seconds(eta)}" if eta is not None else ""
    width = len(str(self.total_steps))
    print(f"[{self.stage}] step {step:>{width}}/{self.total_steps} {shown}"
          f"{eta_text}", file=self.stream, flush=True)
    return values

  def images(self, step: int, name: str, grid: np.ndarray,
             row_labels=None) -> Optional[str]:
    """Writes `[rows, cols, H, W, C]` as `workdir/images/{stage}_{name}_{step}.png`."""
    if not self.active:
      return None
    path = os.path.join(self.workdir, "images",
                        f"{self.stage}_{name}_{step:08d}.png")
    grids.save_grid(grid, path, row_labels=row_labels)
    if self._tb is not None:
      image = grids.grid(grid)
      if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
      self._tb.add_image(f"{name}", np.clip(image, 0, 1), step,
                         dataformats="HWC")
    return path

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def _fmt_seconds(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
