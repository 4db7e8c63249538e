"""Physically constrained attacks on particle clouds, the matched image attack, and FGSM adversarial training."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.jets.cloud_attacks import (
    ANGLE_UNIT,
    CloudAttack,
    CloudBudget,
    cloud_attack_curve,
    cloud_fgsm,
    cloud_pgd,
    image_attack_curve,
    maximize_cloud_loss,
    relative_image_fgsm,
    relative_image_pgd,
)
from stabletrain.jets.cloud_models import EnergyFlowNetwork, ParticleFlowNetwork, ParticleNet
from stabletrain.jets.data import PIXEL_UNIT_GEV
from stabletrain.objectives import FGSMAdversarialObjective, LinfAttack, build_objective
from stabletrain.seeding import ExampleRNG, example_seeds

FRAME = 1.0 / ANGLE_UNIT  # radians per unit of the η, φ columns (4)


def random_clouds(n, slots, seed, full_rows=1):
    """Clouds with random particle counts (some jets full, so no free slot), positions near the frame edge too,
    and pT from 1e-6 TeV up to the 1 TeV top of the encoding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, slots, 4)
    counts = torch.randint(1, slots + 1, (n,), generator=g)
    counts[:full_rows] = slots
    for i, m in enumerate(counts.tolist()):
        x[i, 0, :m, 0] = 1.0
        x[i, 0, :m, 1:3] = torch.rand(m, 2, generator=g)  # anywhere in the frame, edges included
        pt = torch.rand(m, generator=g) ** 3
        pt[0] = 1.0 if i % 3 == 0 else pt[0]  # a particle at the top of the encoding
        pt[-1] = 1e-6 if m > 1 else pt[-1]
        x[i, 0, :m, 3] = pt
    return x


def free_slots(x, k):
    """The first k free slots of each jet (what the attack injects into), as a B×M bool mask."""
    real = x[:, 0, :, 0] > 0.5
    chosen = torch.zeros_like(real)
    for i in range(len(x)):
        chosen[i, torch.nonzero(~real[i]).flatten()[:k]] = True
    return chosen


def assert_physical(x, adv, budget, clean_allowed=True):
    """Every constraint of the budget, checked on the decoded particles.

    A jet may come back as its clean cloud (the attacks score it as a candidate: it is the adversarial of a jet
    that no attacked cloud beats); every other jet must satisfy all constraints, its injected particles included.
    """
    assert adv.shape == x.shape and bool(torch.isfinite(adv).all())
    if clean_allowed:
        attacked = ~(adv == x).flatten(1).all(1)
        x, adv = x[attacked], adv[attacked]
    real = x[:, 0, :, 0] > 0.5
    a, c = adv[:, 0], x[:, 0]
    assert torch.equal(a[..., 0][real], c[..., 0][real])  # the mask of real particles never changes
    assert float(a[..., 3].min()) >= 0.0 and float(a[..., 3].max()) <= 1.0  # 0 <= pT <= 1 TeV
    assert float(a[..., 1:3].min()) >= 0.0 and float(a[..., 1:3].max()) <= 1.0  # inside the frame
    dpt = (a[..., 3] - c[..., 3]).abs()[real]
    assert bool((dpt <= budget.pt * c[..., 3][real] * (1 + 1e-6) + 1e-12).all())
    shift = (a[..., 1:3] - c[..., 1:3]).abs()[real] * FRAME  # in radians
    assert float(torch.cat([shift.flatten(), torch.zeros(1)]).max()) <= budget.angle + 1e-5
    injected = free_slots(x, budget.particles) if budget.injects else torch.zeros_like(real)
    untouched = ~real & ~injected
    assert bool((a[untouched] == 0).all())  # padding not injected into stays exactly zero
    if budget.injects:
        assert bool((a[..., 0][injected] == 1.0).all())
        offset = (a[..., 1:3] - 0.5)[injected] * FRAME
        assert float(torch.cat([offset.norm(dim=-1), torch.zeros(1)]).max()) <= budget.radius * (1 + 1e-6)
        total = (a[..., 3] * injected).sum(1) * PIXEL_UNIT_GEV
        assert float(total.max()) <= budget.budget_gev * (1 + 1e-6)


def small_models():
    torch.manual_seed(0)
    return {"pfn": ParticleFlowNetwork(width=8, latent=8).eval(), "efn": EnergyFlowNetwork(width=8, latent=8).eval(),
            "particlenet": ParticleNet(width=4, neighbors=3).eval()}


