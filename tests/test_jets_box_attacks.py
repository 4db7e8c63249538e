"""AutoAttack's components on jets: the physical constraints hold inside APGD, Square and AutoAttack, they reach
the known optimum of a linear tagger, AutoAttack contains its APGD-CE, and the CLI runs them."""

import json

import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.cli.main import main
from stabletrain.jets.box_attacks import BOX_ATTACKS, box_attack, box_radius
from stabletrain.jets.cloud_attacks import CloudBudget, cloud_attack_curve, image_attack_curve
from stabletrain.seeding import ExampleRNG, example_seeds
from test_jets_cloud_attacks import (LinearCloud, assert_physical, linear_jets, optimal_drop, random_clouds,
                                     small_models, synthetic_jets)

SMALL = {"steps": 4, "queries": 30}
BINARY = [name for name in BOX_ATTACKS if name not in ("apgd-dlr", "apgd-t")]


def _streams(n, seed=0):
    return ExampleRNG(example_seeds(range(n), seed, "box"))


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("model_name", ["pfn", "efn", "particlenet"])
@pytest.mark.parametrize("budget", [CloudBudget(pt=0.3), CloudBudget(pt=0.2, angle=0.1), CloudBudget(pt=1.5, angle=0.4)],
                         ids=lambda b: b.describe())
def test_every_constraint_holds_inside_the_box_attacks(name, model_name, budget):
    x = random_clouds(6, 7, 1)
    x[2, 0, 5:, 1:] = 0.3  # junk in padded slots: the attacks read them as zero, as cloud_pgd does
    y = torch.arange(6) % 2
    out = box_attack(name, small_models()[model_name], x, y, budget, kind="cloud", generator=_streams(6), **SMALL)
    clean = x.clone()
    clean[2, 0, 5:, 1:] = 0.0
    assert_physical(clean, out.adversarial, budget, clean_allowed=False)


def test_box_attacks_reach_the_known_optimum_of_a_linear_cloud_tagger():
    """Logits linear in pT and η: robust accuracy is known at every budget; APGD and AutoAttack reach it, Square
    never goes below it."""
    model = LinearCloud(6, seed=3)
    x = linear_jets(40, 6, 2)
    y = torch.arange(40) % 2
    with torch.no_grad():
        model.bias.fill_(-float(model.score(x).median()))
        margin = model.score(x) * (2 * y - 1)
    budgets = [CloudBudget(), CloudBudget(pt=0.1), CloudBudget(pt=0.2, angle=0.1), CloudBudget(pt=0.8, angle=0.2)]
    expected = [float((margin > optimal_drop(model, x, b)).double().mean()) for b in budgets]
    assert expected == sorted(expected, reverse=True) and expected[0] > expected[-1]
    for attack, extra in (("apgd-ce", {}), ("autoattack", {"queries": 20})):
        rows = cloud_attack_curve(model, x, y, budgets, attack=attack, steps=5, **extra)
        assert [r["robust_accuracy"] for r in rows] == pytest.approx(expected), attack
    rows = cloud_attack_curve(model, x, y, budgets, attack="square", queries=300)
    found = [r["robust_accuracy"] for r in rows]
    assert all(f >= e - 1e-12 for f, e in zip(found, expected))  # sound: no jet the box cannot flip
    assert found[-1] < found[0]


def test_image_box_attacks_bound_each_cell_and_reach_the_linear_optimum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2)).double()
    x = torch.rand(60, 1, 6, 6, dtype=torch.float64) * 0.3 * (torch.rand(60, 1, 6, 6) > 0.4)
    x[:, :, -1], x[:, :, :, -1] = 0.0, 0.0  # Square's windows never start on the last row or column alone
    y = torch.arange(60) % 2
    with torch.no_grad():
        w = model[1].weight[1] - model[1].weight[0]
        model[1].bias.copy_(torch.tensor([0.0, -float((x.flatten(1) @ w).median())]))
        score = model(x)[:, 1] - model(x)[:, 0]
    for eps in (0.3, 1.0, 2.5):
        direction = (w.view(1, 1, 6, 6) * (2 * y - 1).view(-1, 1, 1, 1).double())
        worst = torch.where(direction > 0, (x * (1 - eps)).clamp_min(0), (x * (1 + eps)).clamp_max(0.4))
        margin = (model(worst)[:, 1] - model(worst)[:, 0]) * (2 * y - 1)
        expected = float(((score * (2 * y - 1) > 0) & (margin > 0)).double().mean())
        for name in BINARY:
            out = box_attack(name, model, x, y, CloudBudget(pt=eps), kind="image", upper=0.4, steps=5, queries=2000,
                             generator=_streams(60))
            adv = out.adversarial
            assert bool(((adv - x).abs() <= eps * x + 1e-12).all()) and bool((adv[x == 0] == 0).all())
            assert float(adv.min()) >= 0 and float(adv.max()) <= 0.4 + 1e-12
            assert float((~out.success).double().mean()) == pytest.approx(expected), (name, eps)


