"""The train stage (Ray Train), the Tune search, its search space and the embedding cache."""
