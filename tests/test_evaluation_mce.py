import math

import pytest

from stabletrain.checks import StableTrainError
from stabletrain.corruptions import CORRUPTIONS, HELD_OUT
from stabletrain.evaluation import mean_corruption_error
from stabletrain.evaluation.mce import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    ALEXNET_SEVERITY_ERRORS,
    alexnet_mce,
    corruption_errors,
    relative_to_baseline,
)

IMAGENET = {"num_classes": 1000, "corruption_set": "imagenet"}


def corruption_rows(model: str, errors: dict, severities: tuple = (1, 2, 3, 4, 5),
                    clean_error: float | None = None) -> list[dict]:
    """Rows of ``model`` with error ``errors[c]`` (a number, or one per severity) on each corruption."""
    rows = []
    for c, error in errors.items():
        for i, s in enumerate(severities):
            e = error[i] if isinstance(error, (tuple, list)) else error
            rows.append({"model": model, "distortion": f"{c}-{s}", "family": c, "param": s, "accuracy": 1 - e,
                         "mean_kl": 0.0, "flip_rate": 0.0, "n": 100})
    if clean_error is not None:
        rows.append({"model": model, "distortion": "clean", "family": "clean", "param": None,
                     "accuracy": 1 - clean_error, "mean_kl": 0.0, "flip_rate": 0.0, "n": 100})
    return rows


def test_the_alexnet_tables_cover_the_fifteen_corruptions_under_stabletrain_names():
    assert list(ALEXNET_ERRORS) == list(CORRUPTIONS)
    assert list(ALEXNET_SEVERITY_ERRORS) == list(CORRUPTIONS)
    assert not set(ALEXNET_ERRORS) & set(HELD_OUT)  # not verifiable: left out


def test_the_per_severity_table_averages_to_the_published_per_corruption_errors():
    # two independent sources (augmix's ALEXNET_ERR and a timm fork's per-severity list) agree to 1e-6
    for c, per_severity in ALEXNET_SEVERITY_ERRORS.items():
        assert len(per_severity) == 5
        assert sum(per_severity) / 5 == pytest.approx(ALEXNET_ERRORS[c], abs=1e-6)
    assert ALEXNET_ERRORS["gaussian_noise"] == 0.886428
    assert round(ALEXNET_CLEAN_ERROR, 4) == 0.4348  # torchvision AlexNet acc@1 56.522


def test_a_model_with_alexnets_errors_scores_one_and_half_the_error_scores_one_half():
    same = corruption_rows("alex", ALEXNET_ERRORS, clean_error=ALEXNET_CLEAN_ERROR)
    result = alexnet_mce(same, "alex", **IMAGENET)
    assert result["mce"] == pytest.approx(1.0, abs=1e-12)
    assert result["relative_mce"] == pytest.approx(1.0, abs=1e-12)
    assert all(v == pytest.approx(1.0) for v in result["ce"].values())
    assert result["partial"] is False and result["forced"] is False
    half = corruption_rows("half", {c: e / 2 for c, e in ALEXNET_ERRORS.items()})
    result = alexnet_mce(half, "half", **IMAGENET)
    assert result["mce"] == pytest.approx(0.5, abs=1e-12)
    assert result["relative_mce"] is None  # no clean row
    assert result["mean_error"] == pytest.approx(sum(ALEXNET_ERRORS.values()) / 30)


def test_the_relative_mce_subtracts_each_clean_error_by_hand():
    # one corruption: (E − E_clean) / (E_A − E_A,clean)
    rows = corruption_rows("m", {"fog": 0.6}, clean_error=0.2)
    result = alexnet_mce(rows, "m", ["fog"], **IMAGENET)
    assert result["ce"]["fog"] == pytest.approx(0.6 / 0.819324)
    assert result["relative_mce"] == pytest.approx((0.6 - 0.2) / (0.819324 - ALEXNET_CLEAN_ERROR))


# ResNet-50 (torchvision) on ImageNet-C: top-1 accuracy (%) per corruption, averaged over the five severities, and
# the CE (%) printed beside it, from bethgelab/game-of-noise, Results/clean_results.txt at commit
# 2989b432a4b46b6ed16058a769c6f6953b3cbb24 (its README: "Vanilla ... ImageNet-C mCE 76.7"). The file ends with
# "Full ImageNet-C: Top1 accuracy 39.17, ..., mCE: 76.70", Hendrycks & Dietterich's published ResNet-50 mCE (76.7%).
RESNET50 = {
    "brightness": (68.02, 56.64), "contrast": (39.06, 71.43), "defocus_blur": (38.75, 74.71),
    "elastic_transform": (45.25, 84.75), "fog": (45.83, 66.11), "frost": (38.14, 74.84),
    "gaussian_noise": (29.29, 79.77), "glass_blur": (26.79, 88.61), "impulse_noise": (23.81, 82.58),
    "jpeg_compression": (53.41, 76.82), "motion_blur": (38.67, 78.03), "pixelate": (44.79, 76.92),
    "shot_noise": (27.03, 81.58), "snow": (32.53, 77.83), "zoom_blur": (36.24, 79.86),
}


