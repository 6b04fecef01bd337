"""Stage-1 evaluation: the tokenizer's reconstructions of real images.

On the first `num_real` eval images of the fixed order (`real_images`):
  psnr, ssim: means over the images, reconstructions clipped to [0, 1]
    (ssim is None for images smaller than its 11x11 window);
  rfid: FID of the reconstructions' features against the same real images',
    beside the real-vs-real floor at the same N;
  codebook usage (% of the codes used at least once) and perplexity.
"""

from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from maskgit_jax import data as data_lib
from maskgit_jax.evaluation import real_images
from maskgit_jax.metrics import codebook
from maskgit_jax.metrics import reconstruction
from maskgit_jax.store import loader

SSIM_WINDOW = 11


def _pad_to(batch: np.ndarray, size: int) -> np.ndarray:
  if batch.shape[0] == size:
    return batch
  pad = [(0, size - batch.shape[0])] + [(0, 0)] * (batch.ndim - 1)
  return np.pad(batch, pad)


def _reconstruction_step(tokenizer, with_ssim: bool):
  """jit: (variables, images) -> (ids, reconstructions, psnr, ssim)."""
  def step(variables, images):
    ids = tokenizer.apply(variables, images,
                          method=lambda m, x: m.encode_to_indices(x))
    recon = tokenizer.apply(variables, ids,
                            method=lambda m, i: m.decode_from_indices(i))
    recon = jnp.clip(recon, 0.0, 1.0)
    psnr = reconstruction.psnr(images, recon)
    ssim = (reconstruction.ssim(images, recon) if with_ssim
            else jnp.full_like(psnr, jnp.nan))
    return ids, recon, psnr, ssim
  return jax.jit(step)


def evaluate_tokenizer(loaded: loader.LoadedModels, dataset: data_lib.Dataset,
                       ref: real_images.FidReference, feature_fn: real_images.FeatureFn, *,
                       batch_size: int, progress: bool) -> Dict[str, Any]:
  """Stage-1 metrics on the reference images (see the module docstring)."""
  n = ref.num_reference
  size = dataset.image_shape[0]
  with_ssim = min(dataset.image_shape[:2]) >= SSIM_WINDOW
  step = _reconstruction_step(loaded.tokenizer, with_ssim)
  k = loaded.tokenizer.codebook_size
  counts = np.zeros(k, np.int64)
  psnrs, ssims, feats = [], [], []
  bar = tqdm.tqdm(total=n, desc="reconstructions", unit="img",
                  disable=not progress)
  for images, _, _ in real_images.record_batches(dataset, real_images.subset_order(
      dataset.num_examples), 0, n, batch_size):
    b = images.shape[0]
    ids, recon, psnr, ssim = jax.device_get(step(
        loaded.tokenizer_variables, _pad_to(images, batch_size)))
    counts += codebook.code_histogram(np.asarray(ids[:b]), k)
    psnrs.append(np.asarray(psnr[:b], np.float64))
    ssims.append(np.asarray(ssim[:b], np.float64))
    feats.append(np.asarray(feature_fn(np.asarray(recon[:b])), np.float32))
    bar.update(b)
  bar.close()
  feats = np.concatenate(feats)
  if feats.shape[0] != n:
    raise ValueError(f"read {feats.shape[0]} eval images for the "
                     f"reconstructions but the reference has {n}")
  floor, floor_note = ref.floor(n)
  usage = codebook.usage_from_histogram(counts)
  return {
      "num_images": int(n),
      "image_size": int(size),
      "psnr": float(np.mean(np.concatenate(psnrs))),
      "ssim": float(np.mean(np.concatenate(ssims))) if with_ssim else None,
      "rfid": ref.fid(feats, "rFID"),
      "rfid_floor": floor,
      "rfid_floor_images": int(n),
      "rfid_floor_note": floor_note,
      "codebook_size": int(k),
      "codebook_used": int(np.count_nonzero(counts)),
      "codebook_usage_percent": 100.0 * usage,
      "codebook_perplexity": codebook.perplexity_from_histogram(counts),
  }


