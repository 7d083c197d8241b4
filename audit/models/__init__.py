"""Models: the registry of architectures (MLPs, the paper's CNNs, users' module:function models) and FLOP counts."""

from audit.models.registry import register_model

__all__ = ["register_model"]
