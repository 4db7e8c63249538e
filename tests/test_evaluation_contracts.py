"""Contracts of the robustness evaluation: what the numbers must mean, whatever the batch size.

* the paper summary holds exactly the paper distortions;
* robust accuracy implies clean-correct, never exceeds the clean accuracy and
  never rises with epsilon along one curve;
* every random draw (distortions, attack starts, smoothing noise) is made per
  example, so results do not depend on the batch size.
"""

import pytest
import torch
from torch import nn

from stabletrain.attacks import fgsm, pgd, robustness_curve
from stabletrain.checks import StableTrainError
from stabletrain.data import ImageDataset
from stabletrain.distortions import parse_distortion, parse_distortions
from stabletrain.evaluation import evaluate_distortions, evaluate_suites


def _streams(count, *parts):
    """Per-example streams; imported here so that the tests written against the old API still run on it."""
    from stabletrain.seeding import ExampleRNG

    return ExampleRNG.for_examples(range(count), *parts)


class PixelLinear(nn.Module):
    """Logits ``Σ w_k ⊙ x`` by broadcasting: every row's value (and gradient) is reduced on its own, so it does
    not depend on the other rows of the batch, bit for bit."""

    def __init__(self, shape=(1, 8, 8), classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, *shape, generator=g))
        self.bias = nn.Parameter(torch.randn(classes, generator=g))

    def forward(self, x):
        return (x.unsqueeze(1) * self.weight).flatten(2).sum(-1) + self.bias


def _textured(n=24, side=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, 1, side, side, generator=g), torch.arange(n) % classes)


# ---- 1. the paper summary --------------------------------------------------------------------------------------

@pytest.mark.parametrize("corruption_set", ["imagenet", "cifar10"])
def test_paper_summary_holds_exactly_the_paper_distortions(corruption_set):
    data = _textured(n=6, side=32)
    model = PixelLinear((1, 32, 32))
    paper = parse_distortions("jpeg-50,crop-10")
    result = evaluate_suites({"m": model}, data, ["paper", "common"], paper_distortions=paper,
                             corruption_set=corruption_set, severities=(1,), progress=False)
    summary = result["models"]["m"]
    assert set(summary["paper"]) == {"jpeg-50", "crop-10"}
    assert len(summary["corruptions"]) == 19  # the corruptions are all there, in their own summary


# ---- 2. robust accuracy ----------------------------------------------------------------------------------------

GRID = 0.25  # the crafted data's pixels are multiples of this, away from 0 and 1


def _grid_data(n=12):
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(1, 4, (n, 1, 8, 8), generator=g) * GRID).float()
    return x, torch.ones(n, dtype=torch.long)


def _grid_distance(x):
    """Largest distance of a pixel to the grid: 0 on the clean images, the size of the perturbation off them."""
    return (x - (x / GRID).round() * GRID).abs().flatten(1).amax(1)


class CorrectOnlyOffTheCleanImage(nn.Module):
    """The reviewer's case: wrong (class 0) on the clean image, right (class 1) on anything perturbed.
    Its gradient is zero, so PGD stays at its random start."""

    def forward(self, x):
        off = (_grid_distance(x) > 1e-6).float()
        return torch.stack([1 - off, off], dim=1) * 10 + 0 * x.flatten(1).sum(1, keepdim=True)


class FooledInAShell(nn.Module):
    """Right on the clean image and far from it, fooled only by perturbations of size 0.005 … 0.03."""

    def forward(self, x):
        d = _grid_distance(x)
        fooled = ((d > 0.005) & (d < 0.03)).float()
        return torch.stack([fooled, 1 - fooled], dim=1) * 10 + 0 * x.flatten(1).sum(1, keepdim=True)


def test_an_example_wrong_when_clean_is_never_robust():
    x, y = _grid_data()
    model = CorrectOnlyOffTheCleanImage()
    curve = robustness_curve(model, x, y, [0.0, 0.01, 0.05], steps=3, generator=torch.Generator().manual_seed(0))
    assert [row["robust_accuracy"] for row in curve] == [0.0] * 3  # the original gave 1.0 at ε = 0.01
    assert [row["clean_accuracy"] for row in curve] == [0.0] * 3
    # the attack itself reports the clean misclassification, with the clean image as the adversarial
    result = pgd(model, x, y, 0.01, steps=3, generator=torch.Generator().manual_seed(0))
    assert bool(result.success.all()) and torch.equal(result.adversarial, x)
    assert bool(fgsm(model, x, y, 0.01).success.all())


