"""Which tasks to train together: task weighting, TAG / CS / HOA affinities, network selection."""
