"""`python -m benchmarks.throughput`: see the package's docstring."""

from benchmarks.throughput.driver import main

main()
