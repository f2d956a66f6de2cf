"""Load generator, side-by-side benchmarks and worker-count tuning for feedsvc (issue 7)."""
