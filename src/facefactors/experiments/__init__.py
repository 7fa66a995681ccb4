"""Experiments: one module per method, each experiment a function that trains/evaluates and writes a report."""
