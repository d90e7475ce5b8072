"""Shared decoding: greedy dev-clip transcripts, the repetition guard, speculative decoding."""
