"""The paper's theory: minimum-norm kernel interpolation (§5) and finite-sample expressivity (§4)."""
