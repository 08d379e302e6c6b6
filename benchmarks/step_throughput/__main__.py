from benchmarks.step_throughput.cli import main

main()
