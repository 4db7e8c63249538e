"""LHC jet images: generation (Pythia 8 + FastJet), detector effects, taggers and their robustness.

Modules:

* :mod:`~stabletrain.jets.images` — constituents → 25×25 pT images, preprocessing, image mass;
* :mod:`~stabletrain.jets.generation` — ``stabletrain jets generate``: parallel, sharded, resumable HDF5 output;
* :mod:`~stabletrain.jets.events` — event-level pile-up: the cached minimum-bias pool and its overlay before
  clustering (``stabletrain jets generate --pileup MU``);
* :mod:`~stabletrain.jets.data` — jet files → train/test splits (pixels in TeV);
* :mod:`~stabletrain.jets.clouds` — the stored constituents as particle clouds (B×1×M×4), read in chunks;
* :mod:`~stabletrain.jets.cloud_models` — the particle-cloud taggers ``pfn``, ``efn`` and ``particlenet``;
* :mod:`~stabletrain.jets.cloud_perturbations` — pT smearing, η/φ jitter and soft-particle injection;
* :mod:`~stabletrain.jets.detector` — ``pileup-MU`` (the image-space approximation), ``smear-A``, ``deadcells-F``, ``threshold-T``,
  ``shift-K`` and ``coarse-G`` distortions;
* :mod:`~stabletrain.jets.tagging` — the CNN tagger, the mass-window baseline, AUC and rejection;
* :mod:`~stabletrain.jets.study` — attacks with physical constraints and the sparse-versus-dense study;
* :mod:`~stabletrain.jets.demo` — ``stabletrain demo --data jets``.

Only generation and pile-up need Pythia and FastJet (``pip install "stabletrain[hep]"``); they are
imported when used, so the rest works without them.
"""
