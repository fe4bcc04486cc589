"""Finding a cohort's images and tables, building the manifest, and the synthetic cohort generator."""

DEFAULT_BREASTS = (
    1112  # the synthetic cohort's size: about 1,001 left after NA rows are dropped, as in the study
)
DEFAULT_YEARS = 5.0  # the synthetic cohort's recruitment period (`synth --years`): its exams' dates
