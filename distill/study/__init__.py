"""`distill study`: student variants on the same labels and learning curves over label budgets, run (run.py,
curve.py, fit.py, folders.py) apart from their rendering (report.py)."""
