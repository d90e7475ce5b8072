"""The evaluation stage: every model on every eval set, per language, and the report."""
