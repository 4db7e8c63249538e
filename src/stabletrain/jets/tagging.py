"""Jet tagging: the CNN tagger, its training task, the mass-window baseline and the metrics physicists quote.

The tagger reads images in TeV (see :mod:`stabletrain.jets.data`) and
transforms them inside the model, as all stabletrain models normalize their
own input:

* ``input='log'``: ``log(1 + x / 1 GeV)``, scaled to about [0, 1]; it
  compresses the steep pT spectrum of the cells, so soft structure counts;
* ``input='standardize'``: per-pixel ``(x − mean) / std`` of the training
  images, the classic jet-image preprocessing;
* ``input='linear'``: the pixel values unchanged, for images already scaled
  (the sparse-versus-dense study uses it, so no data statistics enter).

Scores are the softmax probability of the signal class. Metrics are the ROC
AUC and the background rejection ``1/ε_B`` at signal efficiencies of 30 % and
50 %, each with what it rests on (:func:`tagging_metrics`): the AUC with its
DeLong 95 % interval and the numbers of signal and background jets, each
rejection with the number of background jets passing its cut and the exact
(Clopper-Pearson) interval. The physics baseline scores a jet by
``−|m − m_W|`` with the mass taken from the image, so the baseline also sees
every detector effect.

Example:
    >>> import torch
    >>> tagger = JetTagger(width=4)
    >>> tagger(torch.rand(2, 1, 25, 25) * 0.01).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checks import StableTrainError
from ..data import DataSplit, ImageDataset
from ..data.order import DEFAULT_SHUFFLE_WINDOW, block_shuffled_order
from ..distortions import parse_distortions
from ..devices import device_of as _device_of
from ..evaluation import distort_examples, predict_logits
from ..metrics import roc_auc, working_point
from ..stats import auc_interval, format_interval, rejection_interval
from ..models import register_model
from ..tasks import ClassificationTask, index_batches
from .data import PIXEL_UNIT_GEV
from .images import ImageSpec, image_mass

__all__ = [
    "EFFICIENCIES",
    "JET_INPUTS",
    "W_MASS",
    "JetTagger",
    "JetTaggingTask",
    "describe_counts",
    "evaluate_taggers",
    "format_auc",
    "format_rejection",
    "mass_window_scores",
    "tagger_scores",
    "tagging_metrics",
    "working_point_interval",
]

JET_INPUTS = ("log", "standardize", "linear")
W_MASS = 80.4
TOP_MASS = 172.5
EFFICIENCIES = (0.3, 0.5)
_GEV = 1.0 / PIXEL_UNIT_GEV
#: The default angular budget (rad) of the attack cloud taggers are trained against: half a cell of the jet images.
CLOUD_ATTACK_ANGLE = 0.05


class JetTagger(nn.Module):
    """A CNN for jet images: input transform, three convolution stages, a dense head.

    Jet images are pre-processed so that position carries meaning, so the
    head is dense over the last feature map, not globally pooled.

    Args:
        in_channels: image channels (1 for pT images).
        num_classes: output logits (2: background, signal).
        width: channels of the first convolution.
        image_size: side of the square images.
        input: ``'log'``, ``'standardize'`` or ``'linear'``.
        mean, std: per-pixel statistics (``image_size²`` values) for ``'standardize'``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16, image_size: int = 25,
                 input: str = "log", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if input not in JET_INPUTS:
            raise StableTrainError(f"unknown jet input transform {input!r}; known: {', '.join(JET_INPUTS)}")
        if image_size < 8 or width < 1 or num_classes < 2:
            raise StableTrainError("JetTagger needs image_size >= 8, width >= 1, num_classes >= 2")
        self.input = input
        self.image_size = image_size
        pixels = image_size * image_size
        mean_t = torch.zeros(pixels) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.ones(pixels) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if mean_t.numel() != pixels or std_t.numel() != pixels:
            raise StableTrainError(f"standardization needs {pixels} per-pixel values, got {mean_t.numel()}")
        self.register_buffer("mean", mean_t.view(1, 1, image_size, image_size))
        self.register_buffer("std", std_t.clamp_min(1e-6).view(1, 1, image_size, image_size))

        def block(cin: int, cout: int, kernel: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.body = nn.Sequential(block(in_channels, width, 5), nn.MaxPool2d(2),
                                  block(width, 2 * width, 3), nn.MaxPool2d(2),
                                  block(2 * width, 2 * width, 3), nn.Flatten())
        side = image_size // 4
        self.feature_dim = 64
        self.embed = nn.Sequential(nn.Linear(2 * width * side * side, self.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise StableTrainError(f"JetTagger expects B×C×{self.image_size}×{self.image_size} images, "
                                   f"got {tuple(x.shape)}")
        if self.input == "log":
            return torch.log1p(x.clamp_min(0.0) / _GEV) / math.log1p(0.3 / _GEV)
        if self.input == "linear":
            return x
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(self.transform(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


register_model("jet_cnn", JetTagger)


#: Added to every pixel's std, as a fraction of the mean std over pixels (see :func:`_pixel_stats`).
STD_FLOOR = 0.1


def _pixel_stats(data: DataSplit) -> tuple[list[float], list[float]]:
    """Per-pixel mean and std of the training images, the std raised by ``STD_FLOOR`` × its mean.

    Cells that are (almost) always empty have a std near zero; dividing by it
    would turn a deposit of a fraction of a GeV there into a huge input, so a
    tagger would be trivially fooled (it was, before the floor: 0.5 % of the
    brightest cell flipped every decision).
    """
    from .data import pixel_moments

    mean, std = pixel_moments(data.train.x)  # streamed in chunks: the images may be read lazily from the files
    std = std + STD_FLOOR * std.mean()
    return [round(float(v), 9) for v in mean], [round(float(v), 9) for v in std.clamp_min(1e-9)]


class JetTaggingTask(ClassificationTask):
    """Signal-versus-background tagging of jets, as images or as particle clouds; scored by test ROC AUC.

    The model decides the input: ``jet_cnn`` (``--model small_cnn``, the
    default) reads the files' jet images; a cloud tagger (``pfn``, ``efn``,
    ``particlenet``, or any model factory with ``input_kind = 'cloud'``)
    reads the stored constituents as clouds (:mod:`stabletrain.jets.clouds`),
    in chunks from the HDF5 files, with the same train/test split.

    Args:
        noise: the perturbation of jet images for the methods that add noise
            (``gaussian``, ``gaussian-noisy``, ``stability``, ``jsd-gaussian``, ``consistency``): ``'relative'``
            (default; multiplicative on occupied cells, so a sparse image
            stays as sparse) or ``'gaussian'`` (additive on every cell); the
            method's ``sigma`` is its size (relative units, or TeV).
        jet_input: the input transform of the ``jet_cnn`` tagger: ``'log'``
            (default), ``'standardize'`` or ``'linear'``.
        cloud_noise: the perturbation of particle clouds for the same
            methods (:mod:`stabletrain.jets.cloud_perturbations`):
            ``'particle'`` (default: one interaction's soft particles, pT
            smearing of relative resolution ``sigma``, one-cell jitter),
            ``'particle-smear'``, ``'particle-jitter'`` or ``'particle-soft'``.
        cloud_attack_angle, cloud_attack_particles, cloud_attack_budget_gev:
            the physical attack on particle clouds that the adversarial
            methods (``adversarial``, ``trades``, ``fgsm-adversarial``)
            train against (:class:`~stabletrain.jets.cloud_attacks.CloudAttack`):
            their ``adv_epsilon`` is the relative pT change per particle,
            and each particle may also move by ``cloud_attack_angle`` rad in
            η and φ (default 0.05, half a cell of the jet images), with
            ``cloud_attack_particles`` soft particles of
            ``cloud_attack_budget_gev`` GeV in all injected (default none).
            Image taggers keep the L∞ attack in TeV per cell.
        shuffle_block: the training order of each epoch. 0 (default): a
            full random permutation. ``N`` ≥ 1: the block shuffle of
            :func:`stabletrain.data.order.block_shuffled_order`, blocks of
            ``N`` consecutive training jets in random order, jets shuffled
            within windows of ``shuffle_window`` blocks, so that files larger
            than the reader's cache are read about once per epoch (256
            matches the generator's storage chunks). Lazy and in-memory
            data get the same order.
        shuffle_window: blocks shuffled together (default 32); only with
            ``shuffle_block``.

    ``noise`` and ``jet_input`` apply to images only and ``cloud_noise`` and
    ``cloud_attack_*`` to clouds only; setting one for the other kind of
    model is an error.

    Example:
        >>> task = JetTaggingTask()
        >>> task.is_cloud_model("pfn"), task.is_cloud_model("small_cnn")
        (True, False)
    """

    name = "jets"
    metric = "test_auc"
    supplied_model_args = ("in_channels", "num_classes", "image_size", "input", "mean", "std")

    def __init__(self, noise: str = "relative", jet_input: str = "log", cloud_noise: str = "particle",
                 cloud_attack_angle: float = CLOUD_ATTACK_ANGLE, cloud_attack_particles: int = 0,
                 cloud_attack_budget_gev: float = 0.0, shuffle_block: int = 0,
                 shuffle_window: int = DEFAULT_SHUFFLE_WINDOW) -> None:
        from ..registry import PERTURBATIONS
        from .cloud_attacks import CloudAttack
        from .cloud_perturbations import is_cloud_perturbation

        for option, value, clouds in (("noise", noise, False), ("cloud_noise", cloud_noise, True)):
            if not isinstance(value, str) or value not in PERTURBATIONS:
                raise StableTrainError(f"unknown {option} model {value!r}; known: "
                                       f"{', '.join(self._noises(clouds))}")
            if is_cloud_perturbation(PERTURBATIONS.get(value)) != clouds:
                raise StableTrainError(f"{option} {value!r} perturbs {'images' if clouds else 'particle clouds'}; "
                                       f"{option} takes {', '.join(self._noises(clouds))}")
        if jet_input not in JET_INPUTS:
            raise StableTrainError(f"unknown jet input transform {jet_input!r}; known: {', '.join(JET_INPUTS)}")
        self.noise, self.jet_input, self.cloud_noise = noise, jet_input, cloud_noise
        self.cloud_attack = CloudAttack(angle=cloud_attack_angle, particles=cloud_attack_particles,
                                        budget_gev=cloud_attack_budget_gev)
        for option, value, least in (("shuffle_block", shuffle_block, 0), ("shuffle_window", shuffle_window, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise StableTrainError(f"{option} must be an integer >= {least}, got {value!r}")
        if shuffle_window != DEFAULT_SHUFFLE_WINDOW and not shuffle_block:
            raise StableTrainError("shuffle_window has no effect without shuffle_block")
        self.shuffle_block, self.shuffle_window = shuffle_block, shuffle_window

    def batches(self, data: DataSplit, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Index batches of one epoch: a full shuffle, or the block shuffle with ``shuffle_block``."""
        if not self.shuffle_block:
            return super().batches(data, batch_size, generator)
        order = block_shuffled_order(len(data.train), self.shuffle_block, self.shuffle_window, generator=generator)
        return index_batches(order, batch_size)

    @staticmethod
    def _noises(clouds: bool) -> list[str]:
        from ..registry import PERTURBATIONS
        from .cloud_perturbations import is_cloud_perturbation

        return [n for n in PERTURBATIONS.names() if is_cloud_perturbation(PERTURBATIONS.get(n)) == clouds]

    def model_name(self, model: str) -> str:
        return "jet_cnn" if model in ("small_cnn", "jet_cnn") else model

    def is_cloud_model(self, model: str) -> bool:
        """Whether ``--model model`` takes particle clouds (its factory has ``input_kind = 'cloud'``)."""
        from ..models.specs import model_factory
        from .cloud_models import is_cloud_model

        return is_cloud_model(model_factory(self.model_name(model)))

    def load_data(self, config: Any) -> DataSplit:
        from .data import load_jets

        if config.image_size is not None:
            raise StableTrainError("jet images keep their generated frame; drop --image-size for --task jets")
        if self.is_cloud_model(config.model):
            from .clouds import load_clouds

            return load_clouds(config.data, split_seed=config.split_seed, test_fraction=config.test_fraction)
        return load_jets(config.data, split_seed=config.split_seed, test_fraction=config.test_fraction)

    def model_kwargs(self, config: Any, data: DataSplit) -> dict[str, Any]:
        if self.is_cloud_model(config.model):
            return {"num_classes": data.num_classes}
        if self.model_name(config.model) != "jet_cnn":
            return super().model_kwargs(config, data)
        kwargs: dict[str, Any] = {"in_channels": data.channels, "num_classes": data.num_classes,
                                  "image_size": data.image_size[0], "input": self.jet_input}
        if self.jet_input == "standardize":
            kwargs["mean"], kwargs["std"] = _pixel_stats(data)
        return kwargs

    def objective(self, config: Any) -> Any:
        import inspect

        from ..objectives import build_objective, objective_factory

        clouds = self.is_cloud_model(getattr(config, "model", "small_cnn"))
        if clouds:
            given = [f"{k} {v!r}" for k, v, d in (("noise", self.noise, "relative"),
                                                  ("jet_input", self.jet_input, "log")) if v != d]
            if given:
                raise StableTrainError(f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} for jet images; "
                                       f"the cloud tagger {config.model!r} takes --cloud-noise (now "
                                       f"{self.cloud_noise!r}), not --noise or --jet-input")
        elif self.cloud_noise != "particle":
            raise StableTrainError(f"cloud_noise {self.cloud_noise!r} perturbs particle clouds; the image tagger "
                                   f"{config.model!r} takes --noise (now {self.noise!r})")
        else:
            attack = self.cloud_attack
            given = [f"cloud_attack_{k} {v!r}" for k, v, d in (("angle", attack.angle, CLOUD_ATTACK_ANGLE),
                                                               ("particles", attack.particles, 0),
                                                               ("budget_gev", attack.budget_gev, 0.0)) if v != d]
            if given:
                raise StableTrainError(f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} for particle "
                                       f"clouds; the image tagger {config.model!r} is attacked in TeV per cell "
                                       f"(adv_epsilon)")
        if config.method == "jsd":  # AugMix's views are image operations, meaningless for energy deposits
            raise StableTrainError("jsd takes AugMix views (rotations, posterize, solarize, ...), which have no "
                                   "physical meaning for calorimeter energies; use --method jsd-gaussian, which takes "
                                   "this task's detector noise")
        factory = objective_factory(config.method, self.objective_task)
        target = factory.__init__ if inspect.isclass(factory) else factory
        parameters = inspect.signature(target).parameters
        perturbation = self.perturbation(config.method_args, clouds=clouds) if "perturbation" in parameters else None
        attack = self.attack(config.method_args, clouds=clouds) if "attack" in parameters else None
        return build_objective(config.method, task=self.objective_task, perturbation=perturbation, attack=attack,
                               **config.method_args)

    def attack(self, method_args: dict[str, Any], clouds: bool = False) -> Any:
        """The inner attack of the adversarial methods: the physical cloud attack for cloud taggers, else None
        (the methods' L∞ attack on the images, in TeV per cell).

        Example:
            >>> JetTaggingTask(cloud_attack_particles=3, cloud_attack_budget_gev=4.2).attack({}, clouds=True)
            CloudAttack(angle=0.05, particles=3, budget_gev=4.2, radius=1.0)
        """
        return self.cloud_attack if clouds else None

    def perturbation(self, method_args: dict[str, Any], clouds: bool = False) -> nn.Module | None:
        """The task's noise of size ``method_args['sigma']`` (None for a method without a sigma).

        Example:
            >>> JetTaggingTask().perturbation({"sigma": 0.1}, clouds=True)
            ParticleNoise(
              sigma=0.1
              (soft): SoftInjection(sigma=1.0, particles=10, budget_gev=4.2, radius=1.0)
              (smear): ParticleSmear(sigma=0.1)
              (jitter): ParticleJitter(sigma=1.0, cell=0.1)
            )
        """
        from ..perturbations import build_perturbation

        if "sigma" not in method_args:
            return None
        return build_perturbation(self.cloud_noise if clouds else self.noise, method_args["sigma"])

    def evaluate(self, model: nn.Module, data: DataSplit) -> dict[str, float]:
        scores = tagger_scores(model, data.test.x)
        labels = data.test.y.numpy()
        predicted = (scores >= 0.5).astype(int)
        return {"test_accuracy": float((predicted == labels).mean()), "test_auc": roc_auc(scores, labels)}


def tagger_scores(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Signal probability of each jet (softmax of the logits, class 1).

    ``x`` is a tensor of images or clouds, or a lazy
    :class:`~stabletrain.jets.clouds.CloudArray`, read a batch at a time.
    """
    return predict_logits(model, x).softmax(1)[:, 1].double().numpy()


def mass_window_scores(x: torch.Tensor, spec: ImageSpec = ImageSpec(), mass: float = W_MASS) -> np.ndarray:
    """The mass-window baseline: ``−|m − mass|`` with m the image mass in GeV (a window cut sweeps its ROC)."""
    images = x[:, 0].double().numpy() * PIXEL_UNIT_GEV
    return -np.abs(image_mass(images, spec) - mass)


def working_point_interval(passed: float, background: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact interval ``(low, high)`` of the rejection ``background / passed``; ``high`` is inf when 0 pass.

    For a whole number of passing events it is :func:`stabletrain.stats.rejection_interval`
    (Clopper-Pearson on ε_B, inverted). A fractional ``passed`` (a working
    point interpolated inside a tie of signal and background, see
    :func:`stabletrain.metrics.working_point`) takes the union of the
    intervals of the whole numbers on either side: conservative.

    Example:
        >>> low, high = working_point_interval(8, 800)
        >>> round(low, 1), round(high, 1)
        (51.0, 231.1)
        >>> working_point_interval(0, 400)[1]
        inf
    """
    if float(passed).is_integer():
        r = rejection_interval(int(passed), background, confidence)
        return r.low, r.high
    return (rejection_interval(math.ceil(passed), background, confidence).low,
            rejection_interval(math.floor(passed), background, confidence).high)


def tagging_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """ROC AUC, and background rejection 1/ε_B at ε_S = 30 % and 50 %, with the intervals and counts behind them.

    Keys: ``auc`` (:func:`stabletrain.metrics.roc_auc`), ``auc_low`` and
    ``auc_high`` (DeLong 95 %), and for each efficiency ``E`` in 30 and 50:
    ``rejection_E`` (:func:`stabletrain.metrics.background_rejection`: when
    no background passes, the number of background jets), ``rejection_E_low``
    and ``rejection_E_high`` (Clopper-Pearson 95 %; ``high`` is inf when no
    background passes: only a lower bound exists), ``passed_E`` (background
    jets passing the cut, :func:`stabletrain.metrics.working_point`) and
    ``threshold_E`` (the cut on the score); then ``signal`` and
    ``background``, the numbers of test jets of each class it all rests on.

    Example:
        >>> m = tagging_metrics(np.array([0.9, 0.8, 0.4, 0.1]), np.array([1, 1, 0, 0]))
        >>> m["auc"], m["rejection_50"]
        (1.0, 2.0)
        >>> m["passed_50"], m["background"], m["rejection_50_high"]
        (0, 2, inf)
    """
    interval = auc_interval(scores, labels)
    out: dict[str, float | int] = {"auc": roc_auc(scores, labels), "auc_low": interval.low,
                                   "auc_high": interval.high}
    for eff in EFFICIENCIES:
        key = f"rejection_{round(eff * 100)}"
        wp = working_point(scores, labels, eff)
        low, high = working_point_interval(wp.passed, wp.background)
        out[key] = wp.rejection
        out[f"{key}_low"], out[f"{key}_high"] = low, high
        out[f"passed_{round(eff * 100)}"] = wp.passed_count
        out[f"threshold_{round(eff * 100)}"] = wp.threshold
    out["signal"], out["background"] = interval.signal, interval.background
    return out


def describe_counts(signal: int, background: int, what: str = "test jets") -> str:
    """``'800 test jets (400 signal, 400 background)'``: the examples a table rests on.

    Example:
        >>> describe_counts(400, 400)
        '800 test jets (400 signal, 400 background)'
    """
    return f"{signal + background} {what} ({signal} signal, {background} background)"


def format_auc(row: Mapping[str, Any], digits: int = 3) -> str:
    """``'0.871 [0.852, 0.890]'``: a row's AUC with its 95 % interval (the AUC alone if the row has none).

    Example:
        >>> format_auc({"auc": 0.8712, "auc_low": 0.8521, "auc_high": 0.8903})
        '0.871 [0.852, 0.890]'
    """
    return format_interval(row["auc"], row.get("auc_low"), row.get("auc_high"), percent=False, digits=digits,
                           signed=False)


def format_rejection(row: Mapping[str, Any], efficiency: int = 50, digits: int = 1) -> str:
    """``'R [low, high] (k of N bkg)'`` for the rejection at ε_S = ``efficiency`` %, readable when k = 0.

    When no background jet passes the cut the rejection has no upper bound:
    the cell reads ``'> low (0 of N bkg pass)'``, with ``low`` the 95 % lower
    bound (not the number of background jets, which is no bound at all).

    Example:
        >>> format_rejection({"rejection_50": 25.0, "rejection_50_low": 17.1, "rejection_50_high": 37.9,
        ...                   "passed_50": 16, "background": 400})
        '25.0 [17.1, 37.9] (16 of 400 bkg)'
        >>> format_rejection({"rejection_50": 400.0, "rejection_50_low": 108.3, "rejection_50_high": None,
        ...                   "passed_50": 0, "background": 400})
        '> 108.3 (0 of 400 bkg pass)'
    """
    key = f"rejection_{efficiency}"
    value, low, high = row[key], row.get(f"{key}_low"), row.get(f"{key}_high")
    passed, background = row.get(f"passed_{efficiency}"), row.get("background")
    if low is None or passed is None or background is None:  # a row without the counts (older results)
        return format_interval(value, None, None, percent=False, digits=digits)
    count = f"{passed:g}" if isinstance(passed, float) and not float(passed).is_integer() else f"{int(passed)}"
    if high is None or not math.isfinite(high):
        if float(passed) == 0:
            return f"> {low:.{digits}f} (0 of {background} bkg pass)"
        return f"{value:.{digits}f} [{low:.{digits}f}, ∞) ({count} of {background} bkg)"
    return f"{format_interval(value, low, high, percent=False, digits=digits, signed=False)} ({count} of {background} bkg)"


def evaluate_taggers(models: Mapping[str, nn.Module], dataset: ImageDataset, specs: Sequence[str], *,
                     seed: int = 0, spec: ImageSpec = ImageSpec(), mass: float = W_MASS,
                     progress: bool = True, scores: dict[tuple[str, str], np.ndarray] | None = None
                     ) -> list[dict[str, Any]]:
    """Score every tagger and the mass window on ``dataset`` under each detector effect in ``specs``.

    Every model and the baseline see the same distorted copy (seeded by
    ``(seed, spec)``). Returns one row per (model, spec) with the keys of
    :func:`tagging_metrics` (``auc`` with ``auc_low``/``auc_high``,
    ``rejection_30``/``rejection_50`` with their intervals and ``passed_*``
    counts, ``signal``, ``background``), ``accuracy`` (taggers) and the
    fraction of occupied cells. ``scores``, if given, receives each jet's
    score per ``(model, spec)``, in the data set's order: what paired
    comparisons of taggers on the same jets need.
    """
    from ..progress import progress_bar

    distortions = parse_distortions(["clean", *[s for s in specs if s != "clean"]])
    labels = dataset.y.numpy()
    rows: list[dict[str, Any]] = []
    device = _device_of(next(iter(models.values()))) if models else torch.device("cpu")
    images = dataset.x if isinstance(dataset.x, torch.Tensor) else dataset.x[:]  # lazy rows: the sweep distorts all
    for distortion in progress_bar(distortions, desc="detector effects", unit="effect", enabled=progress):
        # each jet's detector effect comes from its own stream: the same at any batch size
        x = distort_examples(distortion, images.to(device), 0, seed, "detector", distortion.spec).cpu()
        common = {"distortion": distortion.spec, "family": distortion.family if distortion.spec != "clean" else "clean",
                  "param": distortion.param, "occupancy": float((x > 0).float().mean())}
        window = mass_window_scores(x, spec, mass)
        rows.append({"model": "mass-window", **common, **tagging_metrics(window, labels), "accuracy": None})
        if scores is not None:
            scores[("mass-window", distortion.spec)] = window
        for name, model in models.items():
            tagged = tagger_scores(model, x)
            rows.append({"model": name, **common, **tagging_metrics(tagged, labels),
                         "accuracy": float(((tagged >= 0.5).astype(int) == labels).mean())})
            if scores is not None:
                scores[(name, distortion.spec)] = tagged
    return rows
