"""Jet generation rate per worker: Pythia initialization against reseeding, and event-level pile-up.

Measures, in one process (one worker) and in CPU seconds of that process:

* the cost of a Pythia ``init()`` and of a reseed (``pythia.rndm.init``);
* selected jets per CPU-second without pile-up, with a fresh Pythia per
  chunk (the old scheme) and with one reused instance (the current one);
* the same with event-level pile-up at each ``--mu`` from a pool of
  ``--pool`` minimum-bias events (pool generation timed separately), and the
  trimmed jets' median mass.

The same chunk seeds are used in every configuration, so the hard events
are the same. Run niced on a shared machine:

    nice -n 10 python benchmarks/bench_pileup.py --events 800 --mu 20 50

Writes ``benchmarks/results/pileup.json``. Needs the physics extras.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from stabletrain.jets import generation
from stabletrain.jets.events import EventPileup, build_minbias_pool
from stabletrain.jets.generation import Selection, _make_pythia, generate_chunk, pythia_settings

RESULTS = Path(__file__).resolve().parent / "results" / "pileup.json"


def _rate(process: str, events: int, chunk: int, pileup: EventPileup | None, fresh: bool) -> dict:
    jets, masses, cpu, made = 0, [], 0.0, 0
    for k in range(max(events // chunk, 1)):
        if fresh:
            generation._PYTHIAS.clear()  # the old scheme: a new Pythia, initialized, for every chunk
        started = time.process_time()
        out = generate_chunk(process, chunk, 1000 + k, Selection(), banner=False, init_seed=77, pileup=pileup)
        cpu += time.process_time() - started
        jets += len(out["jet_pt"])
        made += int(out["events"])
        masses.append(out["jet_mass"])
    mass = np.concatenate(masses)
    return {"process": process, "events": made, "jets": jets, "cpu_s": cpu, "jets_per_cpu_s": jets / cpu,
            "events_per_cpu_s": made / cpu, "median_mass": float(np.median(mass)) if len(mass) else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=800, help="hard events per class and configuration")
    parser.add_argument("--chunk", type=int, default=400, help="events per chunk (the generator's default)")
    parser.add_argument("--mu", type=float, nargs="*", default=[20.0, 50.0])
    parser.add_argument("--pool", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["STABLETRAIN_CACHE"] = cache  # a cold cache: the pool is generated and timed
        # the costs of initializing and of reseeding
        inits = []
        for process in ("w", "qcd"):
            started = time.process_time()
            pythia = _make_pythia(pythia_settings(process, Selection(), seed=5))
            inits.append(time.process_time() - started)
        started = time.process_time()
        for seed in range(1, 1001):
            pythia.rndm.init(seed)
        reseed = (time.process_time() - started) / 1000
        print(json.dumps({"init_cpu_s": inits, "reseed_cpu_s": reseed}))
        generate_chunk("w", 20, 1, banner=False)  # imports and the FastJet banner out of the way

        rows = []
        for fresh in (True, False):
            for process in ("w", "qcd"):
                rows.append({"mu": 0.0, "pythia": "fresh per chunk" if fresh else "reused",
                             **_rate(process, args.events, args.chunk, None, fresh)})
                print(json.dumps(rows[-1]))
        started = time.process_time()
        pool = build_minbias_pool(args.pool, seed=0)
        pool_cpu = time.process_time() - started
        print(json.dumps({"pool_events": args.pool, "pool_cpu_s": pool_cpu,
                          "mean_particles": float(pool.multiplicity().mean())}))
        for mu in args.mu:
            pileup = EventPileup(mu, args.pool, 0).with_pool(pool)
            for process in ("w", "qcd"):
                rows.append({"mu": mu, "pythia": "reused", **_rate(process, args.events, args.chunk, pileup, False)})
                print(json.dumps(rows[-1]))
    base = {r["process"]: r for r in rows if r["mu"] == 0 and r["pythia"] == "reused"}
    for r in rows:
        r["rate_vs_no_pileup"] = r["jets_per_cpu_s"] / base[r["process"]]["jets_per_cpu_s"]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, load average at the end {load}",
              "events_per_configuration": args.events, "chunk_events": args.chunk, "init_cpu_s": inits,
              "reseed_cpu_s": reseed, "pool_events": args.pool, "pool_cpu_s": pool_cpu, "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"\n| μ | Pythia | process | events | jets | CPU s | jets/CPU-s | × no pile-up | median mass (GeV) |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mu']:g} | {r['pythia']} | {r['process']} | {r['events']} | {r['jets']} | {r['cpu_s']:.1f} | "
              f"{r['jets_per_cpu_s']:.1f} | {r['rate_vs_no_pileup']:.2f} | {r['median_mass']:.0f} |")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
