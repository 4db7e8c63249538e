import pytest
import torch
from torch import nn

from stabletrain.data import ImageDataset
from stabletrain.distortions import parse_distortions
from stabletrain.evaluation import accuracy, eval_mode, evaluate_distortions, results_by_model
from stabletrain.objectives import stability_kl


class ConstantModel(nn.Module):
    """Ignores its input: perfectly stable."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


class MeanBrightness(nn.Module):
    """Class 1 if the mean pixel is above 0.5: sensitive to noise near the threshold."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], dim=1) * 50


def _data():
    g = torch.Generator().manual_seed(0)
    level = torch.linspace(0.3, 0.7, 40)
    x = (level.view(-1, 1, 1, 1) + 0.0 * torch.rand(40, 1, 16, 16, generator=g)).clamp(0, 1)
    return ImageDataset(x, (level > 0.5).long())


def test_constant_model_is_perfectly_stable():
    data = _data()
    rows = evaluate_distortions({"const": ConstantModel([0.0, 1.0])}, data,
                                parse_distortions("jpeg-10,gaussian-0.5,crop-20"), progress=False)
    clean = rows[0]["accuracy"]
    assert clean == pytest.approx(float((data.y == 1).float().mean()))
    for row in rows[1:]:
        assert row["accuracy"] == clean and row["flip_rate"] == 0 and row["mean_kl"] == pytest.approx(0, abs=1e-7)


def test_metrics_match_a_direct_computation():
    data, model = _data(), MeanBrightness()
    rows = evaluate_distortions({"m": model}, data, parse_distortions("gaussian-0.3"), seed=5, progress=False)
    from stabletrain.seeding import ExampleRNG

    # example i is distorted from its own stream (seed, "distortion", spec, i)
    noisy = parse_distortions("gaussian-0.3")[0](data.x, ExampleRNG.for_examples(range(len(data)), 5, "distortion",
                                                                                  "gaussian-0.3"))
    clean_logits, noisy_logits = model(data.x), model(noisy)
    row = rows[1]
    assert row["accuracy"] == pytest.approx(float((noisy_logits.argmax(1) == data.y).float().mean()))
    assert row["flip_rate"] == pytest.approx(float((noisy_logits.argmax(1) != clean_logits.argmax(1)).float().mean()))
    assert row["mean_kl"] == pytest.approx(float(stability_kl(clean_logits, noisy_logits)), rel=1e-5)
    assert rows[0]["accuracy"] == 1.0 and accuracy(model, data) == 1.0
    assert row["flip_rate"] > 0


def test_every_model_sees_the_same_distorted_images():
    data = _data()
    rows = evaluate_distortions({"a": MeanBrightness(), "b": MeanBrightness()}, data,
                                parse_distortions("crop-20,gaussian-0.2"), progress=False)
    nested = results_by_model(rows)
    assert nested["a"] == nested["b"]


def test_eval_mode_restores_training_state():
    model = nn.Sequential(nn.BatchNorm1d(3))
    model.train()
    with eval_mode(model):
        assert not model.training
    assert model.training


def test_mean_corruption_error_against_hand_computation():
    from stabletrain.evaluation import mean_corruption_error

    rows = [{"model": "m", "distortion": "clean", "family": "clean", "accuracy": 0.9},
            {"model": "b", "distortion": "clean", "family": "clean", "accuracy": 0.8}]
    acc = {("m", "fog"): [0.8, 0.6], ("b", "fog"): [0.6, 0.4], ("m", "snow"): [0.7, 0.7], ("b", "snow"): [0.5, 0.3]}
    for (model, family), values in acc.items():
        for severity, a in enumerate(values, start=1):
            rows.append({"model": model, "distortion": f"{family}-{severity}", "family": family, "accuracy": a})
    result = mean_corruption_error(rows, "m", ["fog", "snow"], baseline="b")
    # errors m: fog .2+.4 = .6, snow .3+.3 = .6; b: fog .4+.6 = 1.0, snow .5+.7 = 1.2
    assert result["mean_error"] == pytest.approx(1.2 / 4)
    assert result["mce"] == pytest.approx((0.6 / 1.0 + 0.6 / 1.2) / 2)
    # relative: m fog .6-2*.1 = .4, b fog 1.0-2*.2 = .6; snow: .4 / .8
    assert result["relative_mce"] == pytest.approx((0.4 / 0.6 + 0.4 / 0.8) / 2)
    assert mean_corruption_error(rows, "m", ["fog"])["mce"] is None


