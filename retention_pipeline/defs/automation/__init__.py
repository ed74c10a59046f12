"""Automation: the job every trigger runs, the nightly schedule."""
