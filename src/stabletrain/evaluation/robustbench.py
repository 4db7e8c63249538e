"""A stabletrain suite summary as a RobustBench ``model_info`` entry.

RobustBench (github.com/RobustBench/robustbench) keeps one JSON file per
model under ``model_info/<dataset>/<threat_model>/<ModelId>.json``. Their
fields, as the files hold them (checked against the repository's
``model_info`` tree and the ``ModelInfo`` dataclass of ``robustbench/utils.py``):

* ``link``, ``name`` (the paper's title), ``authors``, ``venue``,
  ``architecture``: strings; ``additional_data``: bool;
  ``number_forward_passes``: int;
* ``dataset``: ``'cifar10'``, ``'cifar100'`` or ``'imagenet'``;
* ``eps``: a string, ``'8/255'`` for L∞, ``'0.5'`` for L2; null for corruptions;
* ``clean_acc``, ``autoattack_acc``, ``corruptions_acc``, ``corruptions_mce``:
  percentages as strings with two decimals (``'89.69'``); ``reported``: the
  paper's own number, a string or null;
* ``footnote``: a string or null; ``unreliable``: bool (L∞ and L2 only);
* ImageNet corruption entries also have ``corruptions_mce`` and the 3DCC
  fields ``corruptions_acc_3d`` and ``corruptions_mce_3d``.

The threat model is not a field: it is the folder (see
:func:`model_info_path`).

An attack other than AutoAttack puts its robust accuracy into a field named
after the attack (``pgd_acc``, ``pgd_l2_acc``, ``fgsm_acc``,
``apgd_ce_acc``, ``square_acc``…), ``autoattack_acc`` stays null and the
footnote says which attack, how many steps and how many examples: such a
number is an upper bound on the AutoAttack robust accuracy, not a leaderboard
entry. Only a summary whose attack is ``'autoattack'`` fills
``autoattack_acc``; stabletrain's own AutoAttack (which leaves FAB-T out)
says so in the footnote. Corruption accuracies come from stabletrain's own
implementation of the corruptions, which the footnote says too.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

from ..checks import StableTrainError

__all__ = ["THREAT_MODELS", "DATASETS", "format_percent", "format_eps", "model_info", "model_info_path",
           "write_model_info"]

#: RobustBench's threat models (folder names).
THREAT_MODELS = ("Linf", "L2", "corruptions")
#: RobustBench's data sets, and the names that map to each.
DATASETS: dict[str, str] = {
    "cifar10": "cifar10", "cifar-10": "cifar10", "c10": "cifar10",
    "cifar100": "cifar100", "cifar-100": "cifar100", "c100": "cifar100",
    "imagenet": "imagenet", "imagenet-1k": "imagenet", "imagenet1k": "imagenet", "in1k": "imagenet",
}
# the norm of each stabletrain attack (l0 has no RobustBench threat model)
_ATTACK_NORMS = {"fgsm": "Linf", "pgd": "Linf", "pgd-linf": "Linf", "pgd-l2": "L2", "l0": "L0", "apgd-ce": "Linf",
                 "apgd-dlr": "Linf", "apgd-t": "Linf", "square": "Linf", "autoattack": "Linf"}
# the corruption parameter sets that fit each data set
_CORRUPTION_SETS = {"cifar10": ("cifar10", "c10"), "cifar100": ("cifar10", "c10"), "imagenet": ("imagenet",)}
_COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
           "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
           "jpeg_compression")


def format_percent(fraction: float, field: str = "value") -> str:
    """A fraction in [0, 1] as RobustBench writes a percentage: a string with two decimals.

    Example:
        >>> format_percent(0.8969), format_percent(1.0)
        ('89.69', '100.00')
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        raise StableTrainError(f"{field} must be a finite number in [0, 1], got {fraction!r}")
    if not 0.0 <= float(fraction) <= 1.0:
        raise StableTrainError(f"{field} must be a fraction in [0, 1], got {fraction!r}")
    return f"{100.0 * float(fraction):.2f}"


