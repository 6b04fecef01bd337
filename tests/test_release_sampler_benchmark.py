"""benchmarks/release_sampler.py: our float32 sampler against the release's.

The release's code is not here (no network in the tests): a stand-in
"release" built from this package's release-compatible pieces (its
`parallel_decode.decode` has the release's signature and tokens, its
`Transformer` the release's fields) at the tiny shape checks the plumbing
(both programs built, run, compared and timed, the JSON written), and a
stand-in that decodes differently must be reported as not equal. Checkouts
that are missing or broken stop with one `error:` line.
"""
import json
import pathlib
import sys
import types

import jax.numpy as jnp
import ml_collections
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       "benchmarks"))
import release_sampler  # pylint: disable=wrong-import-position
import sampler as sampler_bench  # pylint: disable=wrong-import-position
from maskgit_jax.libml import parallel_decode  # pylint: disable=wrong-import-position
from maskgit_jax.nets import maskgit_transformer  # pylint: disable=wrong-import-position


def _stand_in(decode=None):
  """A release stand-in at the tiny shape: (decode, transformer, tokenizer,
  config) modules as `import_release` returns them."""
  tokenizer, _, transformer, _, classes, size = sampler_bench.build_models(
      "tiny")
  latent = size // 2  # the tiny tokenizer: 16x16 images, 8x8 tokens

  def get_config():
    cf = ml_collections.ConfigDict()
    cf.image_size = size
    cf.num_class = classes
    cf.transformer = ml_collections.ConfigDict(dict(
        patch_size=size // latent, num_embeds=transformer.hidden_size,
        num_layers=transformer.num_hidden_layers,
        num_heads=transformer.num_attention_heads,
        intermediate_size=transformer.intermediate_size, dropout_rate=0.1,
        mask_token_id=-1))
    cf.vqvae = ml_collections.ConfigDict(dict(
        codebook_size=tokenizer.codebook_size))
    return cf

  def vqvae(config, dtype, train):
    del config, dtype, train
    return tokenizer
  return (types.SimpleNamespace(decode=decode or parallel_decode.decode),
          types.SimpleNamespace(Transformer=maskgit_transformer.Transformer),
          types.SimpleNamespace(VQVAE=vqvae),
          types.SimpleNamespace(get_config=get_config))


def _run(monkeypatch, tmp_path, decode=None, repeats=2):
  """release_sampler.main() against the stand-in at the tiny shape, batch
  2: (exit code, the batch's result row)."""
  monkeypatch.setattr(release_sampler, "import_release",
                      lambda path: _stand_in(decode))
  out = tmp_path / "release_sampler.json"
  monkeypatch.setattr(sys, "argv", [
      "release_sampler.py", "--release_path=unused", "--shape=tiny",
      "--batches=2", "--num_iter=3", f"--repeats={repeats}", f"--out={out}"])
  code = release_sampler.main()
  return code, json.loads(out.read_text())["results"][0]


def test_the_same_decoder_gives_the_same_tokens_and_a_ratio(
    monkeypatch, tmp_path):
  code, row = _run(monkeypatch, tmp_path)
  assert code == 0
  assert row["tokens_equal"] is True
  assert row["max_abs_image_difference"] < 1e-5
  assert row["release_s"] > 0 and row["ours_s"] > 0
  assert row["ours_over_release"] == pytest.approx(
      row["ours_s"] / row["release_s"])
  assert len(row["times"]["ours"]) == len(row["times"]["release"]) == 2
  assert row["target"] == 1.0


def test_a_release_that_decodes_otherwise_is_reported(monkeypatch, tmp_path):
  def other_decode(inputs, rng, tokens_to_logits, **kwargs):
    seqs = parallel_decode.decode(inputs, rng, tokens_to_logits, **kwargs)
    return jnp.where(seqs == 0, 1, 0).astype(seqs.dtype).at[:, :, 0].set(
        seqs[:, :, 0])
  code, row = _run(monkeypatch, tmp_path, other_decode, repeats=1)
  assert code == 1
  assert row["tokens_equal"] is False and row["target_met"] is False


@pytest.mark.parametrize("files, message", [
    (None, "error: no release checkout"),
    ({}, "holds no maskgit/libml/parallel_decode.py"),
    ({"maskgit/__init__.py": "",
      "maskgit/libml/__init__.py": "",
      "maskgit/libml/parallel_decode.py": "import no_such_module_here\n"},
     "do not import: ModuleNotFoundError"),
])
def test_a_missing_or_broken_checkout_is_one_error_line(
    monkeypatch, tmp_path, files, message):
  # import_release puts the checkout on sys.path and imports `maskgit`:
  # both are undone after the test.
  monkeypatch.setattr(sys, "path", list(sys.path))
  for name in [m for m in sys.modules if m.split(".")[0] == "maskgit"]:
    monkeypatch.delitem(sys.modules, name)
  path = None
  if files is not None:
    path = tmp_path / "checkout"
    path.mkdir()
    for name, text in files.items():
      (path / name).parent.mkdir(parents=True, exist_ok=True)
      (path / name).write_text(text)
  with pytest.raises(SystemExit) as e:
    release_sampler.import_release(path and str(path))
  for name in [m for m in sys.modules if m.split(".")[0] == "maskgit"]:
    del sys.modules[name]
  text = str(e.value)
  assert text.startswith("error: ") and "\n" not in text and message in text


def test_make_bench_rows_read_the_ratio_and_fail_unequal_tokens():
  import bench_rows  # pylint: disable=import-outside-toplevel
  result = dict(batch=2, num_iter=8, repeats=3, ours_s=9.0, release_s=10.0,
                ours_over_release=0.9, tokens_equal=True,
                max_abs_image_difference=0.0)
  unequal = dict(result, batch=8, tokens_equal=False)
  rows = [r for r in bench_rows.build_rows(
      {"release_sampler": {"results": [result, unequal]}}, False)
          if r["source"] == "release_sampler"]
  assert [r["metric"] for r in rows] == [
      "float32 sampler / the release's, ImageNet-256, batch 2",
      "float32 sampler / the release's, ImageNet-256, batch 8"]
  assert rows[0]["value"] == 0.9 and rows[0]["passed"] is True
  assert "tokens equal" in rows[0]["how"]
  assert rows[1]["passed"] is False and "NOT equal" in rows[1]["how"]
