"""Splits, the clinical encoder, the training dataset, balancing and augmentation."""
