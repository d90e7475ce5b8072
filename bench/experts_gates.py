"""The experts' gate options measured on a tiny random Whisper: does training match serving?

    python -m bench.experts_gates [--steps 200] [--out docs/bench/experts_gates.json]

No download and no real speech: a 2-layer student cut from a tiny random 4-layer teacher
(``distilflow.testing``) learns decoder experts by distillation (KL to the teacher's logits on
fixed random inputs and token sequences, plus the gate budget), with the stage's own set-up
(``prepare_model``: gates, expert dropout; ``gate_noise_at``: the noise ramp; ``method_lr``).
For each gate option, on held-out inputs at the end:

- ``kl_train``: the loss as the training forward computes it (noise at its last α, dropout);
- ``kl_served``: the same with the hard 0/1 gate, as the stage serves it;
- ``kl_soft_probe``: served with ``sigmoid(G)`` in place of the hard gate;
- ``gate_train_distance``: mean distance of the training gates from 0/1 (0: hard);
- ``served_open``: share of tokens the served gate sends to the expert path.

The gap ``kl_served - kl_train`` is the train/serve mismatch. A tiny random model measures the
mechanism, not WER: that needs real weights (``bench.experts --gates``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from bench.common import provenance, write_result
from distilflow.config import ExpertsConfig, load_params
from distilflow.experts.schedule import gate_noise_at, method_lr
from distilflow.experts.stage import prepare_model
from distilflow.models.experts import gate_values, set_gate_noise, set_soft_serving
from distilflow.student.build import make_student
from distilflow.testing import tiny_whisper
from distilflow.training.losses import gate_budget_loss

REPO = Path(__file__).resolve().parents[1]
OPTIONS: dict[str, dict[str, Any]] = {  # name -> experts options (over params.yaml's)
    "soft_old_defaults": {"gate": "soft", "gate_noise": 1.0, "gate_bias": 0.0},
    "soft_ramp_to_5": {"gate": "soft", "gate_noise": 5.0, "gate_bias": 0.0},
    "soft_open_bias_3": {"gate": "soft", "gate_noise": 0.0, "gate_bias": 3.0},
    "straight_through": {"gate": "straight_through", "gate_bias": 0.0},
    "straight_through_dropout_0.2": {"gate": "straight_through", "expert_dropout": 0.2},
}


def batches(teacher: Any, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of 4: frozen encoder states, random text tokens, the teacher's logits."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        feats = torch.randn(4, teacher.config.num_mel_bins, 3000, generator=g)
        ids = torch.randint(0, 300, (4, 12), generator=g)
        with torch.no_grad():
            states = teacher.model.encoder(feats).last_hidden_state
            target = teacher(encoder_outputs=(states,), decoder_input_ids=ids).logits
        out.append({"states": states, "ids": ids, "target": target})
    return out


def kl(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(encoder_outputs=(batch["states"],), decoder_input_ids=batch["ids"]).logits
    log_p = torch.log_softmax(batch["target"], -1)
    return (log_p.exp() * (log_p - torch.log_softmax(logits, -1))).sum(-1).mean()


def budget(model: Any, cfg: ExpertsConfig) -> torch.Tensor:
    gates = gate_values(model, "decoder")
    mask = torch.ones(gates[0].shape[:2], dtype=torch.bool)
    return gate_budget_loss(gates, mask, cfg.gate_target)


def measure(model: Any, cfg: ExpertsConfig, held: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The held-out figures of one trained option (see the module's docstring)."""
    torch.manual_seed(1)
    row: dict[str, Any] = {}
    with torch.no_grad():
        model.train()
        row["kl_train"] = sum(float(kl(model, b)) for b in held) / len(held)
        gates = torch.cat([g.flatten() for g in gate_values(model, "decoder")])
        row["gate_train_distance"] = float(torch.minimum(gates, 1 - gates).mean())
        model.eval()
        row["kl_served"] = sum(float(kl(model, b)) for b in held) / len(held)
        row["served_open"] = float(torch.cat(gate_values(model, "decoder")).mean())
        set_soft_serving(model, True)
        row["kl_soft_probe"] = sum(float(kl(model, b)) for b in held) / len(held)
        set_soft_serving(model, False)
    row["gap_served_minus_train"] = row["kl_served"] - row["kl_train"]
    return row


def run_option(cfg: ExpertsConfig, teacher: Any, data: Any, held: Any) -> dict[str, Any]:
    """Train one option's experts for ``cfg.max_steps`` steps; its figures before and after."""
    student, _ = make_student(teacher, 2)  # the tiny models have no dropout
    torch.manual_seed(cfg.seed)
    params = prepare_model(student, cfg)
    student.eval()
    with torch.no_grad():
        start = sum(float(kl(student, b)) for b in held) / len(held)
    optimizer = torch.optim.AdamW(params, lr=method_lr(cfg))
    student.train()
    for step in range(cfg.max_steps):
        set_gate_noise(student, gate_noise_at(cfg, step))
        batch = data[step % len(data)]
        loss = kl(student, batch) + cfg.budget_weight * budget(student, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    set_gate_noise(student, gate_noise_at(cfg, cfg.max_steps))
    return {"kl_student_alone": start} | measure(student, cfg, held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=None, help="default: experts.lr")
    parser.add_argument("--out", type=Path, default=REPO / "docs/bench/experts_gates.json")
    args = parser.parse_args()
    base = load_params(REPO / "params.yaml").experts
    base = dataclasses.replace(base, max_steps=args.steps, encoder=False, gate_noise_steps=0)
    if args.lr is not None:
        base = dataclasses.replace(base, lr=args.lr)
    teacher, _ = tiny_whisper(seed=1, decoder_layers=4)
    data, held = batches(teacher, 16, seed=0), batches(teacher, 4, seed=1)
    results = {}
    for name, change in OPTIONS.items():
        results[name] = run_option(dataclasses.replace(base, **change), teacher, data, held)
        print(name, {k: round(v, 4) for k, v in results[name].items()}, flush=True)
    settings = {"steps": args.steps, "lr": base.lr, "gate_target": base.gate_target}
    write_result(
        args.out,
        {"provenance": provenance("bench.experts_gates"), "settings": settings, "results": results},
    )


if __name__ == "__main__":
    main()
