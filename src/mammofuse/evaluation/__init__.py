"""Metrics with confidence intervals, the clinical-only baseline, comparisons and figures."""
