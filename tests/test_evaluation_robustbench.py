import json
import re

import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.evaluation.robustbench import (
    format_eps,
    format_percent,
    model_info,
    model_info_path,
    write_model_info,
)

# Real RobustBench entries, verbatim, from github.com/RobustBench/robustbench at commit
# 78fcc9e48a07a861268f295a777b975f25155964:
# model_info/cifar10/Linf/Bartoldson2024Adversarial_WRN-94-16.json
REAL_LINF = json.loads("""{
  "link": "https://arxiv.org/abs/2404.09349",
  "name": "Adversarial Robustness Limits via Scaling-Law and Human-Alignment Studies",
  "authors": "Brian Bartoldson, James Diffenderfer, Konstantinos Parasyris, Bhavya Kailkhura",
  "additional_data": false,
  "number_forward_passes": 1,
  "dataset": "cifar10",
  "venue": "ICML 2024",
  "architecture": "WideResNet-94-16",
  "eps": "8/255",
  "clean_acc": "93.68",
  "reported": "73.71",
  "autoattack_acc": "73.71",
  "footnote": "It uses additional 300M synthetic images in training.",
  "unreliable": false
}""")
# model_info/cifar10/corruptions/Kireev2021Effectiveness_RLAT.json
REAL_CORRUPTIONS = json.loads("""{
  "link": "https://arxiv.org/abs/2103.02325",
  "name": "On the effectiveness of adversarial training against common corruptions",
  "authors": "Klim Kireev, Maksym Andriushchenko, Nicolas Flammarion",
  "additional_data": false,
  "number_forward_passes": 1,
  "dataset": "cifar10",
  "venue": "arXiv, Mar 2021",
  "architecture": "PreActResNet-18",
  "eps": null,
  "clean_acc": "93.10",
  "reported": "84.1",
  "corruptions_acc": "84.10",
  "footnote": "Trained with RLAT."
}""")
# model_info/imagenet/corruptions/AlexNet.json
REAL_IMAGENET_CORRUPTIONS = json.loads("""{
  "link": "https://papers.nips.cc/paper/2012/hash/c399862d3b9d6b76c8436e924a68c45b-Abstract.html",
  "name": "ImageNet Classification with Deep Convolutional Neural Networks",
  "authors": "Alex Krizhevsky, Ilya Sutskever, Geoffrey E. Hinton",
  "additional_data": false,
  "number_forward_passes": 1,
  "dataset": "imagenet",
  "venue": "NeurIPS 2012",
  "architecture": "AlexNet",
  "eps": null,
  "clean_acc": "56.24",
  "reported": null,
  "corruptions_acc_3d": "28.47",
  "corruptions_mce_3d": "100.0",
  "footnote": null,
  "corruptions_acc": "21.12",
  "corruptions_mce": "100.0"
}""")

PERCENT = re.compile(r"^\d{1,3}\.\d{2}$")  # how RobustBench writes a percentage: "93.68"

COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
          "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")


def attack_summary(name: str = "pgd", steps: int | None = 10, examples: int = 1000) -> dict:
    return {"clean_accuracy": 0.9368, "robust_accuracy": {"0": 0.9368, "0.0156863": 0.81, "0.0313725": 0.7371},
            "attack": {"name": name, "steps": steps, "examples": examples, "clean_accuracy": 0.9368}}


def corruption_summary(mean_error: float = 0.159, corruption_set: str = "cifar10") -> dict:
    return {"clean_accuracy": 0.931, "corruption_set": corruption_set,
            "corruptions": {c: {str(s): 0.84 for s in range(1, 6)} for c in COMMON},
            "common": {"mean_error": mean_error, "mce": None, "relative_mce": None}}


META = {"name": "Stability training", "architecture": "WideResNet-28-10", "link": "https://example.org/paper",
        "authors": "A. Author", "venue": "arXiv 2025"}


