"""Benchmarks of minihttp, run by `make bench` (`python -m bench`); not tests."""
