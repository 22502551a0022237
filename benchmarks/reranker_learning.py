"""Does the CPU reranker learn? Plain-torch training of the profile's MiniLM cross-encoder on a run's mined groups,
with the listwise loss, the module and the parameter groups of the training job (no Ray, no DeepSpeed), printing the
training loss and the held-out accuracy: how often the positive outranks the negatives of a group whose skill no
training group has (chance: 1 / (1 + negatives)).

    python benchmarks/reranker_learning.py --run runs/local --steps 16 --lr 5e-5 --head-lr 2e-3    # the old profile
    python benchmarks/reranker_learning.py --run runs/local --steps 32 --lr 2e-4 --head-lr 5e-3    # the new one
    python benchmarks/reranker_learning.py --run runs/local --pool mean                             # mean pooling
"""

import argparse
import random
import time
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from skillrouter.corpus.ingest import read_skills
from skillrouter.training.data import group_skills
from skillrouter.training.loop import lr_lambda, param_groups
from skillrouter.training.modules import build_module


def mean_pooled(module):
    """The classification head read from the mean of the pair's token states instead of BERT's CLS pooler."""
    bert, head = module.backbone.bert, module.backbone.classifier

    def forward(self, batch):
        hidden = bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return head((hidden * mask).sum(1) / mask.sum(1)).squeeze(-1).float()
    module.wrapped.forward = types.MethodType(forward, module.wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/local", help="a main run's directory (corpus, mined groups)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--head-lr", type=float, default=5e-3)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--pool", choices=["cls", "mean"], default="cls")
    parser.add_argument("--held-out", type=int, default=120, help="validation groups")
    args = parser.parse_args()

    torch.manual_seed(0)
    random.seed(0)
    run = Path(args.run)
    skills = {s.id: s for s in read_skills(run / "corpus" / "skills.parquet")}
    groups = pq.read_table(run / "mined" / "groups.parquet").to_pylist()
    random.shuffle(groups)
    positives = sorted({g["positive_id"] for g in groups})
    random.shuffle(positives)
    held = set(positives[: len(positives) // 8])
    train = [g for g in groups if g["positive_id"] not in held]
    val = [g for g in groups if g["positive_id"] in held][: args.held_out]

    module = build_module("reranker", "minilm", args.max_length, 1.0, device="cpu")
    if args.pool == "mean":
        mean_pooled(module)
    inputs = module.wrapped

    def ids(group):
        chosen = group_skills(group["positive_id"], group["negatives"], args.negatives)
        return inputs.pair_ids([inputs.format_pair(group["query"], skills[i]) for i in chosen])

    def accuracy() -> float:
        module.eval()
        with torch.no_grad():
            right = sum(int(module._chunked(ids(g), inputs.forward).argmax()) == 0 for g in val)
        module.train()
        return right / len(val)

    optimizer = torch.optim.AdamW(param_groups(module, args.lr, 0.01, args.head_lr, inputs.new_parameters),
                                  lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.steps, int(0.1 * args.steps), "linear"))
    print(f"{args.steps} steps, lr {args.lr:g}, head {args.head_lr:g}, {args.pool} pooling: held-out accuracy "
          f"{accuracy():.3f} before (chance {1 / (args.negatives + 1):.3f}, ln(1 + negatives) = "
          f"{np.log(args.negatives + 1):.3f})", flush=True)
    started, losses, every = time.time(), [], max(1, args.steps // 4)
    for step in range(args.steps):
        batch = [train[(step * args.batch + j) % len(train)] for j in range(args.batch)]
        loss = module([[]] * len(batch), [ids(g) for g in batch])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        if (step + 1) % every == 0:
            print(f"  step {step + 1}: loss {np.mean(losses[-every:]):.3f}, held-out accuracy {accuracy():.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