def test_an_autoattack_summary_has_exactly_robustbenchs_linf_keys_and_formats():
    info = model_info(attack_summary("autoattack"), dataset="cifar10", threat_model="Linf", eps=8 / 255,
                      reported="73.71", footnote="It uses stability training.", **META)
    assert list(info) == list(REAL_LINF)
    assert {k: type(v) for k, v in info.items()} == {k: type(v) for k, v in REAL_LINF.items()}
    assert info["eps"] == REAL_LINF["eps"] == "8/255"
    assert info["clean_acc"] == "93.68" and info["autoattack_acc"] == "73.71"
    for key in ("clean_acc", "autoattack_acc"):
        assert PERCENT.match(REAL_LINF[key]) and PERCENT.match(info[key])
    assert info["footnote"] == "It uses stability training." and info["unreliable"] is False


def test_a_pgd_summary_leaves_autoattack_empty_and_says_so_in_a_footnote():
    info = model_info(attack_summary("pgd", steps=10, examples=1000), dataset="CIFAR-10", threat_model="linf",
                      eps=8 / 255, **META)
    keys = list(REAL_LINF)
    assert list(info) == keys[:keys.index("autoattack_acc") + 1] + ["pgd_acc", "footnote", "unreliable"]
    assert info["dataset"] == "cifar10"
    assert info["autoattack_acc"] is None and info["pgd_acc"] == "73.71" and PERCENT.match(info["pgd_acc"])
    note = info["footnote"]
    assert "10-step PGD" in note and "1000 test examples" in note and "not AutoAttack" in note
    half = model_info(attack_summary("fgsm", steps=None), dataset="cifar10", threat_model="Linf", eps=4 / 255, **META)
    assert half["fgsm_acc"] == "81.00" and half["eps"] == "4/255" and "FGSM" in half["footnote"]


def test_the_attack_must_fit_the_threat_model_and_the_epsilon_must_be_on_the_curve():
    with pytest.raises(StableTrainError, match="L2 attack"):
        model_info(attack_summary("pgd-l2"), dataset="cifar10", threat_model="Linf", eps=8 / 255, **META)
    l2 = {"clean_accuracy": 0.9, "robust_accuracy": {"0.5": 0.7}, "attack": {"name": "pgd-l2", "steps": 20,
                                                                            "examples": 500}}
    info = model_info(l2, dataset="cifar10", threat_model="L2", eps=0.5, **META)
    assert info["eps"] == "0.5" and info["pgd_l2_acc"] == "70.00"
    with pytest.raises(StableTrainError, match="no robust accuracy at eps=0.05"):
        model_info(attack_summary(), dataset="cifar10", threat_model="Linf", eps=0.05, **META)
    with pytest.raises(StableTrainError, match="needs eps"):
        model_info(attack_summary(), dataset="cifar10", threat_model="Linf", **META)
    with pytest.raises(StableTrainError, match="unknown threat model"):
        model_info(attack_summary(), dataset="cifar10", threat_model="L1", eps=0.1, **META)
    with pytest.raises(StableTrainError, match="no attack"):
        model_info({"clean_accuracy": 0.9, "robust_accuracy": {"0.5": 0.7}}, dataset="cifar10",
                   threat_model="L2", eps=0.5, **META)


def test_a_missing_clean_accuracy_is_a_clear_error():
    summary = attack_summary()
    del summary["clean_accuracy"]
    with pytest.raises(StableTrainError, match="no clean_accuracy"):
        model_info(summary, dataset="cifar10", threat_model="Linf", eps=8 / 255, **META)
    with pytest.raises(StableTrainError, match="fraction in"):
        model_info({**attack_summary(), "clean_accuracy": 93.68}, dataset="cifar10", threat_model="Linf",
                   eps=8 / 255, **META)
    with pytest.raises(StableTrainError, match="name must be a non-empty string"):
        model_info(attack_summary(), dataset="cifar10", threat_model="Linf", eps=8 / 255,
                   **{**META, "name": ""})


def test_a_cifar_corruption_summary_has_robustbenchs_corruption_keys():
    info = model_info(corruption_summary(mean_error=0.159), dataset="cifar10", threat_model="corruptions",
                      reported="84.1", **META)
    assert list(info) == list(REAL_CORRUPTIONS)
    assert info["eps"] is None and info["clean_acc"] == "93.10" and info["corruptions_acc"] == "84.10"
    assert PERCENT.match(REAL_CORRUPTIONS["corruptions_acc"])
    assert "stabletrain's implementation" in info["footnote"]
    with pytest.raises(StableTrainError, match="do not fit imagenet"):
        model_info(corruption_summary(), dataset="imagenet", threat_model="corruptions", **META)
    with pytest.raises(StableTrainError, match="no eps"):
        model_info(corruption_summary(), dataset="cifar10", threat_model="corruptions", eps=0.5, **META)
    with pytest.raises(StableTrainError, match="ImageNet only"):
        model_info(corruption_summary(), dataset="cifar10", threat_model="corruptions", corruptions_mce=0.5, **META)