BUDGETS = [CloudBudget(pt=0.3), CloudBudget(pt=0.2, angle=0.1),
           CloudBudget(pt=1.5, angle=0.4, particles=3, budget_gev=20.0, radius=0.8),
           CloudBudget(angle=0.05, particles=8, budget_gev=2.0)]


# ------------------------------------------------------------------------------------------------ constraints


@pytest.mark.parametrize("seed, name", [(0, "pfn"), (1, "efn"), (2, "particlenet"), (3, "pfn")])
@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: b.describe())
def test_every_constraint_holds_after_fgsm_and_pgd(seed, name, budget):
    x = random_clouds(6, 7, seed)
    y = torch.arange(6) % 2
    for model in (small_models()[name],):
        for adv in (cloud_fgsm(model, x, y, budget).adversarial,
                    cloud_pgd(model, x, y, budget, steps=3, generator=torch.Generator().manual_seed(seed)).adversarial,
                    cloud_pgd(model, x, y, budget, steps=2, step_size=0.9, random_start=False).adversarial,
                    maximize_cloud_loss(model, x, lambda z: z[:, 0].sum(), budget, steps=3, start="normal",
                                        generator=torch.Generator().manual_seed(seed))):
            assert_physical(x, adv, budget)
        last = maximize_cloud_loss(model, x, lambda z: z[:, 1].sum(), budget, steps=2,
                                   generator=torch.Generator().manual_seed(seed))
        assert_physical(x, last, budget, clean_allowed=False)  # the final iterate: always attacked


def test_the_attack_moves_particles_to_the_corners_it_is_allowed():
    x = random_clouds(8, 6, 3)
    budget = CloudBudget(pt=0.25, angle=0.08, particles=2, budget_gev=10.0)
    model = small_models()["pfn"]
    y = torch.ones(8, dtype=torch.long)
    # FGSM's step (maximize_cloud_loss's final iterate, never the clean cloud) is the same as cloud_fgsm's
    adv = maximize_cloud_loss(model, x, lambda z: nn.functional.cross_entropy(z, y, reduction="sum"), budget,
                              steps=1, step_size=1.0, start="none")
    fgsm = cloud_fgsm(model, x, y, budget).adversarial
    attacked = ~(fgsm == x).flatten(1).all(1)
    assert attacked.any() and torch.equal(fgsm[attacked], adv[attacked])
    real = x[:, 0, :, 0] > 0.5
    moved = (adv - x)[:, 0][real]
    rel = (moved[:, 3].abs() / x[:, 0][real][:, 3])
    # FGSM takes each real pT to pT·(1 ± ε) unless the 1 TeV top clips it
    unclipped = x[:, 0][real][:, 3] * 1.25 < 1.0
    assert torch.allclose(rel[unclipped], torch.full_like(rel[unclipped], 0.25), atol=1e-5)
    assert int((free_slots(x, 2) & (adv[:, 0, :, 0] == 1)).sum()) == int(free_slots(x, 2).sum()) > 0


# ------------------------------------------------------------------------------- a linear model, optimum known


