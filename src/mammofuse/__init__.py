"""mammofuse: two-view mammography + clinical data -> an honestly validated breast-level model."""

__version__ = "0.1.0"
