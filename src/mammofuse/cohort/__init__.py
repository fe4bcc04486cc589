"""Finding a cohort's images and tables, building the manifest, and the synthetic cohort generator."""