class LinearCloud(nn.Module):
    """Logits ``[0, s]`` with ``s = b + Σ_slots mask·(a·pT + c·η)``: the optimal attack is known in closed form."""

    def __init__(self, slots, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(slots, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(slots, generator=g, dtype=torch.float64) * 0.2)
        self.bias = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def score(self, x):
        rows = x[:, 0].double()
        mask = (rows[..., 0] > 0.5).double()
        return self.bias + (mask * (self.a * rows[..., 3] + self.c * rows[..., 1])).sum(1)

    def forward(self, x):
        s = self.score(x)
        return torch.stack([torch.zeros_like(s), s], 1)


def linear_jets(n, slots, seed):
    """Signal jets (label 1) with real particles well inside the frame and pT small enough never to clip."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, slots, 4, dtype=torch.float64)
    for i in range(n):
        m = int(torch.randint(1, slots - 1, (1,), generator=g))
        x[i, 0, :m, 0] = 1.0
        x[i, 0, :m, 1:3] = 0.3 + 0.4 * torch.rand(m, 2, generator=g, dtype=torch.float64)
        x[i, 0, :m, 3] = 0.05 + 0.2 * torch.rand(m, generator=g, dtype=torch.float64)
    return x


def optimal_drop(model, x, budget):
    """The largest decrease of s the budget allows: each term at its own optimum (the terms are separable)."""
    rows = x[:, 0]
    real = (rows[..., 0] > 0.5).double()
    a, c = model.a.detach(), model.c.detach()
    drop = (real * (budget.pt * a.abs() * rows[..., 3] + budget.angle * ANGLE_UNIT * c.abs())).sum(1)
    if budget.injects:
        slots = free_slots(x, budget.particles).double()
        disc = budget.radius * ANGLE_UNIT
        # each injected particle exists (mask 1): its η term goes to 0.5 − sign(c)·disc, and the whole pT budget
        # goes to the free slot with the most negative a
        drop = drop - (slots * (0.5 * c - c.abs() * disc)).sum(1)
        best_a = torch.where(slots > 0, a.expand_as(slots), torch.full_like(slots, math.inf)).amin(1)
        drop = drop - budget.budget_gev / PIXEL_UNIT_GEV * torch.clamp(best_a, max=0.0)
    return drop


def test_fgsm_and_pgd_reach_the_known_optimum_of_a_linear_model():
    model = LinearCloud(8)
    x = linear_jets(12, 8, 1)
    y = torch.ones(12, dtype=torch.long)
    with torch.no_grad():
        model.bias.fill_(10.0)  # nobody is fooled, so each attack returns its strongest (lowest s) candidate
        clean = model.score(x)
        for budget in (CloudBudget(pt=0.2), CloudBudget(pt=0.1, angle=0.2)):
            expected = optimal_drop(model, x, budget)
            for result in (cloud_fgsm(model, x, y, budget),
                           cloud_pgd(model, x, y, budget, steps=5, generator=torch.Generator().manual_seed(0))):
                drop = clean - model.score(result.adversarial)
                assert torch.allclose(drop, expected, atol=1e-9), budget  # the box corner is the optimum
        injection = CloudBudget(pt=0.1, particles=3, budget_gev=30.0)
        adv = cloud_pgd(model, x, y, injection, steps=30, step_size=0.5,
                        generator=ExampleRNG(example_seeds(range(12), 0, "t"))).adversarial
        drop, expected = clean - model.score(adv), optimal_drop(model, x, injection)
        assert bool((drop <= expected + 1e-9).all())  # nothing beats the optimum
        assert torch.allclose(drop, expected, rtol=0.02, atol=1e-3)  # and PGD gets there


def test_robust_accuracy_falls_with_the_budget_exactly_as_the_linear_optimum_says():
    model = LinearCloud(6, seed=3)
    x = linear_jets(40, 6, 2)
    y = torch.arange(40) % 2
    with torch.no_grad():
        model.bias.fill_(-float(model.score(x).median()))  # about half the jets right on the clean cloud
        margin = model.score(x) * (2 * y - 1)  # how far each jet is on its right side
    epsilons = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]
    rows = cloud_attack_curve(model, x, y, epsilons, attack="fgsm")
    robust = [row["robust_accuracy"] for row in rows]
    expected = [float((margin > optimal_drop(model, x, CloudBudget(pt=e))).double().mean()) for e in epsilons]
    assert robust == pytest.approx(expected)
    assert robust == sorted(robust, reverse=True) and robust[0] == rows[0]["clean_accuracy"] > robust[-1]
    assert all(row["success_rate"] == pytest.approx(1 - row["robust_accuracy"]) for row in rows)
    assert rows[0]["auc"] == rows[0]["clean_auc"] or math.isnan(rows[0]["auc"])


# ----------------------------------------------------------------------------------------- a trained tagger


def synthetic_jets(n, slots, seed):
    """One-prong (label 0) and two-prong (label 1) jets: the second prong carries a third of the pT."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, slots, 4)
    y = torch.arange(n) % 2
    for i in range(n):
        m = int(torch.randint(4, slots - 2, (1,), generator=g))
        deta = 0.03 * torch.randn(m, generator=g)
        dphi = 0.03 * torch.randn(m, generator=g)
        pt = torch.rand(m, generator=g) * 0.05 + 0.01
        if y[i] == 1:
            half = m // 2
            deta[half:] += 0.4
            pt[half:] *= 0.5
        x[i, 0, :m, 0] = 1.0
        x[i, 0, :m, 1] = 0.5 + deta * ANGLE_UNIT
        x[i, 0, :m, 2] = 0.5 + dphi * ANGLE_UNIT
        x[i, 0, :m, 3] = pt
    return x, y


@pytest.fixture(scope="module")
def trained_pfn():
    torch.manual_seed(0)
    x, y = synthetic_jets(128, 12, 0)
    model = ParticleFlowNetwork(width=16, latent=16, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # two epochs of batches of 16
        for index in torch.randperm(128).split(16):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval()


def test_pgd_lowers_a_trained_taggers_accuracy_and_auc_monotonically(trained_pfn):
    x, y = synthetic_jets(48, 12, 1)
    budgets = [CloudBudget(), CloudBudget(pt=0.1, angle=0.02), CloudBudget(pt=0.3, angle=0.1),
               CloudBudget(pt=0.6, angle=0.3)]
    rows = cloud_attack_curve(trained_pfn, x, y, budgets, steps=5, batch_size=20, seed=1)
    assert rows[0]["clean_accuracy"] > 0.8
    robust = [row["robust_accuracy"] for row in rows]
    assert robust == sorted(robust, reverse=True) and robust[-1] < robust[0] - 0.3
    assert rows[-1]["auc"] < rows[0]["auc"] - 0.1
    assert rows[0]["changed_particles"] == 0.0 and rows[-1]["changed_particles"] > 1
    assert all(r["robust_accuracy_at_budget"] <= r["clean_accuracy"] for r in rows)
    fgsm = cloud_attack_curve(trained_pfn, x, y, budgets, attack="fgsm")
    assert [r["robust_accuracy"] for r in fgsm] == sorted((r["robust_accuracy"] for r in fgsm), reverse=True)


def test_the_curve_does_not_depend_on_the_batch_size(trained_pfn):
    x, y = synthetic_jets(10, 12, 2)
    budgets = [CloudBudget(pt=0.2, angle=0.05, particles=2, budget_gev=5.0), 0.3]
    one = cloud_attack_curve(trained_pfn, x, y, budgets, steps=3, batch_size=1, seed=4)
    many = cloud_attack_curve(trained_pfn, x, y, budgets, steps=3, batch_size=7, seed=4)
    for a, b in zip(one, many):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True), key


def test_batch_of_one_and_of_n_give_the_same_adversarials(trained_pfn):
    x, _ = synthetic_jets(6, 12, 3)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    seeds = example_seeds(range(6), 9, "attack")
    budget = CloudBudget(pt=0.3, angle=0.1, particles=2, budget_gev=8.0)
    together = cloud_pgd(trained_pfn, x, y, budget, steps=4, generator=ExampleRNG(seeds)).adversarial
    alone = torch.cat([cloud_pgd(trained_pfn, x[i:i + 1], y[i:i + 1], budget, steps=4,
                                 generator=ExampleRNG(seeds[i:i + 1])).adversarial for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-6)
    start = lambda rows: maximize_cloud_loss(trained_pfn, x[rows], lambda z: z[:, 1].sum(), budget, steps=1,
                                             step_size=0.0, generator=ExampleRNG(seeds[rows]))  # noqa: E731
    assert torch.equal(start(slice(0, 6))[2:4], start(slice(2, 4)))  # the random start itself is per jet


def test_a_zero_budget_changes_nothing():
    x = random_clouds(5, 6, 4)
    y = torch.arange(5) % 2
    zero = CloudBudget(particles=4)  # particles without a pT budget inject nothing
    for model in small_models().values():
        assert torch.equal(cloud_fgsm(model, x, y, zero).adversarial, x)
        assert torch.equal(cloud_pgd(model, x, y, 0.0, generator=torch.Generator().manual_seed(0)).adversarial, x)
        assert torch.equal(maximize_cloud_loss(model, x, lambda z: z.sum(), CloudBudget()), x)
    images = torch.rand(3, 1, 4, 4) * 0.2
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert torch.equal(relative_image_pgd(linear, images, torch.tensor([0, 1, 0]), 0.0).adversarial, images)


# ------------------------------------------------------------------------------------ the matched image attack


def test_the_relative_image_attack_keeps_empty_cells_empty_and_bounds_each_cell():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 2))
    x = torch.rand(8, 1, 5, 5) * 0.3 * (torch.rand(8, 1, 5, 5) > 0.5)
    y = torch.arange(8) % 2
    for adv in (relative_image_pgd(model, x, y, 0.4, steps=4, generator=torch.Generator().manual_seed(1)).adversarial,
                relative_image_fgsm(model, x, y, 0.4).adversarial):
        assert bool(((adv - x).abs() <= 0.4 * x + 1e-7).all()) and bool((adv[x == 0] == 0).all())
        assert float(adv.min()) >= 0
    rows = image_attack_curve(model, x, y, [0.0, 0.2, 0.6], steps=3)
    assert [r["robust_accuracy"] for r in rows] == sorted((r["robust_accuracy"] for r in rows), reverse=True)
    assert rows[0]["input"] == "images" and "changed_cells" in rows[0]


