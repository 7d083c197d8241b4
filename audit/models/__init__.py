"""Models: the registry of architectures (MLPs, the paper's CNNs, users' module:function models) and FLOP counts."""
