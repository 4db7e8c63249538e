"""The jets extension's registrations: how stabletrain finds jet models, data, tasks, detector effects and commands.

stabletrain's core knows no extension by name. This package declares

.. code-block:: toml

    [project.entry-points."stabletrain.plugins"]
    jets = "stabletrain.jets.plugin:register"

exactly as a third-party package would, and :func:`register` fills the
registries with lazy ``'module:attribute'`` entries, so that nothing here
imports Pythia, FastJet or h5py until a jet entry is used: the CNN tagger
``jet_cnn`` and the particle-cloud taggers ``pfn``, ``efn`` and
``particlenet`` (:mod:`stabletrain.jets.cloud_models`), the ``jets`` task,
the ``.h5`` source, the detector effects, the cloud perturbations
``particle``, ``particle-smear``, ``particle-jitter`` and ``particle-soft``
(:mod:`stabletrain.jets.cloud_perturbations`) and the ``jets`` command.
"""

from __future__ import annotations

__all__ = ["register", "is_jet_source", "CLOUD_DETECTOR_EFFECTS", "CLOUD_MODELS", "CLOUD_PERTURBATIONS",
           "DETECTOR_EFFECTS"]

#: Detector-effect distortion families and the classes that implement them.
DETECTOR_EFFECTS = {"pileup": "Pileup", "smear": "Smear", "deadcells": "DeadCells", "threshold": "Threshold",
                    "shift": "Shift", "coarse": "Coarsen"}

#: Particle-cloud taggers (``--model NAME`` with ``--task jets``) and the classes that implement them.
CLOUD_MODELS = {"pfn": "ParticleFlowNetwork", "efn": "EnergyFlowNetwork", "particlenet": "ParticleNet"}
#: Perturbations of particle clouds (``--cloud-noise NAME``) and the classes that implement them.
CLOUD_PERTURBATIONS = {"particle": "ParticleNoise", "particle-smear": "ParticleSmear",
                       "particle-jitter": "ParticleJitter", "particle-soft": "SoftInjection"}

#: Detector effects on particle clouds and the classes that implement them.
CLOUD_DETECTOR_EFFECTS = {"cloud_pileup": "CloudPileup", "cloud_smear": "CloudSmear",
                          "cloud_deadcells": "CloudDeadCells", "cloud_threshold": "CloudThreshold",
                          "cloud_shift": "CloudShift"}


def is_jet_source(source: str) -> bool:
    """Whether a data source string names jet files: ``.h5``/``.hdf5`` paths, lists or globs of them."""
    first = source.split(",")[0].strip().lower()
    return first.endswith((".h5", ".hdf5"))


def load_jet_source(source: str, *, image_size: int | None, split_seed: int, test_fraction: float):
    """The ``DATA`` loader of jet files (see :func:`stabletrain.jets.data.load_jets`)."""
    from ..checks import StableTrainError
    from .data import load_jets

    if image_size is not None:
        raise StableTrainError("jet images keep their generated frame; drop --image-size for .h5 data")
    # the generic commands (evaluate --split all, compare's certification) take whole tensors; the jets task's own
    # loader (JetTaggingTask.load_data) reads the images lazily, in chunks, for training
    return load_jets(source, split_seed=split_seed, test_fraction=test_fraction, lazy=False)


def register() -> None:
    """Fill stabletrain's registries with the jets extension's entries (called once, from the entry point)."""
    from ..registry import COMMANDS, DATA, DEMOS, DISTORTIONS, MODELS, PERTURBATIONS, TASKS

    MODELS.register("jet_cnn", "stabletrain.jets.tagging:JetTagger", override=True)
    for name, cls in CLOUD_MODELS.items():
        MODELS.register(name, f"stabletrain.jets.cloud_models:{cls}", override=True)
    for name, cls in CLOUD_PERTURBATIONS.items():
        PERTURBATIONS.register(name, f"stabletrain.jets.cloud_perturbations:{cls}", override=True)
    TASKS.register("jets", "stabletrain.jets.tagging:JetTaggingTask", override=True)
    DATA.register("jets", load_jet_source, predicate=is_jet_source, override=True)
    for family, cls in DETECTOR_EFFECTS.items():
        if not DISTORTIONS.registered(family):  # the detector module registers the classes themselves on import
            DISTORTIONS.register(family, f"stabletrain.jets.detector:{cls}")
    for family, cls in CLOUD_DETECTOR_EFFECTS.items():
        if not DISTORTIONS.registered(family):
            DISTORTIONS.register(family, f"stabletrain.jets.cloud_detector:{cls}")
    COMMANDS.register("jets", "stabletrain.jets.cli:COMMAND", override=True)
    DEMOS.register("jets", "stabletrain.jets.cli:DEMO", override=True)
