"""Reading input files into rows, and the split into rows to label and held-out test queries."""
