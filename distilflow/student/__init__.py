"""The student stage: build the student (kept encoder, copied decoder layers) and distil it."""
