"""Analyses of a stored run that produce arrays, not scalars: loss landscapes and Hessian eigenvalue densities.

Pure functions of a model, its weights and (a subset of) its fitted train data; they never read or write the
store. Above the measures and training in the layers, below the pipeline that caches their results.
"""
