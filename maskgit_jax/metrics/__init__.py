"""Evaluation metrics: FID, precision/recall, class fidelity, PSNR/SSIM, codes.

Modules (import them fully qualified, e.g.
`from maskgit_jax.metrics import fid`):
  features: InceptionFeatureExtractor (batched, jitted FID Inception-v3).
  fid: statistics, Frechet distance, real-vs-real FID floor.
  reference: cached reference statistics (.npz keyed by data set, split and
    image size).
  prdc: k-NN precision / recall (Kynkaanniemi et al. 2019), density and
    coverage (Naeem et al. 2020).
  classifier: k-NN classifier on Inception features, class fidelity.
  reconstruction: PSNR, SSIM.
  codebook: codebook usage and perplexity.
  distances: blocked pairwise Euclidean distances and k-NN queries.
"""
