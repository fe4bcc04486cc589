"""Imaging: pure array functions (decode, orientation, crop, resize) and the preprocessing cache."""
