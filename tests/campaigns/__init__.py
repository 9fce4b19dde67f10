"""Long-running campaigns (contention; crash later), runnable from the command line and
in short form from the test suite, with the same code."""
