"""Language-specific experts (DistilWhisper, Ferraz et al. 2024): conditional routing on FFNs.

Every feed-forward block of the student (decoder layers, and encoder layers unless disabled)
becomes

    y = g · expert_lang(x) + (1 − g) · shared(x)

with ``g`` a per-token gate of the active language: hard ``G(x) ≥ 0`` at inference, where only
the chosen path is computed for each token; in training that hard gate with the sigmoid's
gradient (straight-through), or ``sigmoid(G(x) + α·noise)`` with α rising over training
(``distilflow.models.gates``). ``G`` is dropout → linear(d, width) → ReLU → linear(width, 1)
with the last layer zero, and each expert starts as the shared block (a full copy, or a zero
low-rank update), so a freshly attached language decodes exactly like the student it was built
on.

One language is active at a time. Its experts and gates are one safetensors file
(``save_experts``); ``use_language`` loads only that language's file, and a language without
experts (or the translate task) runs the shared path: the original student. So does a language
whose file records that no trained step beat the student (``save_no_experts``: no tensors).

The wrapped layer keeps transformers' own forward: its ``fc1`` becomes the whole mixed block and
its ``activation_fn`` and ``fc2`` become identities (the block applies the original activation
and activation dropout itself).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from distilflow.models.gates import GateMode, apply_keep, keep_mask, training_gate
from distilflow.safetensors_io import save_tensors

ExpertForm = Literal["full", "lowrank"]
FORMAT_VERSION = 1  # of the expert files' metadata
NO_EXPERTS = "none"  # metadata ``experts`` of a file with no experts: the language runs the student


@dataclass(frozen=True)
class ExpertSpec:
    """The shape of one language's experts (stored in each expert file)."""

    form: ExpertForm  # full: a copy of each FFN (as published); lowrank: rank-r updates
    rank: int  # low-rank experts only
    encoder: bool  # experts in the encoder layers too (else decoder only)
    gate_width: int  # hidden width of each gate
    gate_dropout: float