def test_autoattack_contains_its_apgd_ce_and_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    x, y = synthetic_jets(30, 10, 0)
    model = small_models()["pfn"]
    budgets = [0.0, 0.3, 1.0]
    ce = cloud_attack_curve(model, x, y, budgets, attack="apgd-ce", steps=4, seed=2)
    full = cloud_attack_curve(model, x, y, budgets, attack="autoattack", steps=4, queries=40, seed=2, batch_size=7)
    again = cloud_attack_curve(model, x, y, budgets, attack="autoattack", steps=4, queries=40, seed=2, batch_size=30)
    for a, b, c in zip(ce, full, again):
        assert b["robust_accuracy"] <= a["robust_accuracy"]
        assert b["robust_accuracy"] == c["robust_accuracy"] and b["auc"] == pytest.approx(c["auc"])
    images = torch.rand(20, 1, 5, 5) * 0.2
    linear = nn.Sequential(nn.Flatten(), nn.Linear(25, 2))
    rows = image_attack_curve(linear, images, torch.arange(20) % 2, [0.0, 0.5], attack="autoattack", steps=3,
                              queries=10)
    assert rows[1]["robust_accuracy"] <= rows[0]["robust_accuracy"] and rows[0]["attack"] == "autoattack"


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: cloud_attack_curve(m, x, y, [0.1], attack="apgd-ce", step_size=0.1), "sets its own step sizes"),
    (lambda m, x, y: cloud_attack_curve(m, x, y, [0.1], attack="apgd-ce", random_start=False), "random start"),
    (lambda m, x, y: cloud_attack_curve(m, x, y, [0.1], attack="pgd", queries=10), "takes no query budget"),
    (lambda m, x, y: cloud_attack_curve(m, x, y, [0.1], attack="apgd-ce", queries=10), "takes no query budget"),
    (lambda m, x, y: cloud_attack_curve(m, x, y, [0.1], attack="square", steps=3), "takes no steps"),
    (lambda m, x, y: cloud_attack_curve(m, x, y, [CloudBudget(pt=0.1, particles=2, budget_gev=3.0)],
                                        attack="square"), "injected soft particles need attack 'pgd'"),
    (lambda m, x, y: cloud_attack_curve(m, x, y, [0.1], attack="apgd-t", steps=2), "needs at least 4 classes"),
    (lambda m, x, y: box_attack("cw", m, x, y, CloudBudget(pt=0.1), kind="cloud"), "unknown box attack"),
    (lambda m, x, y: box_radius(x, CloudBudget(pt=0.1, angle=0.1), "image"), "relative pT budgets only"),
])
def test_bad_box_attack_options_are_one_clear_error(call, message):
    x = random_clouds(4, 5, 0)
    with pytest.raises(StableTrainError, match=message) as error:
        call(small_models()["efn"], x, torch.arange(4) % 2)
    assert "\n" not in str(error.value)


def test_jets_evaluate_runs_autoattack_with_its_budget(tmp_path, capsys):
    from test_jets_evaluate import write_both

    data = tmp_path / "jets.h5"
    write_both(data, n=48, k=10)
    run = tmp_path / "pfn"
    assert main(["train", "--task", "jets", "--data", str(data), "--model", "pfn", "--method", "plain", "--epochs", "1",
                 "--width", "4", "--batch-size", "16", "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "attacked"
    assert main(["jets", "evaluate", str(run), "--distortions", "clean", "--attack", "autoattack",
                 "--attack-budgets", "0,0.3", "--attack-steps", "3", "--attack-queries", "15", "--save-scores",
                 "--attack-jets", "6", "--out", str(out)]) == 0
    saved = json.loads((out / "attacks.json").read_text())
    assert saved["settings"]["attack"] == "autoattack"
    assert saved["settings"]["steps"] == 3 and saved["settings"]["queries"] == 15
    rows = saved["rows"]
    assert rows[1]["robust_accuracy"] <= rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]
    # the attacked jets' scores give back every robust accuracy of the table, jet by jet
    import numpy as np

    kept = np.load(out / "attack_scores.npz")
    labels, name = kept["labels"], rows[0]["model"]
    right = (kept[f"{name}|clean"] >= 0.5) == labels
    for row, key in zip(rows, ("pt 0, angle 0", "pt 0.3, angle 0")):
        fooled = (kept[f"{name}|{key}"] >= 0.5) != labels
        assert row["robust_accuracy_at_budget"] == pytest.approx(float((right & ~fooled).mean()))
    assert len(kept["rows"]) == 6 == row["n"]
    err = capsys.readouterr().err
    assert "apgd-ce:" in err and "square:" in err  # AutoAttack's components report as they finish
    for flags, message in ((["--attack", "pgd", "--attack-queries", "5"], "takes no query budget"),
                           (["--attack", "square", "--attack-steps", "5"], "takes no steps"),
                           (["--attack", "apgd-ce", "--attack-inject", "2:5"], "--attack-inject needs --attack pgd"),
                           (["--attack-queries", "5"], "only take effect with --attack")):
        assert main(["jets", "evaluate", str(run), "--distortions", "clean", *flags,
                     "--out", str(tmp_path / "bad")]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("stabletrain: error: ") and message in line and "\n" not in line
