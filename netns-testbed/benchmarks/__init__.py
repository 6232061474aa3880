"""Benchmarks on the netns testbed: ratios against a baseline measured in the same run."""
