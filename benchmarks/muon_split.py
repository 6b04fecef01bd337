r"""Muon's Newton-Schulz split between devices against optax's, in one run.

  python benchmarks/muon_split.py [--config=configs/fashion_mnist.py] \
      [--stages=tokenizer,transformer] [--repeats=40] \
      [--out=benchmarks/results/muon_split.json]

Builds the config's stage-1 (and/or stage-2) train step twice with Muon
(`optimizer.name="muon"` for the stage's generator / transformer): once
with optax's `contrib.muon`, where every device of the data-parallel mesh
orthogonalises every matrix, and once with `train_lib/muon.py`, where each
matrix is orthogonalised on one device and the results gathered. Both run
data parallel over the config's CPU devices (the embedded default: one per
core), as the trainer runs them, timed interleaved round by round
(`timing.interleaved_times`); the figure is the median of the per-round
ratios of step times (split / optax).
"""
import json
import pathlib
import sys

import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import timing  # noqa: E402
import train_step  # noqa: E402

from maskgit_jax.train_lib import muon  # noqa: E402


def _optax_muon(learning_rate, *, dims_fn, weight_decay, eps, adam_b1, adam_b2,
                consistent_rms):
  return optax.contrib.muon(
      learning_rate, weight_decay=weight_decay, eps=eps, adam_b1=adam_b1,
      adam_b2=adam_b2, consistent_rms=consistent_rms,
      muon_weight_dimension_numbers=dims_fn)


def main():
  parser = train_step.build_parser(__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=40)
  parser.add_argument("--out", default="benchmarks/results/muon_split.json")
  args = parser.parse_args()
  config, sections = train_step.configure(args)
  sections["tokenizer"].g_optimizer.name = "muon"
  sections["transformer"].optimizer.name = "muon"
  results = {"config": args.config}
  ours = muon.muon
  for stage in args.stages.split(","):
    fns = {}
    for name, impl in (("optax", _optax_muon), ("split", ours)):
      muon.muon = impl  # what optim.make_optimizer calls
      try:
        task, batch, frozen = train_step.make_stage(config, stage,
                                                    sections[stage])
        fns[name] = train_step.compile_step(task, batch, frozen)[0]
      finally:
        muon.muon = ours
    times = timing.interleaved_times(fns, args.repeats)
    ratio = timing.median([s / o for s, o in zip(times["split"],
                                                  times["optax"])])
    results[stage] = {
        "batch_size": sections[stage].batch_size,
        "optax_step_ms": 1e3 * timing.median(times["optax"]),
        "split_step_ms": 1e3 * timing.median(times["split"]),
        "split_over_optax": ratio, "repeats": args.repeats}
    print(f"{stage}: optax {results[stage]['optax_step_ms']:.1f} ms, split "
          f"{results[stage]['split_step_ms']:.1f} ms a step: {ratio:.3f}x")
  results["load_average"] = timing.load_average()
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
