"""Benchmarks (not tests): end-to-end throughput, latency, storm, resources. Run `python -m bench.run`."""
