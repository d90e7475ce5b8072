"""The MLflow pyfunc a registered model is logged as ("models from code": nothing pickled).

Its artifact ``whisper`` is the model directory itself (safetensors, processor, generation
config, side files such as ``distilflow_decode.json``, ``experts/`` when present). Generic MLflow
consumers (``mlflow.pyfunc.load_model``, ``mlflow models serve``) load it with distilflow's
consumer where distilflow is installed, else with plain transformers.
"""

from __future__ import annotations

import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from distilflow.register.decode_file import read_decode

WHISPER_ARTIFACT = "whisper"  # the pyfunc artifact key of the model directory

_PYFUNC_CODE = '''"""MLflow pyfunc of a distilflow Whisper (models from code; register.pyfunc).

predict(model_input): a DataFrame or dict with "audio" (16 kHz mono float samples, one clip a
row) and optionally "language" (e.g. "fr"); returns one transcript a row. Weights load from
safetensors with transformers; nothing is unpickled, no remote code is trusted.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel
from transformers import WhisperForConditionalGeneration, WhisperProcessor


class DistilflowWhisper(PythonModel):
    # Free-form input (audio arrays): no type-hint validation (and no advice to add hints).
    _skip_type_hint_validation = True

    def load_context(self, context):
        path = context.artifacts["whisper"]
        try:  # where distilflow is installed: its consumer (experts, dynamic audio context,
            # the repetition guard and token budget of distilflow_decode.json)
            from distilflow.register.consumer import RegisteredWhisper
        except ImportError:
            RegisteredWhisper = None
        if RegisteredWhisper is not None:
            self.impl = RegisteredWhisper.from_dir(path)
            return
        self.impl = None
        self.model = WhisperForConditionalGeneration.from_pretrained(
            path, use_safetensors=True, local_files_only=True, trust_remote_code=False
        ).eval()
        record = getattr(self.model.config, "distilflow_student", None) or {}
        if record.get("audio_context", "padded") != "padded":
            raise RuntimeError(
                f"{path}: a dynamic-audio-context student runs only with distilflow installed "
                "(distilflow.register.download.load_registered); plain transformers would pad it "
                "to 30 s"
            )
        self.processor = WhisperProcessor.from_pretrained(path, local_files_only=True)
        # the log-mel past the clip: zeros (OpenAI's padding) unless the student was trained
        # on transformers' (distilflow.models.features)
        self.zero_pad = record.get("feature_padding", "audio" if record else "log_mel") == "log_mel"

    def _plain(self, audio, language, max_new_tokens):
        audio = np.asarray(audio, dtype=np.float32)
        features = self.processor.feature_extractor(
            audio, sampling_rate=16000, return_tensors="pt"
        ).input_features
        if self.zero_pad:
            features[..., audio.size // 160 :] = 0
        with torch.no_grad():
            ids = self.model.generate(  # Whisper counts max_length after its prompt
                features, language=language or None, task="transcribe",
                max_length=max_new_tokens,
            )
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()

    def predict(self, context, model_input, params=None):
        data = model_input.to_dict("list") if hasattr(model_input, "to_dict") else model_input
        audios = list(data["audio"])
        languages = list(data.get("language") or [None] * len(audios))
        given = (params or {}).get("max_new_tokens")
        tokens = int(given) if given else None  # None: the model directory's own budget
        out = []
        for audio, language in zip(audios, languages):
            samples = np.asarray(audio, dtype=np.float32)
            if self.impl is not None:
                text = self.impl.transcribe(samples, language or None, max_new_tokens=tokens)
            else:
                text = self._plain(samples, language, tokens or 128)
            out.append(text)
        return out


mlflow.models.set_model(DistilflowWhisper())
'''


def pip_requirements() -> list[str]:
    """What the pyfunc needs, pinned to what is installed here."""
    names = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas")
    return [f"{n}=={metadata.version(n)}" for n in names]


def pyfunc_signature(max_new_tokens: int) -> Any:
    """Only the inference params (``max_new_tokens``, by default the model directory's token
    budget); the input (audio arrays) is free-form."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    spec = ParamSpec("max_new_tokens", "long", int(max_new_tokens))
    return ModelSignature(params=ParamSchema([spec]))


def log_pyfunc(model_dir: Path) -> str:
    """Log ``model_dir`` as the pyfunc ``model`` of the active run; returns its model URI."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # Known and intended: audio arrays are free-form input, so no input example.
        warnings.filterwarnings("ignore", message=".*input example")
        code = Path(tmp) / "distilflow_whisper.py"
        code.write_text(_PYFUNC_CODE, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={WHISPER_ARTIFACT: str(model_dir)},
            pip_requirements=pip_requirements(),
            signature=pyfunc_signature(read_decode(model_dir).max_new_tokens),
        )
    return str(info.model_uri)