def test_images_and_clouds_see_the_same_threat_at_the_same_epsilon():
    """A pixelized cloud tagger under the cloud attack and the same tagger on images under the relative attack:
    with pT-only budgets both reach the same optimum, since the reachable images are the same."""
    torch.manual_seed(2)
    cells = 4
    weights = torch.randn(cells * cells, dtype=torch.float64)

    def pixelize(x):
        rows = x[:, 0].double()
        index = (rows[..., 1].clamp(0, 0.999) * cells).long() * cells + (rows[..., 2].clamp(0, 0.999) * cells).long()
        image = torch.zeros(len(x), cells * cells, dtype=torch.float64)
        return image.scatter_add(1, index, rows[..., 3] * (rows[..., 0] > 0.5).double()).view(-1, 1, cells, cells)

    class OnImages(nn.Module):
        def forward(self, image):
            s = (image.flatten(1).double() * weights).sum(1) + 5.0
            return torch.stack([torch.zeros_like(s), s], 1)

    class OnClouds(OnImages):
        def forward(self, x):
            return super().forward(pixelize(x))

    x = linear_jets(10, 8, 5)
    y = torch.ones(10, dtype=torch.long)
    for eps in (0.1, 0.5):
        cloud = OnClouds()(cloud_fgsm(OnClouds(), x, y, eps).adversarial)[:, 1]
        image = OnImages()(relative_image_fgsm(OnImages(), pixelize(x), y, eps).adversarial)[:, 1]
        assert torch.allclose(cloud, image, atol=1e-9)


