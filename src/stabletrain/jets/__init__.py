"""LHC jet images: generation (Pythia 8 + FastJet), detector effects, taggers and their robustness.

Modules:

* :mod:`~stabletrain.jets.images` — constituents → 25×25 pT images, preprocessing, image mass;
* :mod:`~stabletrain.jets.generation` — ``stabletrain jets generate``: parallel, sharded, resumable HDF5 output;
* :mod:`~stabletrain.jets.data` — jet files → train/test splits (pixels in TeV);
* :mod:`~stabletrain.jets.detector` — ``pileup-MU``, ``smear-A``, ``deadcells-F``, ``threshold-T``,
  ``shift-K`` and ``coarse-G`` distortions;
* :mod:`~stabletrain.jets.tagging` — the CNN tagger, the mass-window baseline, AUC and rejection;
* :mod:`~stabletrain.jets.study` — attacks with physical constraints and the sparse-versus-dense study;
* :mod:`~stabletrain.jets.demo` — ``stabletrain demo --data jets``.

Only generation and pile-up need Pythia and FastJet (``pip install "stabletrain[hep]"``); they are
imported when used, so the rest works without them.
"""
