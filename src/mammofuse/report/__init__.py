"""One self-contained HTML report per run (figures embedded), for a clinician to open offline."""
