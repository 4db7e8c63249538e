"""Time and memory of the chunked near-duplicate evaluation at scale.

Retrieval ranks for N queries against N database embeddings (D = 128) are
computed in ``chunk × chunk`` blocks; the full N×N matrix (10 GB of float32
at N = 50,000) is never allocated. This measures the wall time and the peak
resident memory for several N.

    python benchmarks/bench_similarity.py --sizes 5000,20000,50000
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from stabletrain.files import write_json
from stabletrain.similarity import retrieval_ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=2048)
    args = parser.parse_args()
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        g = torch.Generator().manual_seed(0)
        database = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1)
        queries = torch.nn.functional.normalize(database + 0.05 * torch.randn(n, args.dim, generator=g), dim=1)
        start = time.perf_counter()
        ranks = retrieval_ranks(queries, database, torch.arange(n), chunk_size=args.chunk)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results.append({"n": n, "dim": args.dim, "chunk": args.chunk, "seconds": seconds,
                        "peak_rss_mb": peak_mb, "dense_matrix_mb": n * n * 4 / 2**20,
                        "precision_at_1": float((ranks == 0).double().mean())})
        print(f"N={n:6d}: {seconds:6.1f} s, peak RSS {peak_mb:6.0f} MB "
              f"(a dense N×N float32 matrix would be {n * n * 4 / 2**20:,.0f} MB)", flush=True)
    write_json("benchmarks/results/similarity_scale.json", {"torch": str(torch.__version__), "results": results})


if __name__ == "__main__":
    main()