# --------------------------------------------------------------------------- adversarial training with attacks


def test_fgsm_adversarial_trains_a_cloud_tagger_against_the_physical_attack():
    from stabletrain.tasks import get_task

    task = get_task("jets", cloud_attack_angle=0.1, cloud_attack_particles=2, cloud_attack_budget_gev=4.0)
    objective = task.objective(SimpleNamespace(model="pfn", method="fgsm-adversarial",
                                               method_args={"adv_epsilon": 0.2}))
    assert isinstance(objective, FGSMAdversarialObjective) and isinstance(objective.attack, CloudAttack)
    model = ParticleFlowNetwork(width=8, latent=8)
    x, y = synthetic_jets(8, 12, 4)
    budget = CloudBudget(pt=0.2, angle=0.1, particles=2, budget_gev=4.0)
    x_adv = objective.adversarial(model, x, y)
    assert_physical(x, x_adv, budget)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = objective(model, x, y, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    optimizer.step()
    assert out["adversarial_loss"] >= out["clean_loss"] - 1e-6
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training  # the attack ran in eval mode and restored the mode


def test_fgsm_adversarial_on_images_is_an_linf_fgsm_mixed_with_clean():
    from stabletrain.jets.tagging import JetTagger

    torch.manual_seed(0)
    model = JetTagger(width=2, image_size=8, input="linear")
    x, y = torch.rand(4, 1, 8, 8) * 0.5 + 0.25, torch.tensor([0, 1, 0, 1])
    objective = build_objective("fgsm-adversarial", adv_epsilon=0.05, adv_weight=0.25)
    assert isinstance(objective.attack, LinfAttack)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))  # no zero gradients: FGSM moves every pixel by ± ε
    x_adv = objective.adversarial(linear, x, y)
    assert torch.allclose((x_adv - x).abs(), torch.full_like(x, 0.05), atol=1e-6)
    x.requires_grad_()
    grad = torch.autograd.grad(nn.functional.cross_entropy(linear(x), y, reduction="sum"), x)[0]
    assert torch.equal(torch.sign(x_adv - x.detach()), grad.sign())
    x = x.detach()
    out = objective(model, x, y)
    assert float(out["loss"].detach()) == pytest.approx(0.75 * float(out["clean_loss"]) + 0.25 * float(out["adversarial_loss"]),
                                               rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.head.parameters())
    with pytest.raises(StableTrainError, match="adv_weight must be in"):
        build_objective("fgsm-adversarial", adv_weight=1.5)