# ---- intervals, paired comparisons and collapse warnings ------------------------------------------------------

class _Constant(torch.nn.Module):
    """Always predicts ``label``: a model built to collapse."""

    def __init__(self, label: int, classes: int = 3) -> None:
        super().__init__()
        self.label, self.classes = label, classes
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.classes) + self.anchor
        out[:, self.label] = 1.0
        return out


class _Threshold(torch.nn.Module):
    """Class = how bright the image is, in 3 bins: a model that uses its input."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1, keepdim=True)
        return -((mean * 3 - torch.tensor([[0.5, 1.5, 2.5]])) ** 2) * 50 + self.anchor


def test_rows_carry_counts_and_wilson_intervals_and_pairs_match_a_direct_count():
    from scipy.stats import binomtest

    from stabletrain.distortions import parse_distortions
    from stabletrain.evaluation import distortion_results
    from stabletrain.stats import paired_difference

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = ((y.float()[:, None, None, None] + torch.rand(60, 1, 8, 8, generator=g)) / 3).clamp(0, 1)
    models = {"constant": _Constant(0), "threshold": _Threshold()}
    result = distortion_results(models, ImageDataset(x, y), parse_distortions("gaussian-0.2"), progress=False)
    for row in result.rows:
        ci = binomtest(row["correct"], row["n"]).proportion_ci(method="wilson")
        assert row["accuracy"] == row["correct"] / row["n"]
        assert row["accuracy_low"] == pytest.approx(ci.low) and row["accuracy_high"] == pytest.approx(ci.high)
    flags = result.correct
    assert flags["constant"]["clean"].sum() == 20  # class 0 is a third of the images
    for pair in result.paired("constant"):
        direct = paired_difference(flags["threshold"][pair["distortion"]], flags["constant"][pair["distortion"]])
        assert pair["difference"] == direct.difference and pair["only_model"] == direct.only_a
        assert (pair["difference_low"], pair["difference_high"]) == (direct.low, direct.high)
    # the constant model is flagged as collapsed and at chance, the threshold model is not
    assert result.warnings == [
        "constant: predicts class 0 for 100 % of clean test images (the largest class is 33 % of them)",
        "constant: at chance: clean accuracy 33.3 % with 3 classes (chance 33.3 %)"]


def test_one_class_on_a_test_set_that_is_mostly_that_class_is_not_a_collapse():
    from stabletrain.evaluation import prediction_warnings

    labels = torch.tensor([0] * 97 + [1] * 3)
    lines = prediction_warnings("m", torch.zeros(100, dtype=torch.long), labels, 2)
    assert not any("predicts class" in line for line in lines)  # 97 % of the images are class 0
    assert any("at chance" in line for line in lines)  # but predicting it is chance level
    balanced = torch.tensor([0] * 70 + [1] * 30)
    assert prediction_warnings("m", balanced.clone(), balanced, 2) == []  # right on every image


def test_attack_rows_carry_wilson_intervals_of_their_counts():
    from scipy.stats import binomtest

    from stabletrain.evaluation import attack_row

    point = {"attack": "pgd", "epsilon": 0.03, "n": 40, "clean_accuracy": 36 / 40, "robust_accuracy": 10 / 40,
             "success_rate": 26 / 36, "robust_accuracy_at_epsilon": 10 / 40}
    row = attack_row("m", point, 10)
    robust = binomtest(10, 40).proportion_ci(method="wilson")
    success = binomtest(26, 36).proportion_ci(method="wilson")
    assert (row["robust_accuracy_low"], row["robust_accuracy_high"]) == pytest.approx((robust.low, robust.high))
    assert (row["attack_success_rate_low"], row["attack_success_rate_high"]) == pytest.approx((success.low,
                                                                                               success.high))
    none = attack_row("m", {**point, "clean_accuracy": 0.0, "robust_accuracy": 0.0, "success_rate": 0.0}, 10)
    assert none["attack_success_rate_low"] is None  # no clean-correct image: no rate to bound
