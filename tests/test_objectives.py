import numpy as np
import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.objectives import (
    GaussianAugmentation,
    NoisyOnlyAugmentation,
    PlainObjective,
    StabilityKLLoss,
    StabilityObjective,
    available_methods,
    build_objective,
    stability_kl,
)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_kl_matches_direct_computation_from_probabilities():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)) * 3, rng.normal(size=(7, 5)) * 3
    p, q = _softmax(a), _softmax(b)
    expected = np.mean(np.sum(p * np.log(p / q), axis=1))
    got = stability_kl(torch.tensor(a), torch.tensor(b))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    per_example = stability_kl(torch.tensor(a), torch.tensor(b), reduction="none")
    np.testing.assert_allclose(per_example.numpy(), np.sum(p * np.log(p / q), axis=1), rtol=1e-5)
    assert float(stability_kl(torch.tensor(a), torch.tensor(b), reduction="sum")) == pytest.approx(7 * expected, rel=1e-5)


def test_kl_zero_for_equal_outputs_and_positive_otherwise():
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(1)) * 4
    assert float(stability_kl(logits, logits.clone())) == pytest.approx(0.0, abs=1e-7)
    # Adding a constant to all logits leaves the distribution unchanged.
    assert float(stability_kl(logits, logits + 3.0)) == pytest.approx(0.0, abs=1e-6)
    other = logits + torch.randn(16, 10, generator=torch.Generator().manual_seed(2))
    assert (stability_kl(logits, other, reduction="none") > 0).all()


def test_kl_direction_is_clean_to_perturbed():
    # p = (0.9, 0.1) clean, q = (0.5, 0.5) perturbed.
    clean = torch.log(torch.tensor([[0.9, 0.1]]))
    perturbed = torch.zeros(1, 2)
    forward = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)   # KL(p||q) = 0.3681
    reverse = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)   # KL(q||p) = 0.5108
    assert float(stability_kl(clean, perturbed)) == pytest.approx(forward, rel=1e-6)
    assert abs(float(stability_kl(clean, perturbed)) - reverse) > 0.1


def test_kl_is_stable_for_saturated_logits():
    clean = torch.tensor([[200.0, 0.0, -200.0]])
    assert torch.isfinite(stability_kl(clean, torch.zeros(1, 3)))
    assert float(stability_kl(clean, clean)) == pytest.approx(0.0, abs=1e-6)


def test_detached_gradient_equals_papers_cross_entropy_gradient():
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(5, 4, generator=g)
    pert = torch.randn(5, 4, generator=g, requires_grad=True)
    stability_kl(clean, pert, detach_clean=True).backward()
    p = torch.softmax(clean, 1)
    pert2 = pert.detach().clone().requires_grad_(True)
    (-(p * torch.log_softmax(pert2, 1)).sum(1).mean()).backward()
    torch.testing.assert_close(pert.grad, pert2.grad)


