"""The compare stage: measuring teacher and student on the same queries, statistics, cost, cascade, decision,
report."""
