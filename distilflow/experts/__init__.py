"""The experts stage: gated language experts (DistilWhisper) and Distill-L2S, per language."""
