"""The real pool's copies in one index: every skill of one name, embedded on this CPU, built and verified.

    .venv/bin/python benchmarks/index_copies_pool.py [--pool .gpu/pool.parquet] [--name brainstorming]

Registries publish a popular skill under many ids, some differing only past what the encoder reads (one vector,
several ids). Prints how many copies and distinct texts the name has, the pairs of different text with one vector,
and the index build's verification (ties counted); the build raises if verification fails.
"""

import argparse
import tempfile

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.index.build import build_index
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.retrieval.embeddings import embed_skills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", default=".gpu/pool.parquet", help="a corpus source (benchmarks/stage_gpu_inputs.py)")
    parser.add_argument("--name", default="brainstorming", help="the skill name whose copies are indexed")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--windows", type=int, default=2, help="the pool runs' windows (configs/pool-h200.yaml)")
    args = parser.parse_args()

    skills = [s for s in read_skills(args.pool) if s.name.lower() == args.name.lower()]
    if not skills:
        raise SystemExit(f"no skill named {args.name!r} in {args.pool}")
    print(f"{len(skills)} skills named {args.name!r}, {len({s.content_hash for s in skills})} distinct texts")
    spec = EncoderSpec(args.encoder, args.max_length, windows=args.windows)
    encoder = Encoder.load(spec)
    with tempfile.TemporaryDirectory() as run_dir:
        vectors = embed_skills(skills, spec, run_dir, embed=lambda texts: encoder.encode(texts, 32), log=print)
        sims = vectors @ vectors.T
        alike = [(skills[i].id, skills[j].id) for i in range(len(skills)) for j in range(i)
                 if sims[i, j] > 1 - 1e-5 and skills[i].content_hash != skills[j].content_hash]
        print(f"pairs of different text with one vector: {len(alike)}" + (f", e.g. {alike[0]}" if alike else ""))
        summary = build_index(skills, PipelineConfig(run_dir=run_dir), embeddings=vectors, log=print)
    print(f"verification: {summary['verify']}")


if __name__ == "__main__":
    main()
