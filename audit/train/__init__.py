"""Training: the one evaluation and stopping rule, the single-run loop, batched and stacked training, data parallel."""
