"""Test doubles that run for real on 127.0.0.1: used by the test suite and the benchmarks."""
