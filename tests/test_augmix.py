"""AugMix views: each operation against Pillow, the mixing, the randomness, and the jsd methods."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import nn

from stabletrain.augmix import OPERATIONS, AugMix, apply_operation, mix_chains, operation_parameter
from stabletrain.checks import StableTrainError
from stabletrain.consistency import js_divergence
from stabletrain.objectives import build_objective, method_options
from stabletrain.perturbations import GaussianNoise, RelativeNoise, noise_shard
from stabletrain.seeding import ExampleRNG

# -- the reference: google-research/augmix augmentations.py, with its random draws made explicit ----------------------


def int_parameter(level, maxval):
    return int(level * maxval / 10)


def float_parameter(level, maxval):
    return float(level) * maxval / 10.


def reference_parameter(name, level, flip, width, height):
    """The argument that augmentations.py passes to Pillow (IMAGE_SIZE replaced by the image's own size)."""
    if name in ("autocontrast", "equalize"):
        return 0
    value = {"posterize": lambda: 4 - int_parameter(level, 4),
             "solarize": lambda: 256 - int_parameter(level, 256),
             "rotate": lambda: int_parameter(level, 30),
             "shear_x": lambda: float_parameter(level, 0.3),
             "shear_y": lambda: float_parameter(level, 0.3),
             "translate_x": lambda: int_parameter(level, width / 3),
             "translate_y": lambda: int_parameter(level, height / 3)}[name]()
    signed = name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
    return -value if signed and flip else value


def pillow_op(img, name, p):
    """augmentations.py's operation ``name`` with its parameter given."""
    size = img.size
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "posterize":
        return ImageOps.posterize(img, int(p))
    if name == "solarize":
        return ImageOps.solarize(img, int(p))
    if name == "rotate":
        return img.rotate(p, resample=Image.BILINEAR)
    data = {"shear_x": (1, p, 0, 0, 1, 0), "shear_y": (1, 0, 0, p, 1, 0),
            "translate_x": (1, 0, p, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, p)}[name]
    return img.transform(size, Image.AFFINE, data, resample=Image.BILINEAR)


def to_pil(chw):
    """A C×H×W array of integers 0..255 as a Pillow image (L or RGB)."""
    arr = np.asarray(chw, dtype=np.uint8)
    return Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))


