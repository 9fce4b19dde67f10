"""Moving existing hosts onto cnipam: readers of upstream stores and the import plan."""
