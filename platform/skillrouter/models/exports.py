"""What a trained export carries for other tools, beside its Hugging Face weights: an encoder loads as
`SentenceTransformer(path)` with this project's pooling, normalisation and query prompt; a BERT-style reranker as
`CrossEncoder(path)` giving this project's scores (its logits: no sigmoid); a Qwen3 reranker stays a causal LM read
in the official yes/no format (its card says how). Each has a model card (`README.md` with Hub metadata).

The files are written by hand (sentence-transformers' classic layout, which its versions since 2 read), so training
does not need sentence-transformers; tests/test_exports.py loads them with it and compares the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from skillrouter.models.encoder import DEFAULT_TASK
from skillrouter.models.loading import BUNDLED_MINILM, MODEL_CARD, is_decoder
from skillrouter.models.reranker import DEFAULT_INSTRUCTION, PREFIX, SUFFIX

HUB_NAMES = {BUNDLED_MINILM: "sentence-transformers/all-MiniLM-L6-v2"}
IDENTITY = "torch.nn.modules.linear.Identity"


def query_prompt(task: str = DEFAULT_TASK) -> str:
    """A decoder encoder's query prefix (`EncoderInputs.format_query` puts the query right after it)."""
    return f"Instruct: {task}\nQuery:"


def _config(out: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(out)


def write_sentence_transformers(out_dir: str | Path, max_length: int, task: str = DEFAULT_TASK) -> None:
    """modules.json (Transformer -> Pooling -> Normalize), the pooling of `models.encoder` (the last token for a
    decoder, the mask's mean otherwise), `max_length`, and the query prompt as the named prompt `query` (a decoder's
    only: a BERT-style encoder reads queries as they are)."""
    out = Path(out_dir)
    config = _config(out)
    decoder = is_decoder(config)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    pooling = {"word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": not decoder, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
               "pooling_mode_lasttoken": decoder, "include_prompt": True}
    prompts = {"query": query_prompt(task) if decoder else "", "document": ""}
    files = {"modules.json": modules, "1_Pooling/config.json": pooling,
             "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
             "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "prompts": prompts,
                                                   "default_prompt_name": None, "similarity_fn_name": "cosine"}}
    (out / "2_Normalize").mkdir(exist_ok=True)
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=2) + "\n")


def write_cross_encoder(out_dir: str | Path) -> None:
    """A BERT-style reranker's config names the identity as its activation: `CrossEncoder.predict` then gives the
    logits `Reranker.score` gives (its default for one label would be their sigmoid). A decoder is left as it is."""
    out = Path(out_dir)
    path = out / "config.json"
    config = json.loads(path.read_text())
    if is_decoder(_config(out)):
        return
    config["sentence_transformers"] = {**config.get("sentence_transformers", {}), "activation_fn": IDENTITY}
    path.write_text(json.dumps(config, indent=2) + "\n")


def write_model_card(out_dir: str | Path, info: dict, hyperparameters: dict | None = None,
                     evaluation: str | None = None) -> Path:
    """README.md: Hub metadata (base model, library, task, tags), how to load it, the data, steps and
    hyperparameters of its training run (`info`, as the job records it in skillrouter.json) and, when given, the
    run's evaluation table (markdown)."""
    out = Path(out_dir)
    kind, base = info.get("kind", "encoder"), str(info.get("base_model", ""))
    decoder = is_decoder(_config(out))
    base_id = HUB_NAMES.get(base, base)
    if kind == "encoder":
        library, task = "sentence-transformers", "sentence-similarity"
        use = ("from sentence_transformers import SentenceTransformer\n\nmodel = SentenceTransformer(PATH)\n"
               "queries = model.encode([\"merge these PDF files\"], prompt_name=\"query\")\n"
               "skills = model.encode([\"name | description | body\"])  # a skill's full text\n"
               "scores = model.similarity(queries, skills)")
        fmt = (f"Queries take the named prompt `query` ({json.dumps(query_prompt())} for a decoder, none for a "
               "BERT-style encoder); a skill is `name | description | body`. Pooling: "
               f"{'the last token' if decoder else 'the mean over the mask'}, then L2 normalisation.")
    elif decoder:
        library, task = "transformers", "text-ranking"
        use = ("from skillrouter.models.reranker import Reranker\n\nreranker = Reranker.load(PATH)\n"
               "scores = reranker.score(query, skills)  # logit('yes') - logit('no')")
        fmt = (f"The official Qwen3-Reranker format: {json.dumps(PREFIX)} + `<Instruct>: {DEFAULT_INSTRUCTION}\\n"
               f"<Query>: {{query}}\\n<Document>: {{name | description | body}}` + {json.dumps(SUFFIX)}; the score "
               "is logit('yes') - logit('no') at the last position (its sigmoid is P(yes)).")
    else:
        library, task = "sentence-transformers", "text-ranking"
        use = ("from sentence_transformers import CrossEncoder\n\nmodel = CrossEncoder(PATH)\n"
               "scores = model.predict([(query, \"name | description | body\")])  # logits, higher is better")
        fmt = "Pairs (query, `name | description | body`); the score is the classifier's logit (no activation)."
    final = info.get("final") or {}
    rows = [("base model", base_id), ("training groups", info.get("groups")), ("skill text", info.get("skill_text")),
            ("steps", info.get("steps")), ("max_length", info.get("max_length")), ("workers", info.get("world_size")),
            ("device", info.get("device")), ("final loss", final.get("loss")),
            ("training seconds", info.get("train_seconds")), ("run fingerprint", info.get("fingerprint"))]
    rows += sorted((hyperparameters or {}).items())
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)
    meta = {"base_model": base_id, "library_name": library, "pipeline_tag": task,
            "tags": ["skillrouter", "agent-skills", "retrieval", "reranking" if kind == "reranker" else "embeddings"]}
    front = "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items())
    text = (f"---\n{front}\n---\n\n# skillrouter {kind}\n\nFine-tuned by skillrouter to route a user's request to "
            f"the agent skill that serves it (the SkillRouter method, arXiv 2603.22455), from `{base_id}`, on "
            "synthetic queries with mined hard negatives over the run's skill corpus (the queries of the held-out "
            f"validation skills excluded).\n\n## Use\n\n```python\n{use}\n```\n\n{fmt}\n\n## Training\n\n"
            f"| setting | value |\n| --- | --- |\n{table}\n")
    text += f"\n## Evaluation\n\n{evaluation.strip()}\n" if evaluation else \
        "\n## Evaluation\n\nThe run's report (`RUN_DIR/report/report.md`) holds its evaluation.\n"
    (out / MODEL_CARD).write_text(text)
    return out / MODEL_CARD


def write_exports(out_dir: str | Path, info: dict, hyperparameters: dict | None = None) -> None:
    """Everything above for one training export (`info`: its skillrouter.json)."""
    if info.get("kind") == "encoder":
        write_sentence_transformers(out_dir, int(info["max_length"]))
    else:
        write_cross_encoder(out_dir)
    write_model_card(out_dir, info, hyperparameters)


def set_card_evaluation(out_dir: str | Path, evaluation: str) -> bool:
    """Put the run's evaluation (markdown) into an export's model card, in place of its Evaluation section; False
    when the folder has no card. The card is not part of the weights' version (`loading.model_version`), so caches
    keyed by it stay valid."""
    card = Path(out_dir) / MODEL_CARD
    if not card.is_file():
        return False
    text = card.read_text()
    head = text.split("\n## Evaluation\n", 1)[0].rstrip("\n")
    card.write_text(f"{head}\n\n## Evaluation\n\n{evaluation.strip()}\n")
    return True