def test_pgd_training_and_trades_use_the_cloud_attack_for_cloud_taggers():
    from stabletrain.tasks import get_task

    task = get_task("jets")
    model = ParticleFlowNetwork(width=8, latent=8)
    x, y = synthetic_jets(6, 12, 5)
    budget = CloudBudget(pt=0.1, angle=0.05)
    adversarial = task.objective(SimpleNamespace(model="efn", method="adversarial", method_args={"adv_epsilon": 0.1,
                                                                                                 "adv_steps": 3}))
    x_adv = adversarial.attack(model, x, lambda z: nn.functional.cross_entropy(z, y, reduction="sum"),
                               epsilon=0.1, steps=3, step_size=0.03, start="uniform",
                               generator=torch.Generator().manual_seed(0))
    assert_physical(x, x_adv, budget)
    trades = task.objective(SimpleNamespace(model="particlenet", method="trades",
                                            method_args={"adv_epsilon": 0.1, "adv_steps": 2}))
    assert_physical(x, trades.adversarial(model, x, torch.Generator().manual_seed(0)), budget)
    for objective in (adversarial, trades):
        out = objective(model, x, y, generator=torch.Generator().manual_seed(1))
        out["loss"].backward()
    # image taggers keep the L∞ attack, and the cloud attack's options are refused for them
    image = task.objective(SimpleNamespace(model="small_cnn", method="adversarial", method_args={}))
    assert isinstance(image.attack, LinfAttack)
    with pytest.raises(StableTrainError, match="cloud_attack_particles 3 is for particle clouds"):
        get_task("jets", cloud_attack_particles=3).objective(
            SimpleNamespace(model="small_cnn", method="adversarial", method_args={}))
    with pytest.raises(StableTrainError, match="runs no inner attack"):
        build_objective("plain", attack=CloudAttack())


# ------------------------------------------------------------------------------------------------ bad budgets


@pytest.mark.parametrize("options, message", [
    ({"pt": -0.1}, "the relative pT budget pt must be a finite number >= 0, got -0.1"),
    ({"pt": float("nan")}, "the relative pT budget pt must be a finite number >= 0, got nan"),
    ({"angle": float("inf")}, "the angular budget angle (rad) must be a finite number >= 0, got inf"),
    ({"budget_gev": -1.0}, "the injected pT budget budget_gev (GeV) must be a finite number >= 0"),
    ({"particles": -2}, "particles (soft particles to inject) must be a whole number >= 0"),
    ({"particles": 1.5}, "particles (soft particles to inject) must be a whole number >= 0"),
    ({"radius": 3.0}, "the injection radius must be in (0, 2]"),
    ({"pt": "0.1"}, "the relative pT budget pt must be a finite number >= 0"),
])
def test_bad_budgets_are_one_clear_error(options, message):
    with pytest.raises(StableTrainError) as error:
        CloudBudget(**options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_budgets_of_curves_attacks_and_the_task_are_refused():
    from stabletrain.tasks import get_task

    model, x, y = small_models()["efn"], random_clouds(3, 4, 0), torch.tensor([0, 1, 0])
    for bad in (-0.1, float("nan"), float("inf")):
        for call in (lambda: cloud_attack_curve(model, x, y, [0.1, bad]),
                     lambda: cloud_pgd(model, x, y, bad), lambda: cloud_fgsm(model, x, y, bad),
                     lambda: relative_image_pgd(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), x, y, bad)):
            with pytest.raises(StableTrainError, match="must be a finite number >= 0") as error:
                call()
            assert "\n" not in str(error.value)
    with pytest.raises(StableTrainError, match="the angular budget angle"):
        get_task("jets", cloud_attack_angle=-1.0)
    with pytest.raises(StableTrainError, match="steps must be a whole number"):
        cloud_pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(StableTrainError, match="unknown attack 'cw'; known: pgd, fgsm, apgd-ce"):
        cloud_attack_curve(model, x, y, [0.1], attack="cw")
    with pytest.raises(StableTrainError, match="B×1×M×4"):
        cloud_pgd(model, torch.rand(2, 1, 5, 5), torch.tensor([0, 1]), 0.1)
    with pytest.raises(StableTrainError, match="relative pT budgets only"):
        image_attack_curve(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4),
                           torch.tensor([0, 1]), [CloudBudget(angle=0.1)])
    assert np.isfinite(cloud_attack_curve(model, x, y, [0.1])[0]["robust_accuracy"])