class FeedForward(nn.Module):
    """Whisper's FFN as one module: fc2(dropout(act(fc1(x))))."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, act: nn.Module, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act, self.dropout = fc1, fc2, act, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.dropout(self.act(self.fc1(x)), self.dropout, self.training)
        out: torch.Tensor = self.fc2(h)
        return out


class LowRankExpert(nn.Module):
    """The shared FFN with rank-r updates on fc1 and fc2 (B starts at zero: no change)."""

    def __init__(self, shared: FeedForward, rank: int) -> None:
        super().__init__()
        d, hidden = shared.fc1.in_features, shared.fc1.out_features
        self.a1 = nn.Parameter(torch.empty(rank, d))
        self.b1 = nn.Parameter(torch.zeros(hidden, rank))
        self.a2 = nn.Parameter(torch.empty(rank, hidden))
        self.b2 = nn.Parameter(torch.zeros(d, rank))
        for a in (self.a1, self.a2):
            nn.init.kaiming_uniform_(a, a=5**0.5)  # LoRA's initialisation of A

    def forward(self, x: torch.Tensor, shared: FeedForward) -> torch.Tensor:
        pre = shared.fc1(x) + (x @ self.a1.T) @ self.b1.T
        h = nn.functional.dropout(shared.act(pre), shared.dropout, self.training)
        out: torch.Tensor = shared.fc2(h) + (h @ self.a2.T) @ self.b2.T
        return out

    def merged(self, shared: FeedForward) -> FeedForward:
        """A plain FFN equal to this expert (weights W + B·A)."""
        block = copy.deepcopy(shared)
        with torch.no_grad():
            block.fc1.weight += self.b1 @ self.a1
            block.fc2.weight += self.b2 @ self.a2
        return block


def make_gate(d_model: int, width: int, dropout: float) -> nn.Sequential:
    """dropout → linear(d, width) → ReLU → linear(width, 1), the last layer zero (G = 0)."""
    last = nn.Linear(width, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, width), nn.ReLU(), last)


class LanguageFFN(nn.Module):
    """The shared FFN, plus the active language's expert and gate when one is attached."""

    def __init__(self, shared: FeedForward) -> None:
        super().__init__()
        self.shared = shared
        self.expert: nn.Module | None = None
        self.gate: nn.Sequential | None = None
        self.noise = 0.0  # α of the training gate's noise (soft mode)
        self.mode: GateMode = "soft"  # the training gate (distilflow.models.gates)
        self.soft_serving = False  # inference with sigmoid(G) instead of the hard gate (a probe)
        self.expert_dropout = 0.0  # training: probability an example skips this expert
        self.last_gate: torch.Tensor | None = None  # (..., 1) gates of the last forward

    def attach(self, spec: ExpertSpec) -> None:
        """Fresh experts: a copy of the shared block (or a zero update) and a closed-form gate."""
        self.expert = (
            copy.deepcopy(self.shared)
            if spec.form == "full"
            else LowRankExpert(self.shared, spec.rank)
        )
        self.gate = make_gate(self.shared.fc1.in_features, spec.gate_width, spec.gate_dropout)
        ref = self.shared.fc1.weight
        self.expert.to(device=ref.device, dtype=ref.dtype)
        self.gate.to(device=ref.device, dtype=ref.dtype)
        self.expert.train(self.training)  # follow the model's mode (dropout in the gate)
        self.gate.train(self.training)

    def detach_language(self) -> None:
        self.expert, self.gate, self.last_gate = None, None, None

    def run_expert(self, x: torch.Tensor) -> torch.Tensor:
        assert self.expert is not None
        if isinstance(self.expert, LowRankExpert):
            low: torch.Tensor = self.expert(x, self.shared)
            return low
        out: torch.Tensor = self.expert(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expert is None or self.gate is None:
            shared: torch.Tensor = self.shared(x)
            return shared
        logit: torch.Tensor = self.gate(x)
        if self.training or self.soft_serving:
            g = training_gate(logit, self.mode, self.noise) if self.training else logit.sigmoid()
            self.last_gate = g  # the gate network's own output (the budget's), before dropout
            if self.training and self.expert_dropout:
                g = apply_keep(g, keep_mask(g.shape[0], self.expert_dropout).to(g.device))
            mixed: torch.Tensor = g * self.run_expert(x) + (1 - g) * self.shared(x)
            return mixed
        return self._hard(x, logit >= 0)

    def _hard(self, x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        """Inference: each token through its chosen path only."""
        self.last_gate = on.to(x.dtype)
        if bool(on.all()):
            return self.run_expert(x)
        if not bool(on.any()):
            shared: torch.Tensor = self.shared(x)
            return shared
        flat, pick = x.reshape(-1, x.shape[-1]), on.reshape(-1)
        out = torch.empty_like(flat)
        out[pick] = self.run_expert(flat[pick])
        out[~pick] = self.shared(flat[~pick])
        return out.reshape(x.shape)


def _layers(model: Any, encoder: bool) -> Iterator[tuple[str, Any]]:
    """(``encoder.layers.i`` / ``decoder.layers.i``, layer) of the model's wrapped part."""
    model = getattr(model, "module", model)  # a DDP-wrapped model under several processes
    parts = (("encoder", model.model.encoder), ("decoder", model.model.decoder))
    for side, stack in parts:
        if side == "decoder" or encoder:
            for i, layer in enumerate(stack.layers):
                yield f"{side}.layers.{i}", layer


def add_expert_slots(model: Any, encoder: bool = True) -> dict[str, LanguageFFN]:
    """Turn each FFN into a ``LanguageFFN`` (no language attached: the model is unchanged)."""
    slots: dict[str, LanguageFFN] = {}
    for name, layer in _layers(model, encoder):
        if isinstance(layer.fc1, LanguageFFN):
            slots[name] = layer.fc1
            continue
        shared = FeedForward(layer.fc1, layer.fc2, layer.activation_fn, layer.activation_dropout)
        slot = LanguageFFN(shared)
        slot.train(layer.training)  # new modules start in training mode; follow the model's
        layer.fc1, layer.fc2, layer.activation_fn = slot, nn.Identity(), nn.Identity()
        layer.activation_dropout = 0.0
        slots[name] = slot
    return slots


def slots_of(model: Any) -> dict[str, LanguageFFN]:
    """The model's expert slots by layer name (empty when it has none)."""
    return {
        name: layer.fc1
        for name, layer in _layers(model, True)
        if isinstance(layer.fc1, LanguageFFN)
    }


def attach_language(model: Any, spec: ExpertSpec) -> dict[str, LanguageFFN]:
    """Add slots and fresh experts of one language; returns the slots."""
    slots = add_expert_slots(model, spec.encoder)
    for slot in slots.values():
        slot.attach(spec)
    return slots


def expert_parameters(model: Any) -> list[nn.Parameter]:
    """The trainable parameters of the active language: experts and gates."""
    params: list[nn.Parameter] = []
    for slot in slots_of(model).values():
        for part in (slot.expert, slot.gate):
            if part is not None:
                params.extend(part.parameters())
    return params


def expert_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """Only the active language's experts and gates, keyed ``<layer>.expert|gate.<param>``."""
    out: dict[str, torch.Tensor] = {}
    for name, slot in slots_of(model).items():
        for part_name, part in (("expert", slot.expert), ("gate", slot.gate)):
            if part is not None:
                for key, value in part.state_dict().items():
                    out[f"{name}.{part_name}.{key}"] = value.detach().cpu().contiguous()
    return out


def set_gate_noise(model: Any, alpha: float) -> None:  # α of the soft training gate
    for slot in slots_of(model).values():
        slot.noise = alpha


def set_gate_mode(model: Any, mode: GateMode) -> None:  # soft | straight_through (training)
    for slot in slots_of(model).values():
        slot.mode = mode


def set_soft_serving(model: Any, soft: bool) -> None:  # inference with sigmoid(G), a probe
    for slot in slots_of(model).values():
        slot.soft_serving = soft


def set_expert_dropout(model: Any, p: float) -> None:  # per example and layer, in training
    for slot in slots_of(model).values():
        slot.expert_dropout = p


def gate_values(model: Any, side: str) -> list[torch.Tensor]:
    """The gates of the last forward in ``side`` (encoder or decoder), one (B, T, 1) a layer."""
    return [
        s.last_gate
        for name, s in slots_of(model).items()
        if name.startswith(side) and s.last_gate is not None
    ]


def save_experts(model: Any, path: Path, language: str, spec: ExpertSpec, base: str) -> Path:
    """One language's experts as safetensors; metadata: language, spec, base model fingerprint."""
    meta = {
        "format": str(FORMAT_VERSION),
        "language": language,
        "spec": json.dumps(asdict(spec)),
        "base": base,
    }
    return save_tensors(Path(path), expert_state_dict(model), meta)


def save_no_experts(
    path: Path, language: str, base: str, spec: ExpertSpec | None, method: str = "experts"
) -> Path:
    """The file of a language where no trained step beat the student alone (step 0 won): no
    tensors, metadata ``experts: none``. Loading it routes the language to the shared path, so
    serving that language is the plain student. ``spec`` None: a baseline's file."""
    meta = {"language": language, "base": base, "method": method, "experts": NO_EXPERTS}
    if spec is not None:
        meta |= {"format": str(FORMAT_VERSION), "spec": json.dumps(asdict(spec))}
    return save_tensors(Path(path), {}, meta)


def read_expert_metadata(path: Path) -> dict[str, Any]:
    """The metadata of an expert file: language, spec (an ``ExpertSpec``), base fingerprint,
    and ``no_experts`` (True: the file records that the student alone won; it holds nothing)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != str(FORMAT_VERSION):
        raise ValueError(f"{path}: not a distilflow expert file (format {meta.get('format')})")
    return {
        "language": meta["language"],
        "spec": ExpertSpec(**json.loads(meta["spec"])),
        "base": meta["base"],
        "no_experts": meta.get("experts") == NO_EXPERTS,
    }


def load_experts(model: Any, path: Path, base: str | None = None) -> str:
    """Attach the experts stored in ``path``; returns their language. A file that records no
    experts (``save_no_experts``) attaches none: the model runs the shared path (the student).

    ``base``: the fingerprint of ``model``; a file trained on another base is refused.
    """
    meta = read_expert_metadata(path)
    if base is not None and meta["base"] != base:
        raise ValueError(
            f"{path}: experts of language {meta['language']} were trained on base model "
            f"{meta['base']}, not {base}"
        )
    if meta["no_experts"]:
        detach_language(model)
        return str(meta["language"])
    slots = attach_language(model, meta["spec"])
    state = load_file(str(path))
    for name, slot in slots.items():
        for part_name, part in (("expert", slot.expert), ("gate", slot.gate)):
            assert part is not None
            prefix = f"{name}.{part_name}."
            part.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
    return str(meta["language"])


def detach_language(model: Any) -> None:
    """Back to the shared path everywhere (the original student)."""
    for slot in slots_of(model).values():
        slot.detach_language()


def expert_file(experts_dir: Path, language: str) -> Path:
    return Path(experts_dir) / f"{language}.safetensors"


def use_language(
    model: Any, experts_dir: Path | None, language: str | None, task: str = "transcribe"
) -> bool:
    """Route ``model`` for ``language``: its experts when a file exists, else the shared path.

    The translate task, unknown languages and a file recording no experts fall back to the
    shared path. True when experts are active.
    """
    detach_language(model)
    if experts_dir is None or language is None or task != "transcribe":
        return False
    path = expert_file(experts_dir, language)
    if not path.is_file():
        return False
    load_experts(model, path)
    return any(slot.expert is not None for slot in slots_of(model).values())


def merge_language(model: Any) -> Any:
    """A plain Whisper (no slots) whose FFNs are the active language's experts.

    Exact when every gate is open; the hard gate routes token by token, so this is the
    export-time approximation where a layer's gate is mostly open. Layers whose gate network
    closes for a token keep computing the expert here. The model passed in is not changed.
    """
    plain = copy.deepcopy(model)
    for name, layer in _layers(plain, True):
        slot = layer.fc1
        if not isinstance(slot, LanguageFFN):
            continue
        block = slot.shared
        if isinstance(slot.expert, LowRankExpert):
            block = slot.expert.merged(slot.shared)
        elif isinstance(slot.expert, FeedForward):
            block = slot.expert
        layer.fc1, layer.fc2, layer.activation_fn = block.fc1, block.fc2, block.act
        layer.activation_dropout = block.dropout
        del name
    return plain


def expert_path(out_dir: Path | str, language: str) -> Path:
    """Where the stage publishes a language's trained experts (or baseline weights)."""
    return Path(out_dir) / language / "experts" / f"{language}.safetensors"


def route_to_stage_experts(out_dir: Path, model: Any, language: str) -> Any:
    """Route ``model`` to the experts the stage trained for ``language`` (shared path if none)."""
    use_language(model, expert_path(out_dir, language).parent, language)
    return model