def test_resnet50s_published_per_corruption_accuracies_give_its_published_mce():
    rows = corruption_rows("resnet50", {c: 1 - acc / 100 for c, (acc, _) in RESNET50.items()}, clean_error=1 - 0.7613)
    result = alexnet_mce(rows, "resnet50", **IMAGENET)
    # the accuracies are rounded to 0.01%, which moves each CE by less than 0.01 / 0.56 ≈ 0.018 points
    for c, (_, ce) in RESNET50.items():
        assert 100 * result["ce"][c] == pytest.approx(ce, abs=0.015), c
    assert round(100 * result["mce"], 1) == 76.7
    assert 100 * result["mce"] == pytest.approx(76.70, abs=0.01)
    assert 100 * (1 - result["mean_error"]) == pytest.approx(39.17, abs=0.01)


def test_corruption_errors_average_the_severities_and_skip_attack_rows():
    rows = corruption_rows("m", {"fog": (0.1, 0.3), "snow": (0.5, 0.5)}, severities=(1, 3))
    rows.append({"model": "m", "distortion": "pgd-0.03", "family": "fog", "param": 0.03, "accuracy": None,
                 "robust_accuracy": 0.0, "n": 100})
    rows.append({"model": "other", "distortion": "fog-1", "family": "fog", "param": 1, "accuracy": 0.0})
    errors = corruption_errors(rows, "m", ["fog", "snow"])
    assert errors == pytest.approx({"fog": 0.2, "snow": 0.5})
    with pytest.raises(StableTrainError, match="no rows for corruption.*frost"):
        corruption_errors(rows, "m", ["fog", "frost"])
    with pytest.raises(StableTrainError, match="two different rows"):
        corruption_errors(rows + corruption_rows("m", {"fog": 0.9}, severities=(1,)), "m", ["fog"])
    with pytest.raises(StableTrainError, match=r"must be in \[0, 1\]"):
        corruption_errors([{"model": "m", "family": "fog", "param": 1, "accuracy": 1.5}], "m", ["fog"])


def test_alexnet_mce_refuses_a_setting_that_is_not_imagenet_unless_forced():
    rows = corruption_rows("m", ALEXNET_ERRORS)
    with pytest.raises(StableTrainError, match="10 classes"):
        alexnet_mce(rows, "m", num_classes=10, corruption_set="imagenet")
    with pytest.raises(StableTrainError, match="'cifar10'"):
        alexnet_mce(rows, "m", num_classes=1000, corruption_set="cifar10")
    forced = alexnet_mce(rows, "m", num_classes=10, corruption_set="cifar10", force=True)
    assert forced["forced"] is True and forced["mce"] == pytest.approx(1.0)


def test_missing_severities_raise_unless_a_partial_normalization_is_asked_for():
    rows = corruption_rows("m", {"fog": ALEXNET_SEVERITY_ERRORS["fog"][:2]}, severities=(1, 2))
    with pytest.raises(StableTrainError, match="severities \\[1, 2\\] only"):
        alexnet_mce(rows, "m", ["fog"], **IMAGENET)
    partial = alexnet_mce(rows, "m", ["fog"], **IMAGENET, allow_partial=True)
    assert partial["partial"] is True and partial["severities"] == {"fog": [1, 2]}
    assert partial["mce"] == pytest.approx(1.0)  # AlexNet's own errors at severities 1 and 2
    with pytest.raises(StableTrainError, match="severities are 1..5"):
        alexnet_mce(corruption_rows("m", {"fog": 0.5}, severities=(0, 1, 2, 3, 4)), "m", ["fog"], **IMAGENET)


def test_held_out_corruptions_have_no_alexnet_numbers():
    rows = corruption_rows("m", {"spatter": 0.5})
    with pytest.raises(StableTrainError, match="held-out.*spatter"):
        alexnet_mce(rows, "m", ["spatter"], **IMAGENET)


def test_relative_to_baseline_matches_a_hand_computation_and_mean_corruption_error():
    rows = corruption_rows("a", {"fog": (0.1, 0.3), "snow": (0.2, 0.4)}, severities=(1, 2), clean_error=0.05)
    rows += corruption_rows("b", {"fog": (0.2, 0.4), "snow": (0.4, 0.6)}, severities=(1, 2), clean_error=0.1)
    ours = relative_to_baseline(rows, "a", "b", ["fog", "snow"])
    # CE: fog 0.4 / 0.6, snow 0.6 / 1.0; relative: fog 0.3 / 0.4, snow 0.5 / 0.8
    assert ours["ce"] == pytest.approx({"fog": 2 / 3, "snow": 0.6})
    assert ours["mce"] == pytest.approx((2 / 3 + 0.6) / 2)
    assert ours["relative_ce"] == pytest.approx({"fog": 0.75, "snow": 0.625})
    assert ours["relative_mce"] == pytest.approx(0.6875)
    assert ours["mean_error"] == pytest.approx(0.25)
    theirs = mean_corruption_error(rows, "a", ["fog", "snow"], baseline="b")
    for key in ("mce", "relative_mce", "mean_error"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12), key
    assert relative_to_baseline(rows, "b", "a", ["fog"])["mce"] == pytest.approx(1.5)
    with pytest.raises(StableTrainError, match="another model"):
        relative_to_baseline(rows, "a", "a", ["fog"])
    lopsided = rows + corruption_rows("a", {"fog": 0.5}, severities=(3,))
    with pytest.raises(StableTrainError, match="same ones"):
        relative_to_baseline(lopsided, "a", "b", ["fog"])


