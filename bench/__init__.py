"""Benchmarks: the real stack against bare Temporal on the same machine (`make bench`)."""