def format_eps(eps: float, threat_model: str) -> str:
    """``eps`` as RobustBench writes it: ``'k/255'`` for an L∞ budget of k/255, else the number.

    Example:
        >>> format_eps(8 / 255, "Linf"), format_eps(0.5, "L2"), format_eps(0.031, "Linf")
        ('8/255', '0.5', '0.031')
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise StableTrainError(f"eps must be a finite number > 0, got {eps!r}")
    steps = float(eps) * 255
    if threat_model == "Linf" and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{float(eps):g}"


def _dataset(dataset: str) -> str:
    if not isinstance(dataset, str) or not dataset.strip():
        raise StableTrainError(f"dataset must be a non-empty name, got {dataset!r}")
    return DATASETS.get(dataset.strip().lower(), dataset.strip())


def _threat_model(threat_model: str) -> str:
    lookup = {t.lower(): t for t in THREAT_MODELS}
    if not isinstance(threat_model, str) or threat_model.lower() not in lookup:
        raise StableTrainError(f"unknown threat model {threat_model!r}; RobustBench has {', '.join(THREAT_MODELS)}")
    return lookup[threat_model.lower()]


def _text(value: object, field: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise StableTrainError(f"{field} must be a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def _robust_accuracy(summary: Mapping, eps: float) -> float:
    curve = summary.get("robust_accuracy")
    if not isinstance(curve, Mapping) or not curve:
        raise StableTrainError("the summary has no robust_accuracy: run the 'adversarial' suite")
    for key, value in curve.items():
        try:
            at = float(key)
        except (TypeError, ValueError):
            continue
        if math.isclose(at, eps, rel_tol=1e-5, abs_tol=1e-12):
            if value is None:
                break
            return float(value)
    raise StableTrainError(f"the summary has no robust accuracy at eps={eps:.6g}; it has eps "
                           f"{', '.join(str(k) for k in curve)}")


def _attack_notes(attack: Mapping, threat_model: str) -> tuple[str, str | None]:
    """The accuracy field for the summary's attack, and the footnote that explains it (None for AutoAttack)."""
    name = str(attack.get("name") or "").strip()
    if not name:
        raise StableTrainError("the summary's attack has no name")
    key = name.lower()
    if key in ("autoattack", "aa"):
        parts = attack.get("components")
        if not parts:  # an AutoAttack number from elsewhere: nothing to add
            return "autoattack_acc", None
        names = list(next(iter(parts.values()))) if isinstance(parts, Mapping) and parts else []
        examples = attack.get("examples")
        return "autoattack_acc", (
            f"AutoAttack by stabletrain without FAB-T ({', '.join(names)}; {attack.get('steps')} APGD iterations, "
            f"{attack.get('queries')} Square queries" + (f", on {examples} test examples" if examples else "") + ").")
    norm = _ATTACK_NORMS.get(key)
    if norm is not None and norm != threat_model:
        raise StableTrainError(f"attack {name!r} is an {norm} attack; it cannot stand for the {threat_model} "
                               "threat model")
    steps, examples = attack.get("steps"), attack.get("examples")
    what = f"{steps}-step {name.upper()}" if steps else name.upper()
    on = f" on {examples} test examples" if examples else ""
    note = (f"Robust accuracy ({key.replace('-', '_')}_acc) from stabletrain's {what} attack{on}, not AutoAttack: "
            "an upper bound on the AutoAttack robust accuracy, not comparable with the leaderboard.")
    return f"{key.replace('-', '_')}_acc", note


