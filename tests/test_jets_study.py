import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.jets.study import (
    attack_rows,
    normalize_max,
    physical_pgd,
    sparse_energy_attack,
)


def _linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 2))
    return model


def test_pgd_respects_nonnegativity_epsilon_and_budget():
    model = _linear()
    x = torch.zeros(16, 1, 5, 5)
    x[:, 0, 2, 2] = 0.05
    y = torch.arange(16) % 2
    adv = physical_pgd(model, x, y, epsilon=0.01, budget=0.03, steps=5)
    delta = adv - x
    assert float(adv.min()) >= 0
    assert float(delta.abs().max()) <= 0.01 + 1e-7
    assert float(delta.abs().flatten(1).sum(1).max()) <= 0.03 + 1e-6
    assert torch.equal(physical_pgd(model, x, y, epsilon=0.0), x)


def test_pgd_flips_a_linear_model_at_large_epsilon():
    model = _linear()
    x = torch.rand(32, 1, 5, 5) * 0.5
    y = model(x).argmax(1)
    adv = physical_pgd(model, x, y, epsilon=0.5, steps=20)
    assert float((model(adv).argmax(1) != y).float().mean()) > 0.9


def test_sparse_attack_changes_at_most_k_cells_by_at_most_the_cap():
    model = _linear()
    x = torch.rand(8, 1, 5, 5) * 0.1
    y = torch.arange(8) % 2
    adv = sparse_energy_attack(model, x, y, k=3, max_change=0.02, steps=5)
    delta = adv - x
    assert int((delta.abs() > 0).flatten(1).sum(1).max()) <= 3
    assert float(delta.abs().max()) <= 0.02 + 1e-7 and float(adv.min()) >= 0
    with pytest.raises(StableTrainError, match="k must be"):
        sparse_energy_attack(model, x, y, k=-1, max_change=0.1)


def test_attack_rows_and_normalization():
    model = _linear()
    x = normalize_max(torch.rand(20, 1, 5, 5))
    assert torch.allclose(x.flatten(1).amax(1), torch.ones(20))
    rows = attack_rows({"m": model}, x, torch.arange(20) % 2, epsilons=[0.0, 0.5], ks=[2], progress=False)
    assert [r["attack"] for r in rows] == ["pgd", "pgd", "sparse"]
    assert rows[0]["success_rate"] == pytest.approx(rows[0]["clean_error"])
    assert rows[1]["success_rate"] >= rows[0]["success_rate"]


def test_attack_rows_carry_intervals_and_the_jets_behind_them():
    from stabletrain.jets.tagging import tagger_scores, tagging_metrics

    model = _linear()
    x = normalize_max(torch.rand(30, 1, 5, 5))
    y = (torch.arange(30) % 3 == 0).long()  # 10 signal, 20 background
    rows = attack_rows({"m": model}, x, y, epsilons=[0.0], ks=[2], progress=False)
    clean = tagging_metrics(tagger_scores(model, x), y.numpy())
    for r in rows:
        assert (r["signal"], r["background"]) == (10, 20)
        assert r["auc_low"] <= r["auc"] <= r["auc_high"]
        assert r["clean_auc_low"] <= r["clean_auc"] <= r["clean_auc_high"]
        for eff in (30, 50):
            assert r[f"rejection_{eff}"] == pytest.approx(20 / max(r[f"passed_{eff}"], 1))
            assert r[f"rejection_{eff}_low"] <= r[f"rejection_{eff}"]
    # ε = 0 leaves the jets as they were: the row is the clean tagger's, interval and counts included
    assert {k: rows[0][k] for k in clean} == pytest.approx(clean)


def test_fgsm_equals_its_closed_form_on_a_linear_model():
    from stabletrain.jets.study import physical_fgsm

    model = _linear()
    x = torch.rand(6, 1, 5, 5) * 0.1
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    weight = model[1].weight.detach()
    probs = model(x).softmax(1).detach()
    grad = ((probs - torch.nn.functional.one_hot(y, 2).float()) @ weight).view_as(x)
    expected = (x + 0.02 * grad.sign()).clamp(0.0, 1.0)
    torch.testing.assert_close(physical_fgsm(model, x, y, 0.02), expected)


class _RightOnlyOffTheCleanImage(nn.Module):
    """Gets jet i right exactly when its total pT moved away from the clean image's (rows in data-set order)."""

    def __init__(self, clean_total: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("clean_total", clean_total)
        self.register_buffer("sign", labels.float() * 2 - 1)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        moved = (x.flatten(1).sum(1) - self.clean_total[: len(x)]).abs() > 1e-4
        logit = torch.where(moved, 5.0, -5.0) * self.sign[: len(x)] + 0 * self.anchor
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def test_attack_rows_never_report_fewer_errors_than_on_clean_jets(monkeypatch):
    """Issue 11, item 2 for jets: an 'attack' that moves a clean-wrong jet to the right class must not count
    as robust, and a jet broken at a smaller strength stays broken at every larger one."""
    import stabletrain.jets.study as study

    x = torch.rand(10, 1, 5, 5) * 0.1
    y = torch.arange(10) % 2
    model = _RightOnlyOffTheCleanImage(x.flatten(1).sum(1), y)  # wrong on every clean jet
    # the strength-0.2 attack moves every jet (making the model right), the others move none
    monkeypatch.setattr(study, "physical_pgd", lambda m, xb, yb, eps, **kw: xb + 0.01 if eps == 0.2 else xb.clone())
    rows = attack_rows({"m": model}, x, y, epsilons=[0.3, 0.1, 0.2], progress=False)
    assert all(r["success_rate"] == 1.0 for r in rows)  # clean error is 100 %, so no attack lowers it
    assert [r["strength"] for r in rows] == [0.1, 0.2, 0.3]
    for before, after in zip(rows, rows[1:]):
        assert after["success_rate"] >= before["success_rate"]
