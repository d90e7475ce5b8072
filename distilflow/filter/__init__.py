"""The filter stage: the keep/drop rule on every pseudo-label, and why."""
