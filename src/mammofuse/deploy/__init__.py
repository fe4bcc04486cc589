"""Deploying a trained model: the self-contained bundle and scoring new breasts with it."""