def _corruption_notes(summary: Mapping, dataset: str) -> str:
    corruption_set = summary.get("corruption_set")
    allowed = _CORRUPTION_SETS.get(dataset)
    if corruption_set is not None and allowed is not None and str(corruption_set).lower() not in allowed:
        raise StableTrainError(f"the summary used the {corruption_set!r} corruption parameters, which do not fit "
                               f"{dataset}; evaluate with corruption_set={allowed[0]!r}")
    per = summary.get("corruptions") or {}
    missing = [c for c in _COMMON if c not in per]
    short = [c for c in _COMMON if c in per and len(per[c]) < 5]
    note = (f"Corruption accuracy from stabletrain's implementation of the {corruption_set or 'common'} "
            "corruptions, not the released corrupted test sets")
    if missing:
        note += f"; without {', '.join(missing)}"
    if short:
        note += f"; fewer than five severities for {', '.join(short)}"
    return note + "."


def model_info(summary: Mapping, *, name: str, architecture: str, dataset: str, threat_model: str,
               eps: float | None = None, link: str = "", authors: str = "", venue: str = "N/A",
               additional_data: bool = False, number_forward_passes: int = 1, reported: str | float | None = None,
               footnote: str | None = None, unreliable: bool = False,
               corruptions_mce: float | None = None) -> dict:
    """A RobustBench ``model_info`` dict for one model's summary from :func:`stabletrain.evaluation.evaluate_suites`.

    ``summary`` is ``evaluate_suites(...)['models'][name]``: it needs
    ``clean_accuracy``; for ``threat_model`` ``'Linf'`` or ``'L2'`` also
    ``robust_accuracy`` at ``eps`` and ``attack``; for ``'corruptions'``
    ``common['mean_error']`` (its complement is ``corruptions_acc``, the mean
    accuracy over the fifteen corruptions and their severities). For ImageNet
    corruptions give ``corruptions_mce``, the AlexNet-normalized mCE as a
    fraction (``stabletrain.evaluation.mce.alexnet_mce(...)['mce']``); it is
    null otherwise, as are the 3DCC fields, which stabletrain does not
    evaluate.

    The keys and their order are those of RobustBench's files for the threat
    model; a non-AutoAttack attack adds ``<attack>_acc`` and a footnote (see
    the module docstring). ``dataset`` is mapped to RobustBench's name where
    it has one (``'CIFAR-10'`` → ``'cifar10'``) and kept as given otherwise.

    Example:
        >>> summary = {"clean_accuracy": 0.9, "robust_accuracy": {"0.0313725": 0.5},
        ...            "attack": {"name": "pgd", "steps": 10, "examples": 1000}}
        >>> info = model_info(summary, name="My model", architecture="ResNet-18", dataset="CIFAR-10",
        ...                   threat_model="Linf", eps=8 / 255)
        >>> info["dataset"], info["eps"], info["clean_acc"], info["pgd_acc"], info["autoattack_acc"]
        ('cifar10', '8/255', '90.00', '50.00', None)
    """
    if not isinstance(summary, Mapping):
        raise StableTrainError(f"summary must be a mapping (one model of evaluate_suites), "
                               f"got {type(summary).__name__}")
    if summary.get("clean_accuracy") is None:
        raise StableTrainError("the summary has no clean_accuracy; pass evaluate_suites(...)['models'][name]")
    threat = _threat_model(threat_model)
    data = _dataset(dataset)
    if isinstance(number_forward_passes, bool) or not isinstance(number_forward_passes, int) \
            or number_forward_passes < 1:
        raise StableTrainError(f"number_forward_passes must be an integer >= 1, got {number_forward_passes!r}")
    if footnote is not None:
        _text(footnote, "footnote")
    if reported is not None and not isinstance(reported, (str, int, float)):
        raise StableTrainError(f"reported must be a string, a number or None, got {reported!r}")
    info: dict = {"link": _text(link, "link"), "name": _text(name, "name", empty=False),
                  "authors": _text(authors, "authors"), "additional_data": bool(additional_data),
                  "number_forward_passes": number_forward_passes, "dataset": data, "venue": _text(venue, "venue"),
                  "architecture": _text(architecture, "architecture", empty=False)}
    notes = [footnote] if footnote else []
    if threat in ("Linf", "L2"):
        if eps is None:
            raise StableTrainError(f"the {threat} threat model needs eps")
        attack = summary.get("attack")
        if not isinstance(attack, Mapping):
            raise StableTrainError("the summary has no attack: run the 'adversarial' suite")
        field, note = _attack_notes(attack, threat)
        robust = format_percent(_robust_accuracy(summary, float(eps)), "robust accuracy")
        info.update({"eps": format_eps(eps, threat),
                     "clean_acc": format_percent(summary["clean_accuracy"], "clean_accuracy"),
                     "reported": reported, "autoattack_acc": robust if field == "autoattack_acc" else None})
        if note:
            info[field] = robust
            notes.append(note)
        info.update({"footnote": " ".join(notes) or None, "unreliable": bool(unreliable)})
        return info
    if eps is not None:
        raise StableTrainError("the corruptions threat model has no eps; leave it None")
    common = summary.get("common")
    if not isinstance(common, Mapping) or common.get("mean_error") is None:
        raise StableTrainError("the summary has no common['mean_error']: run the 'common' suite")
    notes.append(_corruption_notes(summary, data))
    info.update({"eps": None, "clean_acc": format_percent(summary["clean_accuracy"], "clean_accuracy"),
                 "reported": reported})
    accuracy = format_percent(1.0 - float(common["mean_error"]), "corruption accuracy")
    if data == "imagenet":
        if corruptions_mce is not None and (isinstance(corruptions_mce, bool) or not isinstance(
                corruptions_mce, (int, float)) or not math.isfinite(corruptions_mce) or corruptions_mce < 0):
            raise StableTrainError(f"corruptions_mce must be a finite fraction >= 0 (1.0 = AlexNet), "
                                   f"got {corruptions_mce!r}")
        info.update({"corruptions_acc_3d": None, "corruptions_mce_3d": None, "footnote": " ".join(notes),
                     "corruptions_acc": accuracy,
                     "corruptions_mce": None if corruptions_mce is None else f"{100.0 * corruptions_mce:.2f}"})
    else:
        if corruptions_mce is not None:
            raise StableTrainError("RobustBench reports corruptions_mce for ImageNet only")
        info.update({"corruptions_acc": accuracy, "footnote": " ".join(notes)})
    return info


