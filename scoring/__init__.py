"""Scores shared by every model family (pure numpy/torch): classification metrics and class priors."""
