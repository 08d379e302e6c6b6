from benchmarks.torch_twins.timing import main

main()
