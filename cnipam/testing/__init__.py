"""What the tests, the benchmarks and the campaigns share, shipped with the package so
each imports it the same way: bench/ and campaigns/ run with an interpreter that has
cnipam installed, never from the tests' folder. Standard library only; none of cnipam's
executables imports it.
"""
