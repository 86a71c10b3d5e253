"""Prefect tasks: thin, one job each. They pass paths and ids, never tensors."""
