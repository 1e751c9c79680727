"""Data: synthetic generators, sources read through Ray Data, and fitted feature engineering."""
