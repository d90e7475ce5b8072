"""Read and write CTranslate2 Whisper ``model.bin`` files; map their names onto transformers.

The format (little-endian): u32 format version, spec name, u32 spec revision, u32 variable
count; per variable its name, u8 rank, u32 per dimension, u8 dtype, u32 byte count and the raw
data; then u32 alias count and (alias, target) pairs. A string is a u16 length that counts a
final NUL, the bytes and the NUL. Only reading is needed to import faster-whisper checkpoints;
the writer exists so that round trips can be tested without a converter.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 6
WHISPER_SPEC = "WhisperSpec"
WHISPER_SPEC_REVISION = 3

_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_NUMPY_DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2"}
_DTYPE_IDS = {np.dtype(v): k for k, v in _NUMPY_DTYPES.items()}

# Per-layer names: CTranslate2 suffix -> transformers suffix.
_LAYER_LINEARS = {
    "self_attention/linear_1": "self_attn.out_proj",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
}
_LAYER_NORMS = {
    "self_attention/layer_norm": "self_attn_layer_norm",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "ffn/layer_norm": "final_layer_norm",
}
# Fused projections, split by rows; the k bias is stored as zeros and transformers has none.
_LAYER_FUSED = {
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
}
_TOP_LINEARS = {"encoder/conv1": "model.encoder.conv1", "encoder/conv2": "model.encoder.conv2"}
_TOP_NORMS = {
    "encoder/layer_norm": "model.encoder.layer_norm",
    "decoder/layer_norm": "model.decoder.layer_norm",
}
_TOP_TENSORS = {
    "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
    "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
    "decoder/embeddings/weight": "model.decoder.embed_tokens.weight",
}
_PROJECTION = "decoder/projection/weight"
_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)$")
_HF_SIDE = {"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"}


class Ct2FormatError(ValueError):
    """A file is not a CTranslate2 Whisper model this reader understands."""


@dataclass(frozen=True)
class Ct2Model:
    """The raw content of a ``model.bin``: variables as numpy arrays, plus aliases."""

    path: Path
    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following aliases."""
        return self.variables[self.aliases.get(name, name)]


@dataclass(frozen=True)
class WhisperDims:
    """The sizes of a Whisper model, as read from its tensors."""

    n_mels: int
    d_model: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int


class _Reader:
    """Sequential little-endian reader over a byte buffer with truncation checks."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, size: int, what: str) -> memoryview:
        end = self.pos + size
        if end > len(self.data):
            raise Ct2FormatError(f"{self.path}: truncated while reading {what} at byte {self.pos}")
        view = memoryview(self.data)[self.pos : end]
        self.pos = end
        return view

    def unpack(self, fmt: str, what: str) -> int:
        value: int = struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]
        return value

    def string(self, what: str) -> str:
        size = self.unpack("H", what)
        raw = bytes(self.take(size, what))
        if size == 0 or raw[-1] != 0:
            raise Ct2FormatError(f"{self.path}: malformed string for {what} at byte {self.pos}")
        return raw[:-1].decode("utf-8")


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (format version 6) without loading ctranslate2."""
    path = Path(path)
    reader = _Reader(path.read_bytes(), path)
    version = reader.unpack("I", "format version")
    if version != FORMAT_VERSION:
        raise Ct2FormatError(
            f"{path}: unsupported CTranslate2 format version {version} (this reader handles "
            f"{FORMAT_VERSION}; re-convert the model with ctranslate2>=3)"
        )
    spec = reader.string("spec name")
    revision = reader.unpack("I", "spec revision")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I", "variable count")):
        name, value = _read_variable(reader)
        variables[name] = value
    aliases: dict[str, str] = {}
    for _ in range(reader.unpack("I", "alias count")):
        alias = reader.string("alias name")
        aliases[alias] = reader.string("alias target")
    if reader.pos != len(reader.data):
        raise Ct2FormatError(
            f"{path}: {len(reader.data) - reader.pos} trailing bytes after aliases"
        )
    return Ct2Model(path, version, spec, revision, variables, aliases)


