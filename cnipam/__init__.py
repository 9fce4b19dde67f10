"""cnipam: IP address management for containers.

The package is imported by a fresh plugin process for every CNI call, so nothing
here may import more than the standard library's C-level modules eagerly.
"""

__version__ = "0.1.0"
