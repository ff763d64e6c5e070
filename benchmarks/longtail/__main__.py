from benchmarks.longtail.driver import main

main()