def test_robust_accuracy_is_cumulative_over_the_epsilons():
    x, y = _grid_data()
    model = FooledInAShell()
    # unsorted on purpose: the cumulation runs over the sorted epsilons
    for only_unbroken in (True, False):
        curve = robustness_curve(model, x, y, [0.1, 0.0, 0.01], steps=2, generator=torch.Generator().manual_seed(0),
                                 only_unbroken=only_unbroken)
        by_eps = {row["epsilon"]: row for row in curve}
        assert by_eps[0.0]["robust_accuracy"] == 1.0 and by_eps[0.01]["robust_accuracy"] == 0.0
        # every example broke at 0.01, so none is robust at 0.1 (the original said all were) ...
        assert by_eps[0.1]["robust_accuracy"] == 0.0 and by_eps[0.1]["success_rate"] == 1.0
        # ... though the attack at 0.1 alone fails (its start is outside the shell): only when it runs on them
        assert by_eps[0.1]["robust_accuracy_at_epsilon"] == (0.0 if only_unbroken else 1.0)


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "pgd-l2"])
def test_robust_accuracy_properties_on_a_random_model(attack):
    data = _textured(n=30)
    model = PixelLinear(seed=3)
    epsilons = [0.3, 0.0, 0.02, 0.1, 0.05] if attack != "pgd-l2" else [2.0, 0.0, 0.2, 0.5]
    options = {} if attack == "fgsm" else {"steps": 3}
    curve = robustness_curve(model, data.x, data.y, epsilons, attack=attack, batch_size=7,
                             generator=torch.Generator().manual_seed(0), **options)
    with torch.no_grad():
        clean = float((model(data.x).argmax(1) == data.y).double().mean())
    ordered = sorted(curve, key=lambda row: row["epsilon"])
    values = [row["robust_accuracy"] for row in ordered]
    assert values[0] == pytest.approx(clean) and values[-1] < clean  # ε = 0 is the clean accuracy; the attack works
    assert all(v <= clean + 1e-12 for v in values)
    assert values == sorted(values, reverse=True)
    for row in curve:
        assert row["clean_accuracy"] == pytest.approx(clean)
        assert row["robust_accuracy"] <= row["robust_accuracy_at_epsilon"] <= clean + 1e-12


def test_suite_summary_robust_accuracy_never_exceeds_clean_accuracy():
    x, y = _grid_data()
    data = ImageDataset(x, y)
    result = evaluate_suites({"m": CorrectOnlyOffTheCleanImage()}, data, ["adversarial"], epsilons=[0.0, 0.01],
                             attack_steps=2, progress=False)
    summary = result["models"]["m"]
    assert all(v <= summary["clean_accuracy"] for v in summary["robust_accuracy"].values())


# ---- 3. per-example random draws -------------------------------------------------------------------------------

PER_EXAMPLE_SPECS = "crop-10,crop-25,gaussian-0.1,gaussian-0.3,jpeg-50,thumb-4"


def test_distorted_rows_do_not_depend_on_the_batch_size():
    data = _textured(n=40)
    models = {"a": PixelLinear(seed=1), "b": PixelLinear(seed=2)}
    sweep = parse_distortions(PER_EXAMPLE_SPECS)
    rows = {bs: evaluate_distortions(models, data, sweep, seed=4, batch_size=bs, progress=False) for bs in (1, 7, 512)}
    assert rows[1] == rows[7] == rows[512]
    assert any(r["flip_rate"] > 0 for r in rows[1])  # the distortions change predictions: the test can see them


@pytest.mark.parametrize("spec", ["gaussian_noise-3", "impulse_noise-3", "c10/impulse_noise-3", "c10/shot_noise-2"])
def test_corrupted_rows_do_not_depend_on_the_batch_size(spec):
    data = _textured(n=24, side=16)
    model = PixelLinear((1, 16, 16), seed=5)
    rows = [evaluate_distortions({"m": model}, data, [parse_distortion(spec)], seed=1, batch_size=bs, progress=False)
            for bs in (1, 5, 512)]
    assert rows[0] == rows[1] == rows[2]


