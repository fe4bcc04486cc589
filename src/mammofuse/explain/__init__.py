"""Grad-CAM per view for the two-view + clinical model, drawn on the preprocessed and original images."""
