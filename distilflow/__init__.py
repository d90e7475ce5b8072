"""distilflow: distil multilingual Whisper models (Distil-Whisper, DistilWhisper, Distill-L2S).

The ML core. It knows nothing of Prefect or DVC; MLflow stays inside ``distilflow.register``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
