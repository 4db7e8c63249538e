"""Streaming evaluation equals in-memory evaluation on the same images, for any batch size, workers and source."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stabletrain.checks import StableTrainError
from stabletrain.data import ImageDataset
from stabletrain.data.streams import load_stream
from stabletrain.distortions import parse_distortions
from stabletrain.evaluation import evaluate_distortions, evaluate_suites
from stabletrain.models import SmallCNN


def write_images(root, classes=3, per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            w, h = int(rng.integers(28, 48)), int(rng.integers(28, 48))
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            pixels[..., c] = 255
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = write_images(tmp_path_factory.mktemp("stream") / "images")
    return load_stream(str(root), image_size=24, augment="none", test_fraction=0.5, split_seed=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallCNN(3, 3, width=4).eval()


def in_memory(dataset):
    items = [dataset[i] for i in range(len(dataset))]
    return ImageDataset(torch.stack([x for x, _, _ in items]).float() / 255, torch.tensor([y for _, y, _ in items]))


SPECS = "jpeg-50,crop-10,gaussian-0.1,thumb-8"


def same_rows(a, b):
    """Equal rows; mean KL to float rounding, because CPU convolutions round differently at other batch sizes
    (the distorted images themselves are bit-identical, and accuracy and flips are counts)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k != "mean_kl"} == {k: v for k, v in y.items() if k != "mean_kl"}
        assert x["mean_kl"] == pytest.approx(y["mean_kl"], rel=1e-3, abs=1e-7)
    return True


def test_streamed_rows_equal_in_memory_rows_for_any_batch_size_and_workers(split, model):
    distortions = parse_distortions(SPECS)
    reference = evaluate_distortions({"m": model}, in_memory(split.test), distortions, progress=False, batch_size=512)
    for batch_size, workers in ((1, 0), (4, 2), (512, 0)):
        streamed = evaluate_suites({"m": model}, split.test, ["paper"], paper_distortions=distortions,
                                   batch_size=batch_size, workers=workers, progress=False)["rows"]
        assert same_rows(streamed, reference), (batch_size, workers)
    loader = DataLoader(split.test, batch_size=5, shuffle=False, collate_fn=__import__(
        "stabletrain.data.streams", fromlist=["collate_uint8"]).collate_uint8)
    assert same_rows(evaluate_distortions({"m": model}, loader, distortions, progress=False), reference)


def test_a_plain_dataset_of_float_pairs_and_a_shuffled_loader(split, model):
    memory = in_memory(split.test)
    pairs = torch.utils.data.TensorDataset(memory.x, memory.y)
    distortions = parse_distortions(SPECS)
    assert same_rows(evaluate_distortions({"m": model}, pairs, distortions, progress=False, batch_size=3),
                     evaluate_distortions({"m": model}, memory, distortions, progress=False))
    with pytest.raises(StableTrainError, match="does not shuffle"):
        evaluate_distortions({"m": model}, DataLoader(pairs, batch_size=3, shuffle=True), distortions, progress=False)
    outside = torch.utils.data.TensorDataset(memory.x * 2, memory.y)
    with pytest.raises(StableTrainError, match=r"must be in \[0, 1\]"):
        evaluate_distortions({"m": model}, outside, distortions, progress=False)


def test_attacks_and_certification_on_a_stream_equal_in_memory(split, model):
    kwargs = dict(epsilons=[0.0, 0.03], attack_steps=2, attack_examples=5, smoothing={"n": 20, "n0": 5},
                  smoothing_examples=4, progress=False)
    streamed = evaluate_suites({"m": model}, split.test, ["adversarial", "smoothing"], batch_size=3, workers=2,
                               **kwargs)
    memory = evaluate_suites({"m": model}, in_memory(split.test), ["adversarial", "smoothing"], **kwargs)
    assert same_rows(streamed["rows"], memory["rows"])
    assert streamed["models"]["m"]["attack"]["examples"] == 5


def test_tar_shards_evaluate_to_the_same_deterministic_rows(tmp_path, split, model):
    """The same images as WebDataset shards: ids differ (they come from the keys), so compare the distortions
    that draw nothing (JPEG, thumbnail) and the invariance of the random ones to workers and batch size."""
    import io

    import webdataset

    test = split.test
    shards = []
    for part in range(2):
        path = tmp_path / f"test-{part:04d}.tar"
        with webdataset.TarWriter(str(path)) as sink:
            for i in range(part, len(test), 2):
                buffer = io.BytesIO()
                Image.open(test.files[i]).save(buffer, format="PNG")
                sink.write({"__key__": f"img{i:04d}", "png": buffer.getvalue(), "cls": str(int(test.labels[i]))})
        shards.append(str(path))
    (tmp_path / "classes.txt").write_text("\n".join(split.classes) + "\n")
    stream = load_stream(f"shards:{shards[0]}|{shards[1]}", image_size=24, augment="none").test
    # only the second shard is the test stream: compare with those images in memory
    held = in_memory(test)
    odd = ImageDataset(held.x[1::2], held.y[1::2])
    deterministic = parse_distortions("jpeg-50,thumb-8")
    rows = evaluate_distortions({"m": model}, stream, deterministic, progress=False, batch_size=2)
    assert same_rows(rows, evaluate_distortions({"m": model}, odd, deterministic, progress=False))
    random = parse_distortions("crop-10,gaussian-0.1")
    assert same_rows(evaluate_distortions({"m": model}, stream, random, progress=False, batch_size=1),
                     evaluate_suites({"m": model}, stream, ["paper"], paper_distortions=random, batch_size=7,
                                     workers=2, progress=False)["rows"])


def test_streamed_training_is_the_same_with_and_without_workers(tmp_path):
    from stabletrain.training import TrainConfig, train

    root = write_images(tmp_path / "images", per_class=8)
    config = dict(data=str(root), stream=True, augment="crop-flip", image_size=16, width=4, epochs=2, batch_size=6,
                  method="stability")
    a = train(TrainConfig(**config), tmp_path / "a", progress=False)
    b = train(TrainConfig(**config, workers=2), tmp_path / "b", progress=False)
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], rtol=0, atol=0, msg=key)
    assert a.history[-1]["test_accuracy"] == b.history[-1]["test_accuracy"]


def test_streaming_options_take_effect_or_are_rejected(tmp_path):
    from stabletrain.training import TrainConfig

    root = write_images(tmp_path / "images", per_class=4)
    with pytest.raises(StableTrainError, match="augment has no effect without stream"):
        TrainConfig(data=str(root), augment="flip").validated()
    with pytest.raises(StableTrainError, match="held in memory and cannot stream"):
        TrainConfig(data="digits", stream=True).validated()
    (tmp_path / "list.csv").write_text("".join(f"{p},{p.parent.name}\n" for p in sorted(root.rglob("*.png"))))
    assert TrainConfig(data=str(tmp_path / "list.csv")).validated().stream is True
    assert TrainConfig(data=str(root)).validated().stream is False


def test_evaluate_takes_one_model_and_any_source(split, model):
    from stabletrain import evaluate

    distortions = parse_distortions("jpeg-50,crop-10")
    one = evaluate(model, split.test, ["paper"], paper_distortions=distortions, progress=False, workers=2)
    reference = evaluate_suites({"model": model}, in_memory(split.test), ["paper"], paper_distortions=distortions,
                                progress=False)
    assert same_rows(one["rows"], reference["rows"])
    with pytest.raises(StableTrainError, match="needs a torch model"):
        evaluate("not a model", split.test)
