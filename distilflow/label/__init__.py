"""The label stage: the teacher pseudo-labels clips (transformers or CTranslate2), cached."""
