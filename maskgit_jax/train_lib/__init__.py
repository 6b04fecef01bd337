"""One training library for both stages: state, sharding, steps, checkpoints, logs."""
