"""Jet-image generation rate: 1 worker against 2, same seed and settings (so the same output).

Run on a quiet machine:  python benchmarks/bench_generation.py --n 1600 --write-docs
Needs the physics extras: pip install "stabletrain[hep]".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from stabletrain.jets.generation import GenerationConfig, generate_jets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1600)
    parser.add_argument("--signal", default="w")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rows = []
    digests = set()
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}.h5"
            started = time.perf_counter()
            summary = generate_jets(GenerationConfig(signal=args.signal, n=args.n, seed=7), out, workers=workers,
                                    progress=False)
            seconds = time.perf_counter() - started
            digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
            events = sum(summary["events"].values())
            rows.append({"workers": workers, "seconds": seconds, "jets_per_s": args.n / seconds,
                         "events_per_s": events / seconds, "pass_fraction": summary["pass_fraction"]})
            print(json.dumps(rows[-1]))
    speedup = rows[1]["jets_per_s"] / rows[0]["jets_per_s"]
    print(f"2 workers / 1 worker: {speedup:.2f}×; identical output: {len(digests) == 1}")
    if args.write_docs:
        from _docs import replace_block

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        lines = [f"{args.n} {args.signal.upper()}/QCD jets (half each), seed 7, wall time including Pythia "
                 f"initialization and the HDF5 write; {platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} cores, load average {load:.1f} at the end.", "",
                 "| workers | seconds | jets/s | events/s | pass fraction (signal, QCD) |", "|---:|---:|---:|---:|---|"]
        for r in rows:
            pf = r["pass_fraction"]
            lines.append(f"| {r['workers']} | {r['seconds']:.1f} | {r['jets_per_s']:.1f} | {r['events_per_s']:.0f} | "
                         f"{pf[args.signal]:.2f}, {pf['qcd']:.2f} |")
        lines += ["", f"Two workers: **{speedup:.2f}×** one worker. Both files are byte-identical: "
                      f"{'yes' if len(digests) == 1 else 'NO'}."]
        replace_block("<!-- jets-generation:start -->", "<!-- jets-generation:end -->", lines,
                      "Jet-image generation (Pythia 8 + FastJet)")


if __name__ == "__main__":
    main()
