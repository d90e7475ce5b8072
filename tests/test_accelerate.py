"""The training loop on two processes (torchrun + Accelerator, CPU, gloo): ranks stay in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .stack import free_port

pytestmark = pytest.mark.slow

SCRIPT = """
import hashlib, json, sys
from pathlib import Path
import torch
from accelerate import Accelerator
from distilflow.config import StudentConfig
from distilflow.decoding.greedy import EvalClip
from distilflow.student.build import make_student, save_student
from distilflow.testing import tiny_whisper
from distilflow.training.loop import NullTracker, Trainer, TrainExample
from distilflow.training.data import decoder_example, prompt_ids

out = Path(sys.argv[1])
acc = Accelerator(cpu=True)
teacher, processor = tiny_whisper(seed=1, decoder_layers=4)
teacher.requires_grad_(False)
torch.manual_seed(0)
student, _ = make_student(teacher, 2)
student.model.encoder.requires_grad_(False)
gen = teacher.generation_config
train = []
for i in range(16):
    lang = ("en", "fr")[i % 2]
    inputs, labels = decoder_example([(7 * i + j) % 300 for j in range(5)], prompt_ids(gen, lang),
                                     int(gen.eos_token_id))
    train.append(TrainExample(f"h{i}", lang, inputs, labels))

def states(hashes):
    return torch.stack([torch.randn(1500, 64, generator=torch.Generator().manual_seed(int(h[1:])))
                        for h in hashes])

cfg = StudentConfig(init="teacher", decoder_layers=2, layer_ids=[], out_dir=str(out),
    freeze_encoder=True, cache_encoder=False, teacher_logits_mb=64, alpha_ce=1.0, beta_kd=1.0,
    temperature=2.0,
    language_temperature=1.0, dev_fraction=0.2, max_steps=4, batch_size=2, grad_accum=1, lr=1e-3,
    warmup_steps=1, weight_decay=0.0, max_grad_norm=1.0, eval_every=4, eval_max_new_tokens=2,
    save_every=2, seed=0, device="cpu", processes=2, progress=False)
trainer = Trainer(student, teacher, processor, cfg, train, [EvalClip("h0", "en", "x")], states,
                  None, out, "fp", torch.device("cpu"), accelerator=acc,
                  save_fn=save_student)
state = trainer.run(NullTracker())
def raw(model):
    return b"".join(t.detach().contiguous().numpy().tobytes() for t in model.state_dict().values())

weights, start = raw(trainer.student), raw(make_student(teacher, 2)[0])
(out / f"rank{acc.process_index}.json").write_text(json.dumps({
    "step": state.step, "world": acc.num_processes, "digest": hashlib.sha256(weights).hexdigest(),
    "moved": weights != start}))
"""


def test_two_processes_train_in_lockstep(tmp_path: Path) -> None:
    script = tmp_path / "train_ranks.py"
    script.write_text(SCRIPT, encoding="utf-8")
    # torchrun (what `accelerate launch --multi_gpu` runs on GPUs); Accelerator reads its env,
    # and on CPU the ranks talk over gloo on 127.0.0.1
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert all(r["world"] == 2 and r["step"] == 4 and r["moved"] for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # DDP kept the replicas identical
    assert (tmp_path / "out" / "checkpoints" / "latest.json").exists()  # written by rank 0
    assert (tmp_path / "out" / "best" / "latest.json").exists()
