"""The quality summary: FIDs read against their floor, accuracy against real."""
import pytest

from maskgit_jax.metrics import quality

REPORT = {
    "tokenizer": {"rfid": 30.0, "rfid_floor": 20.0,
                  "codebook_usage_percent": 95.0},
    "transformer": {"fid": 50.0, "fid_floor": 25.0, "class_fidelity": {
        "generated_accuracy": 0.8, "real_eval_accuracy": 0.78}},
}


def test_ratios_and_targets():
  targets = dict(rfid_over_floor=1.2, fid_over_floor=2.0,
                 class_accuracy_over_real=1.0, codebook_usage=0.9)
  rows = {r[0]: r for r in quality.summary(REPORT, targets)}
  name, measured, ref, ratio, target, met = rows["reconstruction FID / floor"]
  assert (measured, ref, ratio, target, met) == (30.0, 20.0, 1.5, "<= 1.2",
                                                 False)
  assert rows["sample FID / floor"][3:] == (2.0, "<= 2", True)
  acc = rows["k-NN class accuracy / real"]
  assert acc[3] == pytest.approx(0.8 / 0.78) and acc[5] is True
  assert rows["codebook usage"][1] == 0.95 and rows["codebook usage"][5]
  text = "\n".join(quality.format_rows(list(rows.values())))
  assert "NO" in text and "1.50" in text


def test_no_targets_and_missing_stages():
  rows = quality.summary({"tokenizer": REPORT["tokenizer"]})
  assert [r[0] for r in rows] == ["reconstruction FID / floor",
                                  "codebook usage"]
  assert all(r[4] is None and r[5] is None for r in rows)


@pytest.mark.parametrize("targets, match", [
    ({"fid": 1.5}, "quality_targets.fid: unknown target"),
    ({"fid_over_floor": -1}, r"quality_targets.fid_over_floor=-1 must be"),
    ({"codebook_usage": float("nan")}, "codebook_usage=nan must be"),
])
def test_bad_targets_are_named(targets, match):
  with pytest.raises(ValueError, match=match):
    quality.check_targets(targets)
