"""Generalization measures: the registry's public face and one module per family.

A measure is a function of a Context (the model with final weights in eval mode, its init, the fitted
train data, the run's spec and history) returning a float, or raising Undefined with the reason when it
is not defined for that run. Register one with @measure(...); importing this package registers every
built-in family.
"""

from measures import (  # noqa: F401  (registration)  # noqa: F401  (registration)
                                capacity,
                                curvature,
                                flatness,
                                information,
                                kernel,
                                margin,
                                norms,
                                optimization,
                                sensitivity,
                                sharpness,
                                spectra,
)
from measures._registry import (
                                COSTS,
                                FAMILIES,
                                MEASURES,
                                NEEDS,
                                Context,
                                Measure,
                                Result,
                                Undefined,
                                compute,
                                evaluate,
                                evaluate_group,
                                get,
                                judged,
                                keep_detail,
                                measure,
                                names,
                                resolved_settings,
)

__all__ = ["COSTS", "FAMILIES", "MEASURES", "NEEDS", "Context", "Measure", "Result", "Undefined", "compute", "evaluate", "evaluate_group",
           "get", "judged", "keep_detail", "measure", "names", "resolved_settings"]
