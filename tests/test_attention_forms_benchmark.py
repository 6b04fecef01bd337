"""benchmarks/attention_forms.py: the sampler's attention forms, timed.

Run on the "tiny" transformer: every form gives the batched form's values
(up to float32 rounding), the forward with the library's form gives the
previous form's logits, and a form that computes something else is
refused, not timed.
"""
import json
import pathlib
import sys

import jax.numpy as jnp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       "benchmarks"))
import attention_forms  # pylint: disable=wrong-import-position


def test_tiny_run_writes_every_form_at_odd_and_even_batch(tmp_path):
  out = tmp_path / "forms.json"
  attention_forms.main(["--tiny", "--batches=2,3", "--rounds=1",
                        f"--out={out}"])
  report = json.loads(out.read_text())
  assert report["preset"] == "tiny"
  assert [row["batch"] for row in report["results"]] == [2, 3]
  for row in report["results"]:
    assert set(row["layer"]["seconds"]) == {"per_head", "per_example",
                                            "batched"}
    assert all(t > 0 for t in row["layer"]["seconds"].values())
    assert row["forward"]["logits_close"] is True
    assert (row["forward"]["max_logit_difference"] <=
            attention_forms.FORWARD_RTOL)
    assert all(0 <= d <= attention_forms.RTOL
               for d in row["layer"]["max_difference"].values())
    assert row["forward_speedup"] > 0


def test_a_form_with_other_values_is_refused(monkeypatch):
  def wrong(query, key, value, precision=None):
    del key, precision
    return (query.astype(jnp.float32) + value.astype(jnp.float32))
  monkeypatch.setitem(attention_forms.FORMS, "per_head", wrong)
  with pytest.raises(AssertionError, match="per_head differs"):
    attention_forms.bench_layer(2, 5, 2, 4, rounds=1)


def test_a_form_that_rounds_differently_is_timed(monkeypatch):
  """A form equal to float32 rounding (as the per-head products are on an
  AMX Xeon) is accepted and its difference reported."""
  batched = attention_forms.FORMS["batched"]

  def rounded(query, key, value, precision=None):
    out = batched(query, key, value, precision=precision)
    return out * jnp.float32(1 + 2 ** -22)  # a couple of float32 ulps
  monkeypatch.setitem(attention_forms.FORMS, "per_head", rounded)
  result = attention_forms.bench_layer(2, 5, 2, 4, rounds=1)
  difference = result["max_difference"]["per_head"]
  assert 0 < difference <= attention_forms.RTOL
  assert result["max_difference"]["batched"] == 0
