"""Speed and memory benchmarks (run ``python benchmarks/run.py``); not installed."""
