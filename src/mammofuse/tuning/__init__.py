"""Hyper-parameter search that never sees the test set (`mammofuse tune`)."""
