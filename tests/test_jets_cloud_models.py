"""The particle-cloud taggers: symmetries (permutation, padding, IRC safety for the EFN) and one training step of
every objective on a tiny cloud batch."""

import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.jets.cloud_models import EnergyFlowNetwork, ParticleFlowNetwork, ParticleNet, knn
from stabletrain.jets.cloud_perturbations import ParticleNoise
from stabletrain.jets.clouds import encode_clouds, pad_clouds
from stabletrain.registry import MODELS

MODELS_UNDER_TEST = {"pfn": dict(width=8, latent=8), "efn": dict(width=8, latent=8),
                     "particlenet": dict(width=6, neighbors=4)}


def make_clouds(n=6, k=12, slots=16, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, k + 1, n)
    c = np.zeros((n, k, 3))
    for i, m in enumerate(counts):
        c[i, :m] = np.column_stack([np.sort(rng.exponential(10.0, m))[::-1] + 0.1, rng.normal(0, 0.3, m),
                                    rng.normal(0, 0.3, m)])
    return encode_clouds(c, counts, np.zeros(n), np.zeros(n), slots), counts


def build(name, seed=0):
    torch.manual_seed(seed)
    return MODELS.build(name, num_classes=2, **MODELS_UNDER_TEST[name]).eval()


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_taggers_are_invariant_under_permutations_of_the_particles(name):
    model = build(name)
    x, counts = make_clouds()
    shuffled = x.clone()
    rng = np.random.default_rng(1)
    for i, m in enumerate(counts):
        order = torch.from_numpy(rng.permutation(x.shape[2]))   # real and padded slots shuffled together
        shuffled[i, 0] = x[i, 0, order]
    assert not torch.equal(shuffled, x)
    with torch.no_grad():
        torch.testing.assert_close(model(shuffled), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_padding_changes_nothing_even_where_a_perturbation_wrote_into_it(name):
    model = build(name)
    x, _ = make_clouds(slots=13)
    with torch.no_grad():
        reference = model(x)
        torch.testing.assert_close(model(pad_clouds(x, 40)), reference, atol=1e-6, rtol=1e-5)
        garbage = x.clone()
        padded = garbage[:, 0, :, 0] < 0.5
        garbage[:, 0][padded] = torch.tensor([0.3, 0.9, 0.1, 0.7])   # mask below 0.5: still a padded slot
        torch.testing.assert_close(model(garbage), reference, atol=1e-6, rtol=1e-5)
        # a jet's output does not depend on the other jets of its batch
        torch.testing.assert_close(model(x[2:3]), reference[2:3], atol=1e-6, rtol=1e-5)


def test_the_efn_is_infrared_and_collinear_safe_and_the_pfn_is_not():
    x, counts = make_clouds(n=3, slots=16)
    soft, split = x.clone(), x.clone()
    for i, m in enumerate(counts):
        soft[i, 0, m] = torch.tensor([1.0, 0.55, 0.45, 0.0])          # a particle of zero pT
        split[i, 0, m] = split[i, 0, 0]                               # the hardest particle split in two halves
        split[i, 0, m, 3] = split[i, 0, 0, 3] = x[i, 0, 0, 3] / 2
    efn, pfn = build("efn"), build("pfn")
    with torch.no_grad():
        torch.testing.assert_close(efn(soft), efn(x), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(efn(split), efn(x), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(pfn(split), pfn(x), atol=1e-4)


def test_knn_never_picks_padding_or_the_particle_itself():
    coords = torch.randn(2, 7, 2)
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    index, valid = knn(coords, mask, 5)
    assert index.shape == (2, 7, 5)
    for b in range(2):
        for i in range(7):
            picked = index[b, i][valid[b, i]].tolist()
            assert i not in picked and all(mask[b, j] for j in picked)
            if mask[b, i]:
                assert len(picked) == min(5, int(mask[b].sum()) - 1)
            else:
                assert picked == []


def test_bad_inputs_and_options_are_stabletrain_errors():
    for name in MODELS_UNDER_TEST:
        model = build(name)
        for shape in [(2, 1, 25, 25), (2, 5, 4), (2, 2, 5, 4)]:
            with pytest.raises(StableTrainError, match="B×1×M×4"):
                model(torch.zeros(shape))
    for bad in (lambda: ParticleFlowNetwork(width=0), lambda: EnergyFlowNetwork(latent=2.5),
                lambda: ParticleNet(neighbors=0), lambda: ParticleNet(num_classes=1)):
        with pytest.raises(StableTrainError):
            bad()
    with pytest.raises(StableTrainError, match="unknown option 'k'"):
        MODELS.build("particlenet", k=3)


# ------------------------------------------------------------------------------------------------ objectives

METHOD_OPTIONS = {"plain": {}, "gaussian": {"sigma": 0.2}, "gaussian-noisy": {"sigma": 0.2},
                  "stability": {"sigma": 0.2, "alpha": 1.0}, "jsd": {}, "jsd-gaussian": {"sigma": 0.2},
                  "trades": {"adv_steps": 1}, "adversarial": {"adv_steps": 2},
                  "consistency": {"sigma": 0.2}}


@pytest.mark.parametrize("method", METHOD_OPTIONS)
@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_every_objective_takes_a_training_step_on_clouds(method, name):
    import inspect

    from stabletrain.objectives import build_objective, objective_factory

    factory = objective_factory(method)
    target = factory.__init__ if inspect.isclass(factory) else factory
    noise = ParticleNoise(0.2) if "perturbation" in inspect.signature(target).parameters else None
    objective = build_objective(method, perturbation=noise, **METHOD_OPTIONS[method])
    model = build(name).train()
    x, _ = make_clouds(n=6, slots=14)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = objective(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["output"].shape == (6, 2)
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if noise is not None:
        assert getattr(objective, "perturbation", noise) is noise