class Recorder(nn.Module):
    """A linear classifier that keeps every output so tests can inspect their gradients."""

    def __init__(self, features=16, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(features, classes)
        self.outputs = []
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        out = self.linear(x.flatten(1))
        out.retain_grad()
        self.outputs.append(out)
        return out


def _batch():
    g = torch.Generator().manual_seed(4)
    return torch.rand(6, 1, 4, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def _zero_task(output, target):
    return output.sum() * 0.0


def test_gradients_reach_both_branches_by_default():
    x, y = _batch()
    model = Recorder()
    objective = StabilityObjective(_zero_task, alpha=1.0, sigma=0.2, batching="separate")
    objective(model, x, y, generator=torch.Generator().manual_seed(0))["loss"].backward()
    clean_out, pert_out = model.outputs
    assert clean_out.grad.abs().sum() > 0
    assert pert_out.grad.abs().sum() > 0
    assert model.linear.weight.grad.abs().sum() > 0


def test_detach_clean_blocks_the_clean_branch_only():
    x, y = _batch()
    model = Recorder()
    objective = StabilityObjective(_zero_task, alpha=1.0, sigma=0.2, detach_clean=True, batching="separate")
    objective(model, x, y, generator=torch.Generator().manual_seed(0))["loss"].backward()
    clean_out, pert_out = model.outputs
    assert clean_out.grad is None or clean_out.grad.abs().sum() == 0
    assert pert_out.grad.abs().sum() > 0


def test_parameter_gradient_matches_hand_written_objective():
    """The objective's gradient equals that of CE(f(x)) + alpha*KL(f(x)||f(x')) written out by hand."""
    x, y = _batch()
    alpha, sigma = 0.7, 0.1
    model = Recorder()
    out = StabilityObjective(nn.CrossEntropyLoss(), alpha=alpha, sigma=sigma, batching="separate")(
        model, x, y, generator=torch.Generator().manual_seed(9))
    out["loss"].backward()
    grad = model.linear.weight.grad.clone()

    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    x_pert = (x + sigma * noise).clamp(0, 1)
    torch.testing.assert_close(model.inputs[1], x_pert)
    model.zero_grad()
    clean, pert = model.linear(x.flatten(1)), model.linear(x_pert.flatten(1))
    p, log_p, log_q = torch.softmax(clean, 1), torch.log_softmax(clean, 1), torch.log_softmax(pert, 1)
    manual = nn.functional.cross_entropy(clean, y) + alpha * (p * (log_p - log_q)).sum(1).mean()
    manual.backward()
    torch.testing.assert_close(grad, model.linear.weight.grad)
    assert float(out["loss"].detach()) == pytest.approx(float(manual.detach()), rel=1e-6)


@pytest.mark.parametrize("batching", ["separate", "concat"])
def test_task_loss_sees_clean_inputs_only(batching):
    x, y = _batch()
    model = Recorder()
    seen = []

    def spy(output, target):
        seen.append(output.detach().clone())
        return nn.functional.cross_entropy(output, target)

    out = StabilityObjective(spy, alpha=1.0, sigma=0.3, batching=batching)(model, x, y)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], model.linear(x.flatten(1)).detach())
    torch.testing.assert_close(out["output"].detach(), seen[0])


def test_separate_and_concat_batching_give_the_same_loss_without_batch_norm():
    x, y = _batch()
    losses = []
    for batching in ("separate", "concat"):
        out = StabilityObjective(alpha=1.0, sigma=0.2, batching=batching)(
            Recorder(), x, y, generator=torch.Generator().manual_seed(5))
        losses.append(float(out["loss"].detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_batch_norm_running_stats_come_from_clean_pass_only():
    x, y = _batch()
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(16, 3))
    reference = nn.BatchNorm2d(1)
    reference.train()
    reference(x)  # one clean pass
    StabilityObjective(alpha=1.0, sigma=0.3, batching="separate", bn_stats="clean")(model, x, y)
    torch.testing.assert_close(model[0].running_mean, reference.running_mean)
    torch.testing.assert_close(model[0].running_var, reference.running_var)
    assert model[0].track_running_stats
    both = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(16, 3))
    StabilityObjective(alpha=1.0, sigma=0.3, batching="separate", bn_stats="both")(both, x, y)
    assert not torch.allclose(both[0].running_var, reference.running_var)


def test_alpha_zero_reduces_to_plain():
    x, y = _batch()
    stab = StabilityObjective(alpha=0.0, sigma=0.2)(Recorder(), x, y)
    plain = PlainObjective()(Recorder(), x, y)
    assert float(stab["loss"].detach()) == pytest.approx(float(plain["loss"].detach()))


def test_gaussian_augmentation_trains_on_clean_and_perturbed_copies():
    x, y = _batch()
    model = Recorder()
    seen = []

    def spy(output, target):
        seen.append(output.detach().clone())
        return nn.functional.cross_entropy(output, target)

    GaussianAugmentation(spy, sigma=0.2)(model, x, y, generator=torch.Generator().manual_seed(1))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert len(seen) == 2  # the task loss on the clean and on the perturbed copy
    torch.testing.assert_close(seen[0], model.linear(x.flatten(1)).detach())
    torch.testing.assert_close(seen[1], model.linear(noisy.flatten(1)).detach())
    seen.clear()
    NoisyOnlyAugmentation(spy, sigma=0.2)(model, x, y, generator=torch.Generator().manual_seed(1))
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], model.linear(noisy.flatten(1)).detach())