# RobustBench's per-severity ImageNet-C accuracies (5000 images per corruption and severity) of AlexNet and of the
# torchvision ResNet-50, from RobustBench/robustbench model_info/imagenet/corruptions/unaggregated_results.csv at commit
# 78fcc9e48a07a861268f295a777b975f25155964; Standard_R50.json there reports corruptions_acc "39.48" and
# corruptions_mce "76.38", the mCE relative to that AlexNet row (robustbench/eval.py, corruptions_evaluation).
RB_ORDER = ("shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur", "brightness", "fog",
            "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast", "jpeg_compression", "elastic_transform")
RB_ALEXNET = (0.2944, 0.1598, 0.0726, 0.0196, 0.012, 0.4174, 0.295, 0.1794, 0.1022, 0.0698, 0.2788, 0.114, 0.132,
              0.085, 0.0502, 0.4754, 0.4502, 0.267, 0.1288, 0.0858, 0.311, 0.1814, 0.0724, 0.0214, 0.0058, 0.3404,
              0.262, 0.1502, 0.085, 0.0522, 0.5504, 0.514, 0.464, 0.3886, 0.2906, 0.3154, 0.2324, 0.157, 0.1214,
              0.0556, 0.3028, 0.2308, 0.1936, 0.163, 0.1312, 0.3788, 0.1976, 0.1052, 0.0994, 0.0616, 0.3486, 0.2412,
              0.1126, 0.08, 0.0636, 0.2234, 0.1154, 0.0556, 0.014, 0.0054, 0.3496, 0.2334, 0.1094, 0.0266, 0.0094,
              0.4858, 0.4522, 0.4228, 0.3488, 0.2564, 0.471, 0.3022, 0.44, 0.3568, 0.1898)
RB_RESNET50 = (0.5828, 0.4486, 0.2856, 0.1026, 0.0352, 0.636, 0.5342, 0.3754, 0.2158, 0.1452, 0.5468, 0.312, 0.3494,
               0.2344, 0.165, 0.638, 0.6434, 0.4598, 0.293, 0.2088, 0.602, 0.4878, 0.3124, 0.1422, 0.0288, 0.5914,
               0.5154, 0.3808, 0.2752, 0.1824, 0.736, 0.7222, 0.6958, 0.6496, 0.5886, 0.6092, 0.56, 0.4674, 0.4024,
               0.236, 0.5258, 0.4302, 0.356, 0.2844, 0.2194, 0.6106, 0.4366, 0.3064, 0.2864, 0.2258, 0.5362, 0.3974,
               0.1708, 0.1306, 0.1034, 0.4854, 0.3862, 0.2904, 0.113, 0.0244, 0.6428, 0.5824, 0.466, 0.2098, 0.0542,
               0.6644, 0.6234, 0.6004, 0.4786, 0.3254, 0.6684, 0.4514, 0.5456, 0.4122, 0.1702)


def robustbench_rows() -> list[dict]:
    rows = []
    for model, accuracies in (("AlexNet", RB_ALEXNET), ("Standard_R50", RB_RESNET50)):
        for i, accuracy in enumerate(accuracies):
            c, s = RB_ORDER[i // 5], i % 5 + 1
            rows.append({"model": model, "distortion": f"{c}-{s}", "family": c, "param": s, "accuracy": accuracy})
    return rows


def test_relative_to_a_baseline_reproduces_robustbenchs_imagenet_mce():
    rows = robustbench_rows()
    ours = relative_to_baseline(rows, "Standard_R50", "AlexNet", CORRUPTIONS)
    assert f"{100 * ours['mce']:.2f}" == "76.38"
    assert f"{100 * (1 - ours['mean_error']):.2f}" == "39.48"
    assert ours["mce"] == pytest.approx(mean_corruption_error(rows, "Standard_R50", CORRUPTIONS, "AlexNet")["mce"])
    assert math.isclose(relative_to_baseline(rows, "AlexNet", "Standard_R50", ["fog"])["mce"],
                        sum(1 - a for a in RB_ALEXNET[35:40]) / sum(1 - a for a in RB_RESNET50[35:40]))
