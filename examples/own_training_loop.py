"""kdcrowd's pieces inside your own training loop (plain PyTorch, no kdcrowd.training).

1. crowd labels → validated sparse annotations → padded (N, L) tensors;
2. a Max-MIG crowd model (teacher) trained with its own loss;
3. a student trained on the teacher's hard predictions with GCE plus the MIG^f
   distillation loss towards the teacher's soft predictions.

Run: python examples/own_training_loop.py   (CPU, a few seconds)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from kdcrowd.data import Annotations
from kdcrowd.losses import MIGfDistillation, gce_loss
from kdcrowd.metrics import expertise_error, true_transitions_from_labels
from kdcrowd.models.backbones import MLP
from kdcrowd.models.crowd import MaxMIG


def main(seed: int = 0, steps: int = 300) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    k, n, d = 3, 900, 8
    centres = rng.normal(0, 2.5, (k, d))
    y = rng.integers(0, k, n)
    x = torch.tensor(centres[y] + rng.normal(0, 1, (n, d)), dtype=torch.float32)

    # Crowd labels as a platform exports them: 2 reliable workers, 4 who answer at random.
    rows = []
    for w in range(6):
        items = rng.choice(n, size=n // 2, replace=False)
        good = w < 2
        labels = np.where(good & (rng.random(len(items)) < 0.9), y[items], rng.integers(0, k, len(items)))
        rows.append(pd.DataFrame({"task": [f"img{i}" for i in items], "worker": f"w{w}", "label": labels}))
    ann = Annotations.from_long(pd.concat(rows), items=[f"img{i}" for i in range(n)])
    workers, labels = (torch.as_tensor(a) for a in ann.padded())

    teacher = MaxMIG(MLP(d, k), ann.n_workers, k)  # any backbone with features()/head works
    teacher.init_from_annotations(workers, labels)  # aggregator from majority-vote statistics
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, n, (128,))
        loss, _ = teacher.crowd_loss(x[idx], workers[idx], labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    with torch.no_grad():
        q = teacher.predict_proba(x)

    student = MLP(d, k)
    student.train()
    kd = MIGfDistillation(f="kl")
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, n, (128,))
        logits = student(x[idx])
        loss = gce_loss(logits, q[idx].argmax(1)) + kd(logits, q[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    truth = torch.as_tensor(y)
    teacher.eval()
    student.eval()
    t_true, rows = true_transitions_from_labels(ann, y)
    with torch.no_grad():
        out = {
            "majority_vote": float((torch.as_tensor(ann.vote_counts()).argmax(1) == truth).float().mean()),
            "teacher": float((q.argmax(1) == truth).float().mean()),
            "student": float((student(x).argmax(1) == truth).float().mean()),
            "teacher_matrix_mae": expertise_error(t_true, teacher.transition_matrices().numpy(), row_mask=rows)["mae_mean"],
        }
    return out


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key:>22}: {value:.3f}")
