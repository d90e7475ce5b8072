"""Shared training foundations: the loop, the data, the losses, the teacher-logits memo."""
