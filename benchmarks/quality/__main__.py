"""`python -m benchmarks.quality`: see the package's docstring."""

from benchmarks.quality.driver import main

main()
