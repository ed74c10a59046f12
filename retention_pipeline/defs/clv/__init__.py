"""CLV modelling: the fitted BG/NBD (or Pareto/NBD) and Gamma-Gamma models as assets."""
