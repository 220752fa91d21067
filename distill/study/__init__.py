"""`distill study`: student variants on the same labels (report.py) and learning curves over label budgets
(curve.py)."""
