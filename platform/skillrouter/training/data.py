"""Training data: mined groups -> token ids on a Ray Data actor pool -> length-grouped micro-batches per worker.

A group is one query, its positive skill and its first `negatives` hard negatives. Tokenizing happens once, on
Ray Data actors, through the same `EncoderInputs` / `RerankerInputs` that inference uses, so training sees exactly
the format that serving will. Each Ray Train worker reads its shard in windows, sorts a window by token count and
cuts it into micro-batches of similar cost (little padding, steady step times), in a seeded order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skillrouter.corpus.skill import Skill

WINDOW_BATCHES = 32  # micro-batches per length-sorting window: larger sorts better, smaller shuffles better


def held_out_skills(groups: pa.Table, share: float, seed: int) -> set[str]:
    """A seeded `share` of the groups' positive skills, whose queries no model trains on: the main job chooses the
    served system and fits the reranker's fusion weight on them (requests about skills no model has seen)."""
    ids = sorted(set(groups.column("positive_id").to_pylist()))
    count = int(round(len(ids) * share))
    return {ids[i] for i in np.random.default_rng(seed).permutation(len(ids))[:count]}


def sample_groups(groups: pa.Table, max_groups: int | None, seed: int, held_out: set[str] = frozenset()) -> pa.Table:
    """Groups in a seeded random order (a sample of `max_groups` when set); groups with no negative, and groups
    whose positive is `held_out`, are dropped."""
    groups = groups.filter(pc.greater(pc.list_value_length(groups.column("negatives")), 0))
    if held_out:
        groups = groups.filter(pc.invert(pc.is_in(groups.column("positive_id"), pa.array(sorted(held_out)))))
    order = np.random.default_rng(seed).permutation(groups.num_rows)
    if max_groups is not None:
        order = order[:max_groups]
    return groups.take(pa.array(order))


def group_skills(positive: str, negatives: Sequence[dict], k: int) -> list[str]:
    """The positive, then exactly `k` negatives: the first `k` as mined, cycled when a group has fewer (small
    corpora), so every group of a batch has the same shape."""
    ids = [n["skill_id"] for n in negatives]
    return [positive, *(ids[i % len(ids)] for i in range(k))]


class GroupTokenizer:
    """Ray Data actor: loads only the tokenizer and the input format, turns groups into token ids.

    Encoder rows: `query_ids` (the formatted query) and `doc_ids` (positive first, then negatives).
    Reranker rows: `doc_ids` holds one (query, skill) pair per skill, positive first; `query_ids` is empty."""

    def __init__(self, kind: str, spec, skills_ref: list, negatives: int, skill_text: str = "full"):
        import ray

        from skillrouter.models.encoder import EncoderInputs
        from skillrouter.models.reranker import RerankerInputs

        self.kind, self.negatives, self.skill_text = kind, negatives, skill_text
        self.inputs = (EncoderInputs if kind == "encoder" else RerankerInputs).from_spec(spec)
        self.skills: dict[str, Skill] = ray.get(skills_ref[0])

    def __call__(self, batch: pa.Table) -> pa.Table:
        query_ids, doc_ids, tokens = [], [], []
        for row in batch.to_pylist():
            skills = [self.skills[i] for i in group_skills(row["positive_id"], row["negatives"], self.negatives)]
            if self.kind == "encoder":
                q = self.inputs.tokenize([self.inputs.format_query(row["query"])])[0]
                docs = self.inputs.tokenize([self.inputs.format_skill(s, self.skill_text) for s in skills])
            else:
                q = []
                docs = self.inputs.pair_ids([self.inputs.format_pair(row["query"], s) for s in skills])
            query_ids.append(q)
            doc_ids.append(docs)
            tokens.append(len(q) + sum(len(d) for d in docs))
        return pa.table({"query_id": batch.column("query_id"), "query_ids": query_ids, "doc_ids": doc_ids,
                         "tokens": pa.array(tokens, pa.int64())})


def tokenized_dataset(kind: str, groups: pa.Table, skills: Sequence[Skill], spec, negatives: int, actors: int,
                      rows_per_block: int = 64, skill_text: str = "full"):
    """A Ray Dataset of tokenized groups; one block per `rows_per_block` groups so the actor pool shares work.
    `skill_text` is what an encoder reads of each skill (`Skill.routing_text`)."""
    import ray

    missing = {i for i in groups.column("positive_id").to_pylist()} - {s.id for s in skills}
    if missing:
        raise ValueError(f"{len(missing)} positives are not in the corpus (e.g. {sorted(missing)[:3]}): "
                         "train on the corpus the groups were mined from")
    skills_ref = [ray.put({s.id: s for s in skills})]
    blocks = [groups.slice(i, rows_per_block) for i in range(0, groups.num_rows, rows_per_block)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        GroupTokenizer, fn_constructor_kwargs={"kind": kind, "spec": spec, "skills_ref": skills_ref,
                                               "negatives": negatives, "skill_text": skill_text},
        batch_size=rows_per_block, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors))
    # the groups' order, not the actors' finishing order: `length_grouped` is deterministic for a given row order,
    # which is what makes two runs train alike and lets a resumed run skip exactly the micro-batches it trained on
    dataset.context.execution_options.preserve_order = True
    return dataset


def length_grouped(rows: Iterator[dict], batch_size: int, seed: int,
                   window_batches: int = WINDOW_BATCHES) -> Iterator[list[dict]]:
    """Micro-batches of `batch_size` rows of similar token count: each window of rows is sorted by `tokens`, cut,
    and its batches are yielded in a seeded random order. Deterministic for a given input order and seed, which is
    what lets a resumed worker skip the micro-batches it had already trained on."""
    rng = random.Random(seed)
    window: list[dict] = []

    def flush() -> Iterator[list[dict]]:
        window.sort(key=lambda r: r["tokens"])
        batches = [window[i:i + batch_size] for i in range(0, len(window), batch_size)]
        rng.shuffle(batches)
        yield from batches
        window.clear()

    for row in rows:
        window.append(row)
        if len(window) == batch_size * window_batches:
            yield from flush()
    if window:
        yield from flush()


def micro_batches_per_epoch(rows: int, batch_size: int, window_batches: int = WINDOW_BATCHES) -> int:
    """How many micro-batches `length_grouped` yields for `rows` rows (full windows, then the remainder)."""
    window = batch_size * window_batches
    full, rest = divmod(rows, window)
    return full * window_batches + -(-rest // batch_size)