class FooledByPositiveStart(nn.Module):
    """Fooled iff the start moved pixel (0, 0) up; zero gradient: the outcome is decided by the random start alone."""

    def forward(self, x):
        up = (x[:, 0, 0, 0] - (x[:, 0, 0, 0] / GRID).round() * GRID > 0).float()
        return torch.stack([up, 1 - up], dim=1) * 10 + 0 * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("attack, epsilons", [("pgd", [0.0, 0.01, 0.02]), ("pgd-l2", [0.0, 0.1, 0.2]),
                                              ("l0", [0, 8, 32])])
def test_attack_random_starts_do_not_depend_on_the_batch_size(attack, epsilons):
    x, y = _grid_data(n=40)
    data, model = ImageDataset(x, y), FooledByPositiveStart()
    summaries = [evaluate_suites({"m": model}, data, ["adversarial"], epsilons=epsilons, attack=attack, attack_steps=1,
                                 batch_size=bs, seed=3, progress=False)["models"]["m"]["robust_accuracy"]
                 for bs in (1, 7, 512)]
    assert summaries[0] == summaries[1] == summaries[2]
    assert 0.0 < summaries[0][f"{epsilons[1]:.6g}"] < 1.0  # the starts fool some examples, not all
    curves = [robustness_curve(model, x, y, epsilons, attack=attack, steps=1, batch_size=bs,
                               generator=_streams(len(x), 3, "attack", "m")) for bs in (3, 40)]
    assert curves[0] == curves[1]


def test_certification_does_not_depend_on_the_batch_size():
    data = _textured(n=10)
    model = PixelLinear(seed=7)
    from stabletrain.smoothing import certify_dataset

    def run(batch_size, chunk):
        return certify_dataset(model, data.x, data.y, 0.5, n0=20, n=150, batch_size=batch_size, chunk=chunk,
                               generator=_streams(len(data), 0, "smoothing", "m"))

    reference = run(1000, 16)
    assert run(7, 3) == reference == run(64, 1)
    assert 0.0 < reference["abstain_rate"] < 1.0 or len(set(reference["prediction"])) > 1  # not a trivial model


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "autoattack"])
def test_the_curve_attacks_only_unbroken_examples_and_its_robust_accuracy_does_not_change(attack):
    from stabletrain.attacks import attack_curve
    from stabletrain.seeding import ExampleRNG

    data = _textured(n=30)
    model = PixelLinear(classes=5, seed=3)   # APGD-T needs at least 4 classes
    epsilons = [0.1, 0.0, 0.02, 0.05]
    options = {"steps": 3} if attack != "autoattack" else {"steps": 3, "queries": 20, "target_classes": 2}
    rng = ExampleRNG.for_examples(range(30), 0, "attack", attack)
    fast = attack_curve(model, data.x, data.y, epsilons, attack=attack, batch_size=7, generator=rng, **options)
    full = attack_curve(model, data.x, data.y, epsilons, attack=attack, batch_size=7, generator=rng,
                        only_unbroken=False, **options)
    assert torch.equal(fast.robust, full.robust)          # per-example streams: not one flag differs
    assert [r["robust_accuracy"] for r in fast.rows] == [r["robust_accuracy"] for r in full.rows]
    assert fast.components.keys() == full.components.keys()
    for position, parts in fast.components.items():      # autoattack: each component's robust flags too
        assert parts.keys() == full.components[position].keys() and (bool(parts) == (attack == "autoattack"))
        assert all(torch.equal(mask, full.components[position][name]) for name, mask in parts.items())
    # each ε attacks exactly the examples robust at the next smaller ε (the clean-correct ones at the smallest)
    by_eps = sorted(range(len(epsilons)), key=lambda i: epsilons[i])
    assert fast.attacked[by_eps[0]] == int(fast.correct.sum())
    for smaller, larger in zip(by_eps, by_eps[1:]):
        assert fast.attacked[larger] == int(fast.robust[smaller].sum())
    assert all(count == 30 for count in full.attacked.values())
    assert sum(fast.attacked.values()) < sum(full.attacked.values())
    with pytest.raises(StableTrainError, match="only_unbroken must be True or False"):
        attack_curve(model, data.x, data.y, epsilons, only_unbroken="yes")