def model_info_path(root: str | os.PathLike, dataset: str, threat_model: str, model_id: str) -> Path:
    """Where RobustBench keeps the entry: ``root/model_info/<dataset>/<threat_model>/<model_id>.json``.

    Example:
        >>> model_info_path("rb", "CIFAR-10", "linf", "Me2025Stable").as_posix()
        'rb/model_info/cifar10/Linf/Me2025Stable.json'
    """
    if not isinstance(model_id, str) or not model_id or any(c in model_id for c in "/\\") or model_id in (".", ".."):
        raise StableTrainError(f"model_id must be a file name without folders, got {model_id!r}")
    return Path(root) / "model_info" / _dataset(dataset) / _threat_model(threat_model) / f"{model_id}.json"


def write_model_info(path: str | os.PathLike, info: Mapping) -> Path:
    """Write ``info`` (from :func:`model_info`) as indented JSON, atomically; returns the path.

    Example:
        >>> import json, shutil, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> out = write_model_info(os.path.join(folder, "m.json"), {"name": "m", "clean_acc": "90.00"})
        >>> json.loads(out.read_text())["clean_acc"]
        '90.00'
        >>> shutil.rmtree(folder)
    """
    from ..files import write_json

    if not isinstance(info, Mapping):
        raise StableTrainError(f"info must be a mapping, got {type(info).__name__}")
    for key in ("name", "clean_acc"):
        if info.get(key) in (None, ""):
            raise StableTrainError(f"model info has no {key!r}; build it with model_info()")
    return Path(write_json(path, dict(info)))
