"""The pipeline: validating names where specs enter, running a grid (local, Ray, shards), scoring, importing, plans, costs."""