def _read_variable(reader: _Reader) -> tuple[str, np.ndarray]:
    name = reader.string("variable name")
    rank = reader.unpack("B", f"rank of {name}")
    shape = tuple(reader.unpack("I", f"shape of {name}") for _ in range(rank))
    dtype_id = reader.unpack("B", f"dtype of {name}")
    size = reader.unpack("I", f"byte count of {name}")
    raw = reader.take(size, f"data of {name}")
    return name, _decode_array(raw, dtype_id, shape, f"{reader.path}: variable {name}")


def _decode_array(raw: memoryview, dtype_id: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    if dtype_id == 5:  # bfloat16: numpy has none, widen to float32 exactly
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        flat = bits.view(np.float32)
    elif dtype_id in _NUMPY_DTYPES:
        flat = np.frombuffer(raw, dtype=_NUMPY_DTYPES[dtype_id]).copy()
    else:
        raise Ct2FormatError(f"{where}: unsupported dtype id {dtype_id}")
    if flat.size != int(np.prod(shape, dtype=np.int64)):
        name = _DTYPE_NAMES[dtype_id]
        raise Ct2FormatError(f"{where}: {flat.size} {name} values do not fill shape {shape}")
    return flat.reshape(shape)


def write_ct2_model(
    path: Path,
    variables: Mapping[str, np.ndarray],
    aliases: Mapping[str, str] | None = None,
    spec: str = WHISPER_SPEC,
    revision: int = WHISPER_SPEC_REVISION,
) -> None:
    """Write variables (float32/float16/int8/int16/int32 arrays) as a ``model.bin``, atomically."""
    chunks = [struct.pack("<I", FORMAT_VERSION), _pack_string(spec)]
    chunks += [struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name in sorted(variables):
        chunks.append(_pack_variable(name, np.asarray(variables[name])))
    alias_items = sorted((aliases or {}).items())
    chunks.append(struct.pack("<I", len(alias_items)))
    chunks += [_pack_string(a) + _pack_string(t) for a, t in alias_items]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(chunks)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pack_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _pack_variable(name: str, value: np.ndarray) -> bytes:
    dtype_id = _DTYPE_IDS.get(value.dtype.newbyteorder("<"))
    if dtype_id is None:
        raise Ct2FormatError(f"cannot write variable {name}: unsupported dtype {value.dtype}")
    data = np.ascontiguousarray(value, dtype=_NUMPY_DTYPES[dtype_id]).tobytes()
    head = _pack_string(name) + struct.pack("<B", value.ndim)
    head += b"".join(struct.pack("<I", d) for d in value.shape)
    return head + struct.pack("<BI", dtype_id, len(data)) + data


def float_variables(model: Ct2Model) -> dict[str, np.ndarray]:
    """Tensor variables as float32, int8/int16 weights dequantized; scalars and scales dropped."""
    out: dict[str, np.ndarray] = {}
    for name, value in model.variables.items():
        if value.ndim == 0 or name.endswith("_scale"):
            continue
        scale = model.variables.get(name + "_scale")
        if value.dtype.kind == "f":
            out[name] = value.astype(np.float32)
        elif scale is not None:
            out[name] = _dequantize(value, scale)
        else:
            raise Ct2FormatError(f"{model.path}: integer variable {name} has no {name}_scale")
    for alias, target in model.aliases.items():
        if target in out:
            out[alias] = out[target]
    return out


def _dequantize(value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    flat = value.reshape(value.shape[0], -1).astype(np.float32)
    scale = scale.astype(np.float32)
    rows: np.ndarray = flat / (scale.reshape(-1, 1) if scale.ndim else scale)
    return rows.reshape(value.shape)


def _num_layers(names: Mapping[str, object], side: str) -> int:
    found = {int(m.group(2)) for n in names if (m := _LAYER_RE.match(n)) and m.group(1) == side}
    if found != set(range(len(found))):
        raise Ct2FormatError(f"{side} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def _heads(model: Ct2Model, side: str, d_model: int) -> int:
    value = model.variables.get(f"{side}/num_heads")
    return int(value) if value is not None else max(1, d_model // 64)


def infer_dims(model: Ct2Model) -> WhisperDims:
    """Model sizes from tensor shapes (heads from the stored ``num_heads`` scalars)."""
    try:
        conv1 = model.get("encoder/conv1/weight")
        d_model, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
        return WhisperDims(
            n_mels=n_mels,
            d_model=d_model,
            vocab_size=int(model.get("decoder/embeddings/weight").shape[0]),
            encoder_layers=_num_layers(model.variables, "encoder"),
            decoder_layers=_num_layers(model.variables, "decoder"),
            encoder_heads=_heads(model, "encoder", d_model),
            decoder_heads=_heads(model, "decoder", d_model),
            encoder_ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
            decoder_ffn_dim=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
            max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
            max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        )
    except KeyError as exc:
        raise Ct2FormatError(f"{model.path}: not a Whisper model, missing {exc}") from exc


def ct2_to_hf_state_dict(model: Ct2Model) -> dict[str, torch.Tensor]:
    """transformers ``WhisperForConditionalGeneration`` state dict (float32) from a CT2 model."""
    if model.spec != WHISPER_SPEC:
        raise Ct2FormatError(f"{model.path}: spec {model.spec!r} is not {WHISPER_SPEC!r}")
    tensors = float_variables(model)
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        for key, array in _map_name(name, value):
            out[key] = torch.from_numpy(np.ascontiguousarray(array))
    if "proj_out.weight" not in out and "model.decoder.embed_tokens.weight" in out:
        out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return out


def _map_name(name: str, value: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """transformers (name, tensor) pairs for one CT2 variable."""
    if name in _TOP_TENSORS:
        return [(_TOP_TENSORS[name], value)]
    if name == _PROJECTION:
        return [("proj_out.weight", value)]
    scope, _, leaf = name.rpartition("/")
    if scope in _TOP_LINEARS and leaf in ("weight", "bias"):
        return [(f"{_TOP_LINEARS[scope]}.{leaf}", value)]
    if scope in _TOP_NORMS and leaf in ("gamma", "beta"):
        return [(f"{_TOP_NORMS[scope]}.{_norm_leaf(leaf)}", value)]
    match = _LAYER_RE.match(scope)
    if match is None:
        raise Ct2FormatError(f"unexpected variable {name!r} for a Whisper model")
    prefix = f"{_HF_SIDE[match.group(1)]}.{match.group(2)}"
    return _map_layer_leaf(prefix, match.group(3), leaf, value, name)


def _norm_leaf(leaf: str) -> str:
    return "weight" if leaf == "gamma" else "bias"


def _map_layer_leaf(
    prefix: str, part: str, leaf: str, value: np.ndarray, name: str
) -> list[tuple[str, np.ndarray]]:
    if part in _LAYER_LINEARS and leaf in ("weight", "bias"):
        return [(f"{prefix}.{_LAYER_LINEARS[part]}.{leaf}", value)]
    if part in _LAYER_NORMS and leaf in ("gamma", "beta"):
        return [(f"{prefix}.{_LAYER_NORMS[part]}.{_norm_leaf(leaf)}", value)]
    if part in _LAYER_FUSED and leaf in ("weight", "bias"):
        targets = _LAYER_FUSED[part]
        pieces = np.split(value, len(targets), axis=0)
        return [
            (f"{prefix}.{target}.{leaf}", piece)
            for target, piece in zip(targets, pieces, strict=True)
            if not (leaf == "bias" and target.endswith("k_proj"))
        ]
    raise Ct2FormatError(f"unexpected variable {name!r} for a Whisper model")


def hf_to_ct2_variables(
    state_dict: Mapping[str, torch.Tensor], encoder_heads: int, decoder_heads: int
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """CT2 variables and aliases (float32) for a transformers Whisper state dict."""
    hf = {k: v.detach().cpu().float().numpy() for k, v in state_dict.items()}
    out: dict[str, np.ndarray] = {}
    for ct2_name, hf_name in _TOP_TENSORS.items():
        out[ct2_name] = hf[hf_name]
    for ct2_scope, hf_scope in _TOP_LINEARS.items():
        out[f"{ct2_scope}/weight"] = hf[f"{hf_scope}.weight"]
        out[f"{ct2_scope}/bias"] = hf[f"{hf_scope}.bias"]
    for ct2_scope, hf_scope in _TOP_NORMS.items():
        out[f"{ct2_scope}/gamma"] = hf[f"{hf_scope}.weight"]
        out[f"{ct2_scope}/beta"] = hf[f"{hf_scope}.bias"]
    for side, hf_side in _HF_SIDE.items():
        layers = {int(k.split(".")[3]) for k in hf if k.startswith(hf_side + ".")}
        for i in sorted(layers):
            out.update(_layer_to_ct2(hf, f"{side}/layer_{i}", f"{hf_side}.{i}"))
    out.update(_ct2_scalars(encoder_heads, decoder_heads))
    aliases: dict[str, str] = {}
    if np.array_equal(hf["proj_out.weight"], hf["model.decoder.embed_tokens.weight"]):
        aliases[_PROJECTION] = "decoder/embeddings/weight"
    else:
        out[_PROJECTION] = hf["proj_out.weight"]
    return out, aliases


def _layer_to_ct2(hf: Mapping[str, np.ndarray], ct2: str, pre: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for part, target in _LAYER_LINEARS.items():
        if f"{pre}.{target}.weight" in hf:
            out[f"{ct2}/{part}/weight"] = hf[f"{pre}.{target}.weight"]
            out[f"{ct2}/{part}/bias"] = hf[f"{pre}.{target}.bias"]
    for part, target in _LAYER_NORMS.items():
        if f"{pre}.{target}.weight" in hf:
            out[f"{ct2}/{part}/gamma"] = hf[f"{pre}.{target}.weight"]
            out[f"{ct2}/{part}/beta"] = hf[f"{pre}.{target}.bias"]
    for part, targets in _LAYER_FUSED.items():
        if f"{pre}.{targets[0]}.weight" not in hf:
            continue
        out[f"{ct2}/{part}/weight"] = np.concatenate([hf[f"{pre}.{t}.weight"] for t in targets])
        biases = [
            hf.get(f"{pre}.{t}.bias", np.zeros(hf[f"{pre}.{t}.weight"].shape[0], np.float32))
            for t in targets
        ]
        out[f"{ct2}/{part}/bias"] = np.concatenate(biases)
    return out


def _ct2_scalars(encoder_heads: int, decoder_heads: int) -> dict[str, np.ndarray]:
    """The scalar settings CTranslate2's converter writes for Whisper (pre-norm, GELU)."""
    int8, int16 = np.int8, np.int16
    return {
        "encoder/num_heads": np.array(encoder_heads, int16),
        "decoder/num_heads": np.array(decoder_heads, int16),
        "decoder/activation": np.array(3, int8),
        "decoder/alibi": np.array(0, int8),
        "decoder/alibi_use_positive_positions": np.array(0, int8),
        "decoder/alignment_heads": np.array(1, int16),
        "decoder/alignment_layer": np.array(-1, int16),
        "decoder/pre_norm": np.array(1, int8),
        "decoder/scale_alibi": np.array(0, int8),
        "decoder/scale_embeddings": np.array(0, int8),
        "decoder/start_from_zero_embedding": np.array(0, int8),
    }
