"""The export stage: CTranslate2 conversion and its verification against torch."""
