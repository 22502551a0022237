"""benchmarks/README.md's serving tables, built from the JSON files `serve_gpu.py` writes (never typed by hand):

    python benchmarks/results_table.py [--rerank on|off] [benchmarks/results/serve_gpu-*.json ...]
"""

import glob
import json
import sys


def table(result: dict, rerank: str | None = None) -> str:
    anchor = result.get("anchor", {})
    pairs = result.get("pairs", {})
    lines = [f"`{result['command']}`", "",
             f"{result['device']}, torch {result['torch']}, commit `{result['commit'][:12]}`, {result['started']}; "
             f"random {result['size']} models drawn in {result.get('models_s')} s; index build "
             f"{result.get('index_build_s')} s; {pairs.get('per_query')} pairs a request of "
             f"{pairs.get('mean_tokens')} tokens on average ({pairs.get('gflop_per_token')} GFLOP a token).", "",
             "Anchor (plain Hugging Face forward, same pairs): " + ", ".join(
                 f"{a['per_batch']} request(s) a batch {a['qps']} QPS ({a['ms_per_batch']} ms a batch)"
                 for a in anchor.values()) + ".", "",
             "| rerank | C | requests | QPS | p50 | p95 | p99 | server embed / search / rerank / total ms | "
             "non-2xx | tokens/s | MFU | x anchor |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in result.get("runs", []):
        if rerank is not None and r["rerank"] != (rerank == "on"):
            continue
        s = r["server_mean_ms"]
        stages = " / ".join(str(s[k]) for k in ("embed", "search", "rerank", "total"))
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else ""
        lines.append(f"| {'on' if r['rerank'] else 'off'} | {r['concurrency']} | {r['requests']} | {r['qps']} | "
                     f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {stages} | "
                     f"{sum(r['non_2xx'].values()) if r['non_2xx'] else 0} | {r.get('tokens_per_s', '')} | {mfu} | "
                     f"{r.get('x_anchor', '')} |")
    return "\n".join(lines)


def main() -> None:
    args = sys.argv[1:]
    rerank = None
    if args[:1] == ["--rerank"]:
        rerank, args = args[1], args[2:]
    paths = args or sorted(glob.glob("benchmarks/results/serve_gpu-*.json"))
    print("\n\n".join(table(json.loads(open(p).read()), rerank) for p in paths))


if __name__ == "__main__":
    main()