@pytest.mark.parametrize("bad, message", [
    (torch.full((2, 1, 4, 4), float("nan")), "NaN"),
    (torch.full((2, 1, 4, 4), 1.5), r"\[0, 1\]"),
    (torch.full((2, 1, 4, 4), -0.1), r"\[0, 1\]"),
    (torch.rand(2, 16), "B×C×H×W"),
    (torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8), "floating point"),
])
def test_objective_rejects_bad_inputs(bad, message):
    with pytest.raises(StableTrainError, match=message):
        StabilityObjective()(Recorder(), bad, torch.zeros(2, dtype=torch.long))


def test_loss_module_rejects_nan_logits_and_shape_mismatch():
    with pytest.raises(StableTrainError, match="NaN"):
        StabilityKLLoss()(torch.full((2, 3), float("nan")), torch.zeros(2, 3))
    with pytest.raises(StableTrainError, match="same shape"):
        StabilityKLLoss()(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": -1.0}, "alpha"),
    ({"sigma": -0.1}, "sigma"),
    ({"batching": "both"}, "batching"),
    ({"bn_stats": "noisy"}, "bn_stats"),
])
def test_bad_hyperparameters_are_rejected(kwargs, message):
    with pytest.raises(StableTrainError, match=message):
        StabilityObjective(**kwargs)


def test_build_objective_by_name():
    assert {"gaussian", "plain", "stability"} <= set(available_methods())
    assert isinstance(build_objective("stability", alpha=2.0), StabilityObjective)
    assert build_objective("gaussian", sigma=0.3).hyperparameters() == {"method": "gaussian", "sigma": 0.3,
                                                                          "batching": "concat", "bn_stats": "both"}
    assert build_objective("gaussian-noisy", sigma=0.3).hyperparameters() == {"method": "gaussian-noisy", "sigma": 0.3}
    with pytest.raises(StableTrainError, match="unknown method 'mixup'"):
        build_objective("mixup")


# ---- embeddings and ranking -------------------------------------------------------------------------------

from stabletrain.objectives import (  # noqa: E402
    EmbeddingStabilityLoss,
    TripletObjective,
    TripletRankingLoss,
    embedding_stability,
    feature_distance,
    triplet_ranking_loss,
)


def test_embedding_stability_equals_direct_computation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    ta, tb = torch.tensor(a), torch.tensor(b)
    assert float(embedding_stability(ta, tb)) == pytest.approx(np.mean(np.sum((a - b) ** 2, 1)))
    assert float(embedding_stability(ta, tb, distance="l2")) == pytest.approx(np.mean(np.linalg.norm(a - b, axis=1)))
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert float(embedding_stability(ta, tb, distance="cosine")) == pytest.approx(np.mean(1 - cos))
    for distance in ("squared_l2", "l2", "cosine"):
        assert float(embedding_stability(ta, ta.clone(), distance=distance)) == pytest.approx(0.0, abs=1e-7)


def test_l2_stability_has_finite_zero_gradient_at_identical_features():
    a = torch.randn(3, 4, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    embedding_stability(a, b, distance="l2").backward()
    assert torch.equal(a.grad, torch.zeros_like(a)) and torch.equal(b.grad, torch.zeros_like(b))


def test_embedding_stability_gradients_reach_both_branches_unless_detached():
    for detach, clean_has_grad in ((False, True), (True, False)):
        a = torch.randn(3, 4, requires_grad=True)
        b = torch.randn(3, 4, requires_grad=True)
        embedding_stability(a, b, detach_clean=detach).backward()
        assert (a.grad is not None and a.grad.abs().sum() > 0) == clean_has_grad
        assert b.grad.abs().sum() > 0


def test_triplet_loss_on_hand_made_cases():
    q = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])   # d(q,p) = 5, 1, 0
    n = torch.tensor([[6.0, 8.0], [0.0, 2.0], [1.0, 1.5]])   # d(q,n) = 10, 2, 0.5
    per = triplet_ranking_loss(q, p, n, margin=1.0, reduction="none")
    assert per.tolist() == pytest.approx([0.0, 0.0, 0.5])   # max(0, 1+5-10), max(0, 1+1-2), max(0, 1+0-0.5)
    squared = triplet_ranking_loss(q, p, n, margin=1.0, distance="squared_l2", reduction="none")
    assert squared.tolist() == pytest.approx([0.0, 0.0, 0.75])  # 1+25-100, 1+1-4, 1+0-0.25
    module = TripletRankingLoss(margin=1.0)(torch.stack([q, p, n], dim=1))
    assert float(module) == pytest.approx(0.5 / 3)
    with pytest.raises(StableTrainError, match="margin"):
        triplet_ranking_loss(q, p, n, margin=-1)
    with pytest.raises(StableTrainError, match="B×3×D"):
        TripletRankingLoss()(torch.zeros(2, 4))


