"""audit: the randomization test of Zhang et al. as a toolkit for judging generalization measures."""

__version__ = "0.1.0"
