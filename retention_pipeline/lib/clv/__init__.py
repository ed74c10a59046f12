"""Predicted customer lifetime value: the customer summary, the BG/NBD, Pareto/NBD and
Gamma-Gamma models fitted by maximum likelihood, and what they predict. Pure functions of
NumPy arrays and Polars frames; the Dagster assets in defs/clv/ call them."""
