"""Prefect flows and the `milimo` command line."""