def test_an_imagenet_corruption_summary_reproduces_robustbenchs_resnet50_entry():
    # RobustBench's Standard_R50 (model_info/imagenet/corruptions/Standard_R50.json, same commit): clean "76.72",
    # corruptions_acc "39.48", corruptions_mce "76.38" (tests/test_evaluation_mce.py recomputes both from its csv)
    summary = {**corruption_summary(mean_error=1 - 0.3948293, corruption_set="imagenet"), "clean_accuracy": 0.7672}
    info = model_info(summary, dataset="ImageNet", threat_model="corruptions", corruptions_mce=0.763774, **META)
    assert list(info) == list(REAL_IMAGENET_CORRUPTIONS)
    assert (info["clean_acc"], info["corruptions_acc"], info["corruptions_mce"]) == ("76.72", "39.48", "76.38")
    assert info["corruptions_acc_3d"] is None and info["corruptions_mce_3d"] is None
    partial = {**summary, "corruptions": {c: {"1": 0.5} for c in COMMON[:-1]}}
    note = model_info(partial, dataset="imagenet", threat_model="corruptions", **META)["footnote"]
    assert "without jpeg_compression" in note and "fewer than five severities" in note


def test_formats_and_paths():
    assert format_percent(0.0) == "0.00" and format_percent(0.5) == "50.00"
    assert format_eps(8 / 255, "Linf") == "8/255" and format_eps(1 / 255, "Linf") == "1/255"
    assert format_eps(0.25, "L2") == "0.25"
    with pytest.raises(StableTrainError):
        format_percent(float("nan"))
    with pytest.raises(StableTrainError):
        format_eps(0.0, "Linf")
    assert model_info_path("root", "cifar-100", "CORRUPTIONS", "X").as_posix() == \
        "root/model_info/cifar100/corruptions/X.json"
    with pytest.raises(StableTrainError, match="file name"):
        model_info_path("root", "cifar10", "Linf", "../X")


def test_write_model_info_round_trips(tmp_path):
    info = model_info(attack_summary(), dataset="cifar10", threat_model="Linf", eps=8 / 255, **META)
    path = write_model_info(model_info_path(tmp_path, "cifar10", "Linf", "Me2025Stable"), info)
    assert path == tmp_path / "model_info" / "cifar10" / "Linf" / "Me2025Stable.json"
    assert json.loads(path.read_text()) == info
    assert list(json.loads(path.read_text())) == list(info)
    with pytest.raises(StableTrainError, match="no 'clean_acc'"):
        write_model_info(tmp_path / "bad.json", {"name": "m"})


def test_a_real_evaluate_suites_summary_converts():
    from stabletrain.data import ImageDataset
    from stabletrain.evaluation import evaluate_suites
    from stabletrain.models import SmallCNN

    torch.manual_seed(0)
    data = ImageDataset(torch.rand(6, 3, 16, 16), torch.arange(6) % 3)
    out = evaluate_suites({"m": SmallCNN(3, 3, width=4)}, data, ["adversarial", "common"], severities=(1,),
                          epsilons=(0.0, 8 / 255), attack_steps=2, progress=False)
    summary = out["models"]["m"]
    linf = model_info(summary, dataset="cifar10", threat_model="Linf", eps=8 / 255, **META)
    assert linf["pgd_acc"] == format_percent(summary["robust_accuracy"]["0.0313725"])
    assert "2-step PGD" in linf["footnote"] and "6 test examples" in linf["footnote"]
    corr = model_info(summary, dataset="cifar10", threat_model="corruptions", **META)
    assert corr["corruptions_acc"] == format_percent(1 - summary["common"]["mean_error"])
    assert "fewer than five severities" in corr["footnote"]