def test_feature_distance_rejects_bad_shapes_and_names():
    with pytest.raises(StableTrainError, match="B×D"):
        feature_distance(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(StableTrainError, match="distance must be one of"):
        EmbeddingStabilityLoss("manhattan")
    with pytest.raises(StableTrainError, match="NaN"):
        EmbeddingStabilityLoss()(torch.full((2, 3), float("nan")), torch.zeros(2, 3))


class EmbedRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, 4)
        self.outputs = []

    def forward(self, x):
        out = self.linear(x.flatten(1))
        out.retain_grad()
        self.outputs.append(out)
        return out


def _triplets():
    return torch.rand(5, 3, 1, 4, 4, generator=torch.Generator().manual_seed(2))


def test_triplet_stability_objective_matches_hand_written_loss():
    triplets = _triplets()
    model = EmbedRecorder()
    out = TripletObjective("stability", alpha=0.5, sigma=0.1, margin=0.3, batching="separate")(
        model, triplets, generator=torch.Generator().manual_seed(4))
    images = triplets.flatten(0, 1)
    noisy = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    f, g = model.linear(images.flatten(1)), model.linear(noisy.flatten(1))
    fq, fp, fn = f.view(5, 3, 4).unbind(1)
    task = (0.3 + (fq - fp).norm(dim=1) - (fq - fn).norm(dim=1)).clamp_min(0).mean()
    expected = task + 0.5 * (f - g).pow(2).sum(1).mean()
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert float(out["task_loss"]) == pytest.approx(float(task.detach()), rel=1e-6)
    out["loss"].backward()
    assert model.outputs[0].grad.abs().sum() > 0 and model.outputs[1].grad.abs().sum() > 0


def test_triplet_task_loss_sees_clean_images_only():
    triplets = _triplets()
    model = EmbedRecorder()
    seen = []

    def spy(features, target):
        seen.append(features.detach().clone())
        return features.sum() * 0

    TripletObjective("stability", spy, alpha=1.0, sigma=0.3)(model, triplets)
    torch.testing.assert_close(seen[0], model.linear(triplets.flatten(0, 1).flatten(1)).view(5, 3, 4).detach())


def test_triplet_objective_by_name_and_bad_batches():
    objective = build_objective("gaussian", task="similarity", sigma=0.2, margin=0.5)
    assert objective.hyperparameters() == {"method": "gaussian", "task": "similarity", "margin": 0.5, "sigma": 0.2,
                                           "batching": "concat", "bn_stats": "both"}
    assert available_methods("similarity") == ["gaussian", "gaussian-noisy", "plain", "stability"]
    with pytest.raises(StableTrainError, match="B×3×C×H×W"):
        objective(EmbedRecorder(), torch.rand(5, 1, 4, 4))
    with pytest.raises(StableTrainError, match="NaN"):
        objective(EmbedRecorder(), torch.full((2, 3, 1, 4, 4), float("nan")))
    with pytest.raises(StableTrainError, match="unknown task"):
        build_objective("plain", task="segmentation")


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


def test_auto_batching_depends_on_the_model_not_the_device():
    """Issue 11, item 4: 'auto' picked 'concat' on CUDA, which mixes both copies into batch-norm statistics."""
    from stabletrain.objectives import resolve_batching

    assert resolve_batching("auto", _bn_model()) == "separate"
    group = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))
    assert resolve_batching("auto", group) == "concat"
    with pytest.raises(StableTrainError, match="cannot keep them clean"):
        resolve_batching("concat", _bn_model(), "clean")
    assert resolve_batching("concat", _bn_model(), "both") == "concat"


