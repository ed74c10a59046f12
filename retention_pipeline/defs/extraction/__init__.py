"""Extraction: source files into the warehouse's raw layer, with quarantine and audit."""