def from_pil(img):
    arr = np.asarray(img, dtype=np.float64)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def make_images(channels, height, width, seed=0):
    """uint8-valued N×C×H×W floats: noise, a low-contrast image, one with 3 values, a smooth ramp."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (channels, height, width))
    low = 90 + rng.integers(0, 40, (channels, height, width))
    few = rng.choice([0, 7, 200], (channels, height, width))
    ramp = np.broadcast_to((np.arange(width)[None, :] * 7 + np.arange(height)[:, None] * 3) % 256,
                           (channels, height, width))
    return torch.tensor(np.stack([noise, low, few, ramp]), dtype=torch.float32)


geometric = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def assert_matches_pillow(ours, reference, what, exact):
    """Point operations: exact. Bilinear warps: at most 1 grey level, on at most 0.5 % of the values.

    The warps repeat Pillow's C arithmetic (double precision, the same operation order, truncation
    of the interpolated value), so on this CPU they match exactly; the allowance is for a platform
    whose arithmetic differs in the last bit (fused multiply-adds), which can move a truncation at an
    integer boundary by one grey level. A wrong convention (half-pixel offset, rounding instead of
    truncation, border handling) breaks far more than 0.5 % of the values.
    """
    diff = np.abs(ours - reference)
    if exact:
        assert diff.max() == 0, f"{what}: {(diff > 0).sum()} values differ, by up to {diff.max()}"
    else:
        assert diff.max() <= 1, f"{what}: off by {diff.max()}"
        assert (diff > 0).mean() <= 0.005, f"{what}: {100 * (diff > 0).mean():.2f} % of values differ"


# -- operation by operation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(20, 24), (32, 32)])  # not square: each side is used where the
@pytest.mark.parametrize("channels", [1, 3])                     # reference uses IMAGE_SIZE
@pytest.mark.parametrize("name", OPERATIONS)
def test_each_operation_matches_pillow(name, channels, height, width):
    images = make_images(channels, height, width, seed=channels)
    for level in (0.1, 1.7, 2.5, 2.99, 6.2, 9.99):
        for flip in (False, True):
            p = reference_parameter(name, level, flip, width, height)
            ours = apply_operation(images, name, p)
            assert ours.shape == images.shape and ours.dtype == images.dtype
            reference = np.stack([from_pil(pillow_op(to_pil(im), name, p)) for im in images.numpy()])
            assert_matches_pillow(ours.numpy(), reference, f"{name} at {p}", exact=name not in geometric)


@pytest.mark.parametrize("degrees", [0, 90, 180, 270, -90, 12.5, -29, 360])
def test_rotation_special_angles_match_pillow(degrees):
    for height, width in ((16, 16), (12, 18)):
        images = make_images(3, height, width, seed=5)
        ours = apply_operation(images, "rotate", degrees).numpy()
        reference = np.stack([from_pil(pillow_op(to_pil(im), "rotate", degrees)) for im in images.numpy()])
        assert_matches_pillow(ours, reference, f"rotate {degrees}", exact=False)


def test_per_image_parameters_and_an_empty_batch():
    images = make_images(1, 16, 16)
    params = torch.tensor([3.0, -7.0, 0.0, 12.0])
    ours = apply_operation(images, "translate_x", params).numpy()
    for i, p in enumerate(params.tolist()):
        np.testing.assert_array_equal(ours[i], from_pil(pillow_op(to_pil(images[i].numpy()), "translate_x", p)))
    assert apply_operation(images[:0], "rotate", 3.0).shape == (0, 1, 16, 16)
    with pytest.raises(StableTrainError, match="one parameter per image"):
        apply_operation(images, "rotate", torch.tensor([1.0, 2.0]))
    with pytest.raises(StableTrainError, match="needs a parameter"):
        apply_operation(images, "solarize")
    with pytest.raises(StableTrainError, match="unknown AugMix operation 'color'"):
        apply_operation(images, "color", 1.0)


def test_level_to_parameter_is_the_references():
    rng = np.random.default_rng(3)
    levels, flips = rng.uniform(0.1, 10, 300), rng.uniform(size=300) > 0.5
    for name in OPERATIONS:
        for width, height in ((32, 32), (24, 20), (224, 160)):
            got = operation_parameter(name, torch.tensor(levels), torch.tensor(flips), height, width).tolist()
            expected = [reference_parameter(name, lv, fl, width, height) for lv, fl in zip(levels, flips)]
            assert got == expected, name


# -- whole chains and the mix -----------------------------------------------------------------------------------------

def pillow_augmix(x, plan, augmix):
    """The reference's augment_and_mix on the plan's draws: Pillow chains, mixed in float64."""
    out, chains = [], []
    for b in range(x.shape[0]):
        image = to_pil(np.rint(x[b].numpy() * 255))
        mixed_chains = []
        for i in range(augmix.width):
            img = image
            for step in range(int(plan.depths[b, i])):
                name = OPERATIONS[int(plan.operations[b, i, step])]
                img = pillow_op(img, name, float(plan.parameters[b, i, step]))
            mixed_chains.append(from_pil(img) / 255.0)
        chains.append(np.stack(mixed_chains))
        m, w = float(plan.mix[b]), plan.weights[b].numpy()
        out.append((1 - m) * x[b].numpy().astype(np.float64) + m * sum(w[i] * c for i, c in enumerate(mixed_chains)))
    return np.stack(out), np.stack(chains)


@pytest.mark.parametrize("channels,severity", [(1, 3), (3, 3), (3, 10)])
def test_augment_and_mix_matches_the_pillow_reference(channels, severity):
    augmix = AugMix(severity=severity)
    x = make_images(channels, 18, 22, seed=7).repeat(2, 1, 1, 1) / 255.0  # 8 uint8-valued images
    plan = augmix.sample(8, (18, 22), torch.Generator().manual_seed(11))
    assert set(plan.depths.flatten().tolist()) == {1, 2, 3}
    expected, expected_chains = pillow_augmix(x, plan, augmix)
    chains = augmix.chains(x, plan).numpy()
    # whole chains, with the allowance of the warps (a one-level difference may carry on through a chain)
    assert_matches_pillow(np.rint(chains * 255), np.rint(expected_chains * 255), "chains", exact=False)
    out = augmix(x, generator=torch.Generator().manual_seed(11)).numpy()  # the same draws as the plan
    assert np.abs(out - expected).max() <= 1 / 255 + 1e-6
    assert np.abs(out - expected).mean() < 1e-5


def test_chains_start_from_the_rounded_uint8_image():
    augmix = AugMix()
    plan = augmix.sample(4, (16, 16), torch.Generator().manual_seed(2))
    k = make_images(3, 16, 16, seed=4).clamp(0, 254)
    chains = augmix.chains(k / 255, plan)
    assert torch.equal(augmix.chains((k + 0.45) / 255, plan), chains)
    assert torch.equal(augmix.chains((k + 0.55) / 255, plan), augmix.chains((k + 1) / 255, plan))
    assert torch.equal(torch.round(chains * 255), chains * 255)  # the chains stay on the uint8 grid


def test_mixing_formula_by_hand():
    x = torch.full((2, 1, 2, 2), 0.2)
    chains = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.5, 1.0)]).unsqueeze(0).repeat(2, 1, 1, 1, 1)
    weights = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    mixed = mix_chains(x, chains, weights, torch.tensor([0.4, 1.0]))
    # (1 - 0.4)·0.2 + 0.4·(0.2·0 + 0.3·0.5 + 0.5·1) = 0.12 + 0.26; the second takes chain 0 only
    torch.testing.assert_close(mixed[0], torch.full((1, 2, 2), 0.38))
    torch.testing.assert_close(mixed[1], torch.zeros(1, 2, 2))
    assert torch.equal(mix_chains(x, chains, weights, torch.zeros(2)), x)


# -- randomness -------------------------------------------------------------------------------------------------------

def _batch(n=4, channels=3, size=16, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_same_seed_same_views_different_seeds_differ():
    augmix, x = AugMix(), _batch()
    before = x.clone()
    a = augmix(x, torch.Generator().manual_seed(3))
    b = augmix(x, torch.Generator().manual_seed(3))
    c = augmix(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(3)
    first, second = augmix(x, g), augmix(x, g)  # the two views of jsd: one generator, two calls
    assert torch.equal(first, a) and not torch.equal(first, second)
    assert torch.equal(x, before)
    assert not torch.equal(a, x)


def test_per_example_streams_do_not_depend_on_the_batch():
    augmix, x = AugMix(), _batch(6)
    whole = augmix(x, ExampleRNG.for_examples(range(6), 0, "augmix"))
    part = augmix(x[2:5], ExampleRNG.for_examples(range(2, 5), 0, "augmix"))
    torch.testing.assert_close(part, whole[2:5], rtol=0, atol=1e-6)


def test_noise_shard_gets_its_rows_of_the_global_batch():
    augmix, x = AugMix(), _batch(4)
    full = augmix(x, torch.Generator().manual_seed(9))
    with noise_shard(2, 2, 4):
        part = augmix(x[2:], torch.Generator().manual_seed(9))
    torch.testing.assert_close(part, full[2:], rtol=0, atol=1e-6)


def test_draws_follow_the_reference_distributions():
    plan = AugMix().sample(3000, (32, 32), torch.Generator().manual_seed(0))
    depths = plan.depths.flatten()
    for d in (1, 2, 3):
        assert abs(float((depths == d).double().mean()) - 1 / 3) < 0.02
    ops = plan.operations.flatten()
    for k in range(len(OPERATIONS)):
        assert abs(float((ops == k).double().mean()) - 1 / 9) < 0.015
    torch.testing.assert_close(plan.weights.sum(1), torch.ones(3000, dtype=torch.float64))
    w0 = plan.weights[:, 0]  # Dirichlet(1, 1, 1) margin: Beta(1, 2), mean 1/3, variance 1/18
    assert abs(float(w0.mean()) - 1 / 3) < 0.015 and abs(float(w0.var()) - 1 / 18) < 0.006
    assert abs(float(plan.mix.mean()) - 0.5) < 0.02 and abs(float(plan.mix.var()) - 1 / 12) < 0.006
    params = {name: plan.parameters[plan.operations == k] for k, name in enumerate(OPERATIONS)}
    assert set(params["posterize"].tolist()) == {3.0, 4.0}  # severity 3: 4 - int(level·0.4), level < 3
    assert params["rotate"].abs().max() <= 8 and (params["rotate"] < 0).any() and (params["rotate"] > 0).any()
    assert params["translate_x"].abs().max() <= 3  # int(2.99·(32/3)/10)
    assert params["solarize"].min() >= 256 - 76


@pytest.mark.parametrize("alpha", [0.3, 4.0])
def test_beta_and_dirichlet_concentration(alpha):
    plan = AugMix(alpha=alpha).sample(4000, (8, 8), torch.Generator().manual_seed(1))
    variance = 1 / (4 * (2 * alpha + 1))  # Beta(alpha, alpha)
    assert abs(float(plan.mix.mean()) - 0.5) < 0.025 and abs(float(plan.mix.var()) - variance) / variance < 0.12
    torch.testing.assert_close(plan.weights.sum(1), torch.ones(4000, dtype=torch.float64))
    assert bool((plan.weights >= 0).all()) and bool(torch.isfinite(plan.weights).all())


# -- the perturbation's contract --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels,size", [(1, (16, 16)), (3, (20, 28))])
def test_shape_dtype_and_range(channels, size, dtype):
    x = torch.rand(3, channels, *size, generator=torch.Generator().manual_seed(2), dtype=dtype)
    for augmix in (AugMix(), AugMix(width=1, depth=4, severity=10, alpha=0.5)):
        out = augmix(x, torch.Generator().manual_seed(5))
        assert out.shape == x.shape and out.dtype == dtype
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    ones = AugMix()(torch.ones(2, channels, *size, dtype=dtype), torch.Generator().manual_seed(1))
    assert float(ones.max()) <= 1
    assert AugMix()(x[:0]).shape == x[:0].shape


def test_fixed_depth_and_inputs_outside_the_unit_range():
    plan = AugMix(depth=2).sample(5, (8, 8), torch.Generator().manual_seed(0))
    assert plan.depths.eq(2).all() and plan.operations.shape == (5, 3, 2)
    x = torch.full((1, 1, 8, 8), 1.5)
    chains = AugMix().chains(x, AugMix().sample(1, (8, 8), torch.Generator().manual_seed(0)))
    assert float(chains.max()) <= 1  # clipped before quantization, as the reference's np.clip


@pytest.mark.parametrize("options,message", [
    ({"width": 0}, "width must be an integer >= 1"),
    ({"width": 2.5}, "width must be an integer >= 1"),
    ({"width": True}, "width must be an integer >= 1"),
    ({"depth": 0}, "depth must be -1"),
    ({"depth": -2}, "depth must be -1"),
    ({"severity": 0}, "severity must be an integer in 1..10"),
    ({"severity": 11}, "severity must be an integer in 1..10"),
    ({"severity": 2.5}, "severity must be an integer in 1..10"),
    ({"alpha": 0.0}, "alpha must be a finite number > 0"),
    ({"alpha": -1.0}, "alpha must be a finite number > 0"),
    ({"alpha": float("inf")}, "alpha must be a finite number > 0"),
    ({"alpha": float("nan")}, "alpha must be a finite number > 0"),
    ({"alpha": "one"}, "alpha must be a finite number > 0"),
])
def test_bad_options_are_rejected(options, message):
    with pytest.raises(StableTrainError, match=message) as info:
        AugMix(**options)
    assert "\n" not in str(info.value)


def test_bad_inputs_are_rejected():
    with pytest.raises(StableTrainError, match="B×C×H×W floating point"):
        AugMix()(torch.rand(3, 8, 8))
    with pytest.raises(StableTrainError, match="B×C×H×W floating point"):
        AugMix()(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = make_images(3, 32, 32).repeat(4, 1, 1, 1) / 255.0
    cpu = AugMix()(x, torch.Generator().manual_seed(4))
    gpu = AugMix()(x.cuda(), torch.Generator().manual_seed(4))
    assert gpu.device.type == "cuda"
    diff = (gpu.cpu() - cpu).abs()
    assert float(diff.max()) <= 1 / 255 + 1e-6 and float((diff > 1e-6).double().mean()) < 0.005


# -- the jsd methods --------------------------------------------------------------------------------------------------

def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 3))


def test_jsd_uses_augmix_views_by_default():
    objective = build_objective("jsd")
    assert isinstance(objective.perturbation, AugMix)
    assert list(method_options("jsd")) == ["jsd_lambda", "augmix_width", "augmix_depth", "augmix_severity",
                                           "augmix_alpha"]
    assert method_options("jsd")["augmix_depth"] == -1
    model, x, y = _model(), _batch(5, 3, 4), torch.tensor([0, 1, 2, 0, 1])
    out = objective(model, x, y, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    views = [AugMix()(x, g), AugMix()(x, g)]
    clean = model(x)
    expected = nn.functional.cross_entropy(clean, y) + 12 * js_divergence(clean, model(views[0]), model(views[1]))
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    hp = objective.hyperparameters()
    assert (hp["method"], hp["views"], hp["lambda"], hp["augmix_width"], hp["augmix_severity"]) == \
        ("jsd", "augmix", 12.0, 3, 3)


def test_jsd_options_reach_augmix_and_bad_ones_fail():
    views = build_objective("jsd", augmix_width=2, augmix_depth=1, augmix_severity=6, augmix_alpha=0.5).perturbation
    assert (views.width, views.depth, views.severity, views.alpha) == (2, 1, 6, 0.5)
    with pytest.raises(StableTrainError, match="augmix width"):
        build_objective("jsd", augmix_width=0)
    with pytest.raises(StableTrainError, match="unknown option 'sigma' for method 'jsd'"):
        build_objective("jsd", sigma=0.1)


def test_jsd_gaussian_keeps_the_old_noisy_views():
    assert method_options("jsd-gaussian") == {"sigma": 0.1, "jsd_lambda": 12.0}
    objective = build_objective("jsd-gaussian", sigma=0.2, jsd_lambda=3.0)
    assert isinstance(objective.perturbation, GaussianNoise) and objective.perturbation.sigma == 0.2
    model, x, y = _model(), _batch(5, 3, 4), torch.tensor([0, 1, 2, 0, 1])
    out = objective(model, x, y, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    views = [(x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1) for _ in range(2)]
    clean = model(x)
    expected = nn.functional.cross_entropy(clean, y) + 3 * js_divergence(clean, model(views[0]), model(views[1]))
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    hp = objective.hyperparameters()
    assert (hp["method"], hp["views"], hp["sigma"]) == ("jsd-gaussian", "gaussian", 0.2)


@pytest.mark.parametrize("method", ["jsd", "jsd-gaussian"])
def test_a_tasks_own_perturbation_replaces_the_views(method):
    noise = RelativeNoise(0.1)
    objective = build_objective(method, perturbation=noise)
    assert objective.perturbation is noise and objective.hyperparameters()["sigma"] == 0.1
