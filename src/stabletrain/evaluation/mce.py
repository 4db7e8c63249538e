"""Mean corruption error (mCE) normalized by AlexNet, as ImageNet-C reports it.

Hendrycks and Dietterich (ICLR 2019) define, for a classifier ``f`` with
top-1 error ``E^f_{s,c}`` on corruption ``c`` at severity ``s``,

* the corruption error ``CE_c = Σ_s E^f_{s,c} / Σ_s E^AlexNet_{s,c}``;
* the relative corruption error
  ``relative CE_c = Σ_s (E^f_{s,c} − E^f_clean) / Σ_s (E^AlexNet_{s,c} − E^AlexNet_clean)``;

and mCE / relative mCE as their means over the fifteen corruptions. With all
five severities, ``Σ_s E^AlexNet_{s,c} = 5 · ALEXNET_ERRORS[c]``, which is how
the reference scripts compute it (``mean_s error / ALEXNET_ERRORS[c]``).

The AlexNet numbers are those of the torchvision AlexNet on the released
ImageNet-C (50,000 images per corruption and severity, 1000 classes). They
mean nothing for another data set, another number of classes, or other
corruption parameters: :func:`alexnet_mce` refuses such a setting unless told
``force=True``. To compare two models of any setting, use
:func:`relative_to_baseline`, which normalizes by a baseline model evaluated
on the same images.

Sources of the published numbers (verified against each other; see the
comments at each table).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from ..checks import StableTrainError
from ..corruptions import CORRUPTIONS, HELD_OUT

__all__ = ["ALEXNET_ERRORS", "ALEXNET_SEVERITY_ERRORS", "ALEXNET_CLEAN_ERROR", "corruption_errors",
           "alexnet_mce", "relative_to_baseline"]

#: AlexNet's ImageNet-C top-1 error per corruption, averaged over the five severities (fractions).
#:
#: The values of the reference evaluation scripts: ``ALEXNET_ERR`` in
#: google-research/augmix ``imagenet.py`` (Hendrycks et al., "Raw AlexNet
#: errors taken from https://github.com/hendrycks/robustness"), identical in
#: bethgelab/game-of-noise ``evaluation_utils.py`` (``get_ce_alexnet``) and in
#: OpenMMLab mmpretrain's ``mCE`` metric; each equals the mean of the
#: per-severity errors of :data:`ALEXNET_SEVERITY_ERRORS` to 1e-6.
#: (hendrycks/robustness itself, at every commit of ``ImageNet-C/test.py``,
#: prints only unnormalized errors and holds no such table.)
#:
#: Only the fifteen common corruptions: no verifiable AlexNet errors for the
#: four held-out corruptions (speckle_noise, gaussian_blur, spatter,
#: saturate) were found, so they are left out and :func:`alexnet_mce`
#: refuses them.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}

#: AlexNet's ImageNet-C top-1 error per corruption and severity 1..5 (fractions).
#:
#: From ``imagenetc_alexnet_error_rates_list`` in UCSC-VLAA/RobustCNN
#: ``timm/utils/imagenet_c.py`` (a timm fork); the mean of each row is the
#: matching :data:`ALEXNET_ERRORS` value. Used only for the explicitly
#: requested partial normalization (fewer than five severities), which is not
#: a published figure.
ALEXNET_SEVERITY_ERRORS: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}

#: AlexNet's clean ImageNet top-1 error, for the relative mCE: 1 − 0.56522, the
#: acc@1 that torchvision publishes for ``AlexNet_Weights.IMAGENET1K_V1``
#: (https://pytorch.org/vision/stable/models/generated/torchvision.models.alexnet.html),
#: the torchvision AlexNet that hendrycks/robustness ``ImageNet-C/test.py``
#: evaluates; ≈ 0.4348 (the paper rounds it to 43.5%).
ALEXNET_CLEAN_ERROR: float = 1.0 - 0.56522

_SEVERITIES = (1, 2, 3, 4, 5)


def _ordered(values: Iterable) -> list:
    """``values`` sorted, whatever their types (severities are normally 1..5)."""
    items = list(values)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


def _is_attack(row: Mapping) -> bool:
    return row.get("robust_accuracy") is not None


def _severity_errors(rows: Sequence[Mapping], model: str, corruptions: Sequence[str]) -> dict[str, dict]:
    """``{corruption: {severity: error}}`` of ``model``, one error per severity; raises when one is missing."""
    if not isinstance(model, str) or not model:
        raise StableTrainError(f"model must be a non-empty name, got {model!r}")
    if isinstance(corruptions, str):
        raise StableTrainError(f"corruptions must be a sequence of names, got the string {corruptions!r}")
    wanted = list(dict.fromkeys(corruptions))
    if not wanted:
        raise StableTrainError("no corruptions given")
    out: dict[str, dict] = {c: {} for c in wanted}
    for row in rows:
        if row.get("model") != model or row.get("family") not in out or _is_attack(row):
            continue
        accuracy = row.get("accuracy")
        if accuracy is None:
            continue
        accuracy = float(accuracy)
        if not 0.0 <= accuracy <= 1.0:
            raise StableTrainError(f"accuracy of model {model!r} on {row.get('distortion')!r} must be in [0, 1], "
                                   f"got {accuracy!r}")
        severity = row.get("param")
        per = out[row["family"]]
        if severity in per and per[severity] != 1.0 - accuracy:
            raise StableTrainError(f"model {model!r} has two different rows for {row['family']} severity {severity}")
        per[severity] = 1.0 - accuracy
    missing = [c for c, per in out.items() if not per]
    if missing:
        raise StableTrainError(f"model {model!r} has no rows for corruption(s) {', '.join(missing)}")
    return out


def corruption_errors(rows: Sequence[Mapping], model: str, corruptions: Sequence[str]) -> dict[str, float]:
    """``model``'s top-1 error per corruption, the mean over the severities present in ``rows``.

    Corruption rows are those whose ``family`` is a corruption name (the
    severity is ``param``); attack rows are skipped. Raises
    :class:`~stabletrain.checks.StableTrainError` when a corruption has no row.

    Example:
        >>> rows = [{"model": "m", "family": "fog", "param": s, "accuracy": a}
        ...         for s, a in ((1, 0.9), (2, 0.7))]
        >>> {c: round(e, 6) for c, e in corruption_errors(rows, "m", ["fog"]).items()}
        {'fog': 0.2}
    """
    per = _severity_errors(rows, model, corruptions)
    return {c: math.fsum(errors.values()) / len(errors) for c, errors in per.items()}


def _clean_error(rows: Sequence[Mapping], model: str) -> float | None:
    for row in rows:
        if row.get("model") == model and row.get("distortion") == "clean" and row.get("accuracy") is not None:
            return 1.0 - float(row["accuracy"])
    return None


def alexnet_mce(rows: Sequence[Mapping], model: str, corruptions: Sequence[str] | None = None, *,
                num_classes: int, corruption_set: str, force: bool = False,
                allow_partial: bool = False) -> dict:
    """ImageNet-C mCE and relative mCE of ``model``, normalized by the published AlexNet errors.

    ``CE_c = mean_s E_{s,c} / ALEXNET_ERRORS[c]`` over the five severities,
    ``relative CE_c = (mean_s E_{s,c} − E_clean) / (ALEXNET_ERRORS[c] − ALEXNET_CLEAN_ERROR)``;
    ``mce`` and ``relative_mce`` are their means over ``corruptions`` (the
    fifteen common corruptions by default). Values are fractions: 1.0 = as
    robust as AlexNet (ImageNet-C papers print them ×100).

    The normalization is only the published one for an ImageNet classifier
    (``num_classes`` 1000) on ImageNet-C parameters (``corruption_set``
    ``'imagenet'``); any other setting raises unless ``force=True``, and the
    result then says ``'forced': True``.

    Every corruption must have all five severities: with fewer, the published
    per-corruption AlexNet mean is not the right denominator, so this raises
    unless ``allow_partial=True``, which divides by AlexNet's errors at the
    same severities (:data:`ALEXNET_SEVERITY_ERRORS`) and returns
    ``'partial': True``: comparable to nothing published.

    Returns ``{'mce', 'relative_mce', 'ce', 'relative_ce', 'mean_error',
    'clean_error', 'corruptions', 'severities', 'partial', 'forced'}``;
    ``relative_mce`` and ``relative_ce`` are None without a clean row.

    Example:
        >>> rows = [{"model": "m", "family": c, "param": s, "accuracy": 1 - ALEXNET_ERRORS[c] / 2}
        ...         for c in ALEXNET_ERRORS for s in range(1, 6)]
        >>> round(alexnet_mce(rows, "m", num_classes=1000, corruption_set="imagenet")["mce"], 6)
        0.5
    """
    if isinstance(corruptions, str):
        raise StableTrainError(f"corruptions must be a sequence of names, got the string {corruptions!r}")
    names = list(CORRUPTIONS) if corruptions is None else list(dict.fromkeys(corruptions))
    unknown = [c for c in names if c not in ALEXNET_ERRORS]
    if unknown:
        held = [c for c in unknown if c in HELD_OUT]
        why = "no verified published AlexNet errors for held-out corruption(s)" if held == unknown else \
            "no published AlexNet errors for"
        raise StableTrainError(f"{why} {', '.join(unknown)}; known: {', '.join(ALEXNET_ERRORS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise StableTrainError(f"num_classes must be an integer, got {num_classes!r}")
    problems = []
    if num_classes != 1000:
        problems.append(f"{num_classes} classes (ImageNet has 1000)")
    if str(corruption_set).lower() != "imagenet":
        problems.append(f"corruption set {corruption_set!r} (the AlexNet errors are for the 'imagenet' set)")
    if problems and not force:
        raise StableTrainError("AlexNet-normalized mCE is only defined for ImageNet-C: " + " and ".join(problems)
                               + "; use relative_to_baseline, or pass force=True")
    per = _severity_errors(rows, model, names)
    ce: dict[str, float] = {}
    relative: dict[str, float] | None = {}
    clean = _clean_error(rows, model)
    partial = False
    for c in names:
        severities = _ordered(per[c])
        bad = [s for s in severities if isinstance(s, bool) or s not in _SEVERITIES]
        if bad:
            raise StableTrainError(f"corruption {c} has severities {bad!r}; ImageNet-C severities are 1..5")
        own = math.fsum(per[c][s] for s in severities)
        if len(severities) == len(_SEVERITIES):
            base = len(_SEVERITIES) * ALEXNET_ERRORS[c]
        elif allow_partial:
            partial = True
            base = math.fsum(ALEXNET_SEVERITY_ERRORS[c][int(s) - 1] for s in severities)
        else:
            raise StableTrainError(f"corruption {c} of model {model!r} has severities {severities} only; the "
                                   "published AlexNet normalization needs all five (pass allow_partial=True)")
        ce[c] = own / base
        if clean is not None and relative is not None:
            relative[c] = (own - len(severities) * clean) / (base - len(severities) * ALEXNET_CLEAN_ERROR)
    if clean is None:
        relative = None
    errors = [e for c in names for e in per[c].values()]
    return {"mce": math.fsum(ce.values()) / len(ce),
            "relative_mce": None if relative is None else math.fsum(relative.values()) / len(relative),
            "ce": ce, "relative_ce": relative, "mean_error": math.fsum(errors) / len(errors),
            "clean_error": clean, "corruptions": names,
            "severities": {c: _ordered(per[c]) for c in names}, "partial": partial, "forced": bool(problems)}


def relative_to_baseline(rows: Sequence[Mapping], model: str, baseline: str,
                         corruptions: Sequence[str]) -> dict:
    """mCE and relative mCE of ``model`` normalized by another model of the same rows (any data set).

    The quantity of :func:`stabletrain.evaluation.mean_corruption_error`
    with a ``baseline``, computed here independently and per corruption:
    ``CE_c = Σ_s E_{s,c} / Σ_s E^base_{s,c}`` over the severities both models
    have (they must have the same ones), relative CE with each model's clean
    error subtracted. Fractions; the baseline itself scores 1.0.

    Returns ``{'mce', 'relative_mce', 'ce', 'relative_ce', 'mean_error', 'baseline'}``.

    Example:
        >>> rows = [{"model": m, "family": "fog", "param": 1, "accuracy": a} for m, a in (("a", 0.8), ("b", 0.6))]
        >>> round(relative_to_baseline(rows, "a", "b", ["fog"])["mce"], 6)
        0.5
    """
    if model == baseline:
        raise StableTrainError(f"the baseline must be another model than {model!r}")
    own = _severity_errors(rows, model, corruptions)
    base = _severity_errors(rows, baseline, corruptions)
    own_clean, base_clean = _clean_error(rows, model), _clean_error(rows, baseline)
    ce: dict[str, float] = {}
    relative: dict[str, float] = {}
    for c in own:
        if set(own[c]) != set(base[c]):
            raise StableTrainError(f"corruption {c}: model {model!r} has severities {_ordered(own[c])}, baseline "
                                   f"{baseline!r} has {_ordered(base[c])}; evaluate both on the same ones")
        mine, theirs = math.fsum(own[c].values()), math.fsum(base[c].values())
        if theirs <= 0:
            raise StableTrainError(f"baseline {baseline!r} has zero error on {c}; it cannot normalize")
        ce[c] = mine / theirs
        if own_clean is not None and base_clean is not None:
            k = len(own[c])
            if theirs - k * base_clean > 0:
                relative[c] = (mine - k * own_clean) / (theirs - k * base_clean)
    errors = [e for per in own.values() for e in per.values()]
    return {"mce": math.fsum(ce.values()) / len(ce),
            "relative_mce": math.fsum(relative.values()) / len(relative) if relative else None,
            "ce": ce, "relative_ce": relative or None, "mean_error": math.fsum(errors) / len(errors),
            "baseline": baseline}