def test_auto_batching_trains_the_separate_objective_on_a_batch_norm_model():
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    outputs, stats = [], []
    for batching in ("auto", "separate"):
        model = _bn_model().train()
        out = StabilityObjective(alpha=1.0, sigma=0.1, batching=batching)(model, x, y,
                                                                          generator=torch.Generator().manual_seed(0))
        outputs.append(float(out["loss"].detach()))
        stats.append(model[1].running_mean.clone())
    assert outputs[0] == outputs[1]
    assert torch.equal(stats[0], stats[1])
    # and the clean-only running statistics are those of the clean batch alone
    reference = _bn_model().train()
    reference(x)
    assert torch.allclose(stats[0], reference[1].running_mean)


def test_stability_kl_rejects_nan_logits():
    with pytest.raises(StableTrainError, match="NaN or inf"):
        stability_kl(torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2))
    with pytest.raises(StableTrainError, match="perturbed logits"):
        stability_kl(torch.zeros(1, 2), torch.tensor([[float("inf"), 0.0]]))


# ---- the augmentation baseline, both variants -------------------------------------------------------------

def _small_bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 16, 4))


def _noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """The perturbed copy, drawn again the way GaussianNoise draws it (clip(x + sigma * N(0, 1), 0, 1))."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + sigma * noise).clamp(0, 1)


def test_gaussian_is_the_task_loss_on_clean_and_noisy_copies_and_gaussian_noisy_on_noisy_only():
    """The method's baseline: the data set enlarged with perturbed copies, originals kept; the noisy-only variant
    keeps its own name. Computed again by hand: the losses, the gradients, and what batch norm saw."""
    x, y = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0, 1])
    noisy = _noisy(x, 0.3, seed=7)
    for method, expected_input, weights in (("gaussian", torch.cat([x, noisy]), (0.5, 0.5)),
                                            ("gaussian-noisy", noisy, (0.0, 1.0))):
        model, reference = _small_bn_model(), _small_bn_model()
        out = build_objective(method, sigma=0.3)(model, x, y, generator=torch.Generator().manual_seed(7))
        out["loss"].backward()
        # by hand: one pass over what the method feeds the model (both copies at once for gaussian)
        logits = reference(expected_input)
        parts = logits.split(len(x)) if method == "gaussian" else (logits[:0], logits)
        manual = sum(w * nn.functional.cross_entropy(p, y) for w, p in zip(weights, parts) if w)
        manual.backward()
        torch.testing.assert_close(out["loss"], manual)
        for (name, a), b in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=f"{method}: {name}")
        # batch norm's running mean moved toward the batch it normalized: clean + noisy, or noisy only
        torch.testing.assert_close(model[1].running_mean, reference[1].running_mean)
        if method == "gaussian":
            assert set(out) >= {"clean_loss", "noisy_loss"}
            torch.testing.assert_close(out["clean_loss"], nn.functional.cross_entropy(parts[0], y).detach())
    # the two variants differ, and the clean-only model differs from both
    a = build_objective("gaussian", sigma=0.3)(_small_bn_model(), x, y, generator=torch.Generator().manual_seed(7))
    b = build_objective("gaussian-noisy", sigma=0.3)(_small_bn_model(), x, y, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(a["loss"], b["loss"])


def test_triplet_gaussian_averages_the_clean_and_the_noisy_triplet_loss():
    embedder = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    triplets = torch.rand(5, 3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    loss = TripletRankingLoss(0.2)
    noisy = _noisy(triplets.flatten(0, 1), 0.2, seed=3).view_as(triplets)

    def triplet_loss(t):
        return loss(embedder(t.flatten(0, 1)).view(5, 3, -1))

    both = build_objective("gaussian", task="similarity", sigma=0.2)(embedder, triplets,
                                                                     generator=torch.Generator().manual_seed(3))
    only = build_objective("gaussian-noisy", task="similarity", sigma=0.2)(embedder, triplets,
                                                                           generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(both["loss"], 0.5 * (triplet_loss(triplets) + triplet_loss(noisy)))
    torch.testing.assert_close(only["loss"], triplet_loss(noisy))
