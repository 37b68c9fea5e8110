"""The feature extractor (vaekit.features): caching by digest, corrupt files retrained, the fallback without
labels, input checks; on MNIST (slow) its accuracy and the sample-quality figures of real and noise images."""

import json
import shutil

import pytest
import torch

from vaekit import features as features_module
from vaekit.data import ImageData
from vaekit.features import FEATURE_SIZE, dataset_digest, load_extractor
from vaekit.sample_quality import describe, prdc, sample_quality


def _tiny(mnist, n_train=512, n_test=128, labels=True, name="tiny"):
    return ImageData(
        name,
        train_uint8=mnist.train_uint8[:n_train].clone(),
        train_labels=mnist.train_labels[:n_train].clone() if labels else None,
        test_uint8=mnist.test_uint8[:n_test].clone(),
        test_labels=mnist.test_labels[:n_test].clone() if labels else None,
    )


@pytest.fixture(scope="module")
def tiny(mnist):
    return _tiny(mnist)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A cache folder holding the tiny dataset's classifier, trained for one epoch, and that extractor."""
    folder = tmp_path_factory.mktemp("features")
    return folder, load_extractor(tiny, cache_dir=folder, epochs=1)


def _copy_cache(folder, to):
    for f in folder.iterdir():
        shutil.copy(f, to / f.name)
    return to


def _count_training(monkeypatch, train=True):
    calls = []
    real_train = features_module._train

    def counting(*args, **kwargs):
        calls.append(1)
        if train:
            real_train(*args, **kwargs)

    monkeypatch.setattr(features_module, "_train", counting)
    return calls


def test_trains_once_then_reuses_the_cache(tiny, trained, tmp_path, monkeypatch):
    first = trained[1]
    assert first.kind == "classifier" and first.classes == 10
    weights, sidecars = list(trained[0].glob("*.safetensors")), list(trained[0].glob("*.json"))
    assert len(weights) == 1 and len(sidecars) == 1 and weights[0].stem == sidecars[0].stem
    info = json.loads(sidecars[0].read_text())
    assert info["dataset_digest"] == dataset_digest(tiny) and info["image_shape"] == [1, 28, 28]
    assert info["classes"] == 10 and info["epochs"] == 1 and info["feature_size"] == FEATURE_SIZE == 128
    assert info["seconds"] >= 0 and info["train_images"] == 512 and info["test_images"] == 128
    # its accuracy is the share of test images whose most probable class is their label
    probs = first.probs(tiny.test_uint8)
    assert probs.shape == (128, 10) and torch.allclose(probs.sum(dim=1), torch.ones(128), atol=1e-5)
    assert info["accuracy"] == pytest.approx(float((probs.argmax(1) == tiny.test_labels).double().mean()), abs=1e-12)
    assert first.name == f"classifier trained on tiny, test accuracy {100 * info['accuracy']:.2f}%"

    calls = _count_training(monkeypatch)
    second = load_extractor(tiny, cache_dir=_copy_cache(trained[0], tmp_path), epochs=1)
    assert calls == []  # not trained again
    assert torch.equal(second.features(tiny.test_uint8), first.features(tiny.test_uint8))
    assert second.accuracy == first.accuracy and second.name == first.name


def test_a_corrupt_cache_file_is_retrained_not_trusted(tiny, trained, tmp_path, monkeypatch, capsys):
    (path,) = _copy_cache(trained[0], tmp_path).glob("*.safetensors")
    calls = _count_training(monkeypatch)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(data))
    again = load_extractor(tiny, cache_dir=tmp_path, epochs=1)
    assert calls == [1]
    err = capsys.readouterr().err
    assert "unusable" in err and "corrupted" in err and str(path) in err
    # training is seeded and deterministic on the CPU: the retrained network is the same one
    assert torch.equal(again.features(tiny.test_uint8), trained[1].features(tiny.test_uint8))
    assert json.loads(path.with_suffix(".json").read_text())["accuracy"] == trained[1].accuracy
    monkeypatch.setattr(features_module, "_train", lambda *args: calls.append(1))  # from here on, only count
    path.write_bytes(b"not a safetensors file")
    load_extractor(tiny, cache_dir=tmp_path, epochs=1)
    assert calls == [1, 1] and "unusable" in capsys.readouterr().err
    load_extractor(tiny, cache_dir=tmp_path, epochs=1)  # the rewritten file is good again
    assert calls == [1, 1]


def test_the_cache_key_follows_the_data_and_the_recipe(mnist, tiny, tmp_path, monkeypatch):
    calls = _count_training(monkeypatch, train=False)  # the file names matter here, not the weights
    load_extractor(tiny, cache_dir=tmp_path, epochs=1)
    load_extractor(tiny, cache_dir=tmp_path, epochs=1)
    relabelled = _tiny(mnist)
    relabelled.train_labels[0] = (relabelled.train_labels[0] + 1) % 10
    load_extractor(relabelled, cache_dir=tmp_path, epochs=1)
    load_extractor(tiny, cache_dir=tmp_path, epochs=2)
    load_extractor(tiny, cache_dir=tmp_path, epochs=1, seed=1)
    assert calls == [1, 1, 1, 1] and len(list(tmp_path.glob("*.safetensors"))) == 4


def test_dataset_digest_sees_every_byte_and_label_and_not_the_chunking(mnist, tiny, monkeypatch):
    digest = dataset_digest(tiny)
    assert digest == dataset_digest(_tiny(mnist))
    changed_pixel = _tiny(mnist)
    changed_pixel.test_uint8[-1, 0, -1, -1] ^= 1
    changed_label = _tiny(mnist)
    changed_label.test_labels[-1] = -1
    assert len({digest, dataset_digest(changed_pixel), dataset_digest(changed_label)}) == 3
    monkeypatch.setattr(features_module, "_DIGEST_CHUNK", 777)
    assert dataset_digest(tiny) == digest


@pytest.mark.parametrize("labels, reason", [("none", "no labels"), ("one", "a single labelled class")])
def test_without_labels_the_fallback_is_named_random_features(mnist, tmp_path, labels, reason):
    data = _tiny(mnist, labels=labels != "none")
    if labels == "one":
        data.train_labels[:] = 3
    ex = load_extractor(data, cache_dir=tmp_path)
    assert ex.kind == "random" and ex.name == f"random conv features ({reason}, seed 0)"
    assert ex.accuracy is None and ex.classes == 0 and ex.probs(data.test_uint8) is None
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing cached
    f = ex.features(data.test_uint8)
    assert f.shape == (128, FEATURE_SIZE) and f.dtype == torch.float32 and f.std() > 0
    assert torch.equal(load_extractor(data, cache_dir=tmp_path).features(data.test_uint8), f)  # fixed weights
    assert not torch.equal(load_extractor(data, cache_dir=tmp_path, seed=1).features(data.test_uint8), f)
    quality = sample_quality(f[:64], f[64:], None, extractor=ex.name, kid_subsets=5)
    assert "random conv features" in describe(quality, fd_name="FD-random")


def test_colour_images_of_any_size(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 10, 13), generator=g, dtype=torch.uint8)
    labels = (images.double().mean(dim=(1, 2, 3)) > 127.5).long()  # two classes: darker and brighter
    data = ImageData("colour", train_uint8=images[:64], train_labels=labels[:64], test_uint8=images[64:], test_labels=labels[64:])
    ex = load_extractor(data, cache_dir=tmp_path, epochs=1)
    assert ex.kind == "classifier" and ex.classes == 2 and ex.image_shape == (3, 10, 13)
    f, p = ex.features_and_probs(data.test_uint8)
    assert f.shape == (32, FEATURE_SIZE) and p.shape == (32, 2)
    calls = _count_training(monkeypatch)
    renamed = ImageData("/data/renamed", train_uint8=images[:64], train_labels=labels[:64], test_uint8=images[64:], test_labels=labels[64:])
    assert load_extractor(renamed, cache_dir=tmp_path, epochs=1).name.startswith("classifier trained on renamed, ")
    assert calls == []  # the same bytes and labels under another name: the cached classifier
    unlabelled = ImageData("colour", train_uint8=images[:64], test_uint8=images[64:])
    assert load_extractor(unlabelled).features(data.test_uint8).shape == (32, FEATURE_SIZE)


def test_features_of_bytes_and_floats_agree_and_do_not_depend_on_the_batch(tiny, trained):
    ex = trained[1]
    u8 = tiny.test_uint8[:50]
    f = ex.features(u8)
    assert f.shape == (50, FEATURE_SIZE) and f.dtype == torch.float32 and not f.requires_grad
    assert torch.equal(ex.features(u8.to(torch.float32) / 255), f)
    assert torch.allclose(ex.features(u8, batch_size=7), f, atol=1e-5)
    feats, probs = ex.features_and_probs(u8.to(torch.float64) / 255)
    assert torch.allclose(feats, f, atol=1e-5) and probs.shape == (50, 10)


def test_bad_input_raises_clear_value_errors(tiny, trained, tmp_path):
    ex = trained[1]
    with pytest.raises(ValueError, match=r"\(C, H, W\) = \(1, 28, 28\) .* got shape \(3, 1, 27, 28\)"):
        ex.features(torch.zeros(3, 1, 27, 28))
    with pytest.raises(ValueError, match=r"got shape \(3, 28, 28\)"):
        ex.features(torch.zeros(3, 28, 28))
    with pytest.raises(ValueError, match=r"must be a torch.Tensor .* got ndarray"):
        ex.features(tiny.test_uint8.numpy())
    with pytest.raises(ValueError, match=r"dtype torch.int64"):
        ex.features(tiny.test_uint8.long())
    with pytest.raises(ValueError, match=r"epochs must be an int >= 1 .* got 0"):
        load_extractor(tiny, cache_dir=tmp_path, epochs=0)
    small = ImageData("small", train_uint8=torch.zeros(8, 1, 3, 8, dtype=torch.uint8), test_uint8=torch.zeros(2, 1, 3, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"at least 4x4 pixels, got image shape \(1, 3, 8\)"):
        load_extractor(small, cache_dir=tmp_path)


# ----------------------------------------------------------------------------- MNIST, the real thing (slow)


@pytest.fixture(scope="module")
def mnist_extractor(mnist):
    # trained once per test session into the VAEKIT_CACHE temp folder that conftest.py sets
    return load_extractor(mnist)


@pytest.fixture(scope="module")
def mnist_features(mnist, mnist_extractor):
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(10_000, 1, 28, 28, generator=g)  # uniform pixel noise in [0, 1]
    pick = torch.randperm(60_000, generator=g)[:10_000]
    train = mnist.train_uint8[pick]
    out = {"train_labels": mnist.train_labels[pick]}
    for name, images in (("train", train), ("test", mnist.test_uint8), ("noise", noise)):
        out[name] = mnist_extractor.features_and_probs(images)
    return out


@pytest.mark.slow
def test_mnist_classifier_is_above_99_percent(mnist, mnist_extractor, mnist_features):
    assert mnist_extractor.kind == "classifier" and mnist_extractor.classes == 10
    probs = mnist_features["test"][1]
    measured = float((probs.argmax(1) == mnist.test_labels).double().mean())
    assert measured == pytest.approx(mnist_extractor.accuracy, abs=1e-12)
    assert mnist_extractor.accuracy > 0.99, mnist_extractor.name
    assert mnist_extractor.name == f"classifier trained on mnist, test accuracy {100 * measured:.2f}%"


@pytest.mark.slow
def test_mnist_train_against_test_is_close_and_noise_is_far(mnist, mnist_extractor, mnist_features):
    test_f, test_p = mnist_features["test"]
    real = sample_quality(test_f, mnist_features["train"][0], mnist_features["train"][1], extractor=mnist_extractor.name)
    noise = sample_quality(test_f, mnist_features["noise"][0], mnist_features["noise"][1], extractor=mnist_extractor.name)
    print(describe(real), describe(noise), sep="\n")
    assert real["n_real"] == real["n_fake"] == noise["n_fake"] == 10_000
    # the sampling floor: two random halves of the test set, at n = 5,000 (not [:5000] and [5000:], whose
    # writers differ: FD 13 between them, against 0.8 between random halves)
    perm = torch.randperm(10_000, generator=torch.Generator().manual_seed(1))
    halves = sample_quality(test_f[perm[:5000]], test_f[perm[5000:]], extractor=mnist_extractor.name)
    assert real["fd"] < 3 * halves["fd"] and noise["fd"] > 1000 * real["fd"]
    assert abs(real["kid"]) < 4 * real["kid_se"] + 1e-5 * noise["kid"] and noise["kid"] > 50 * noise["kid_se"]
    assert min(real["precision"], real["recall"], real["coverage"]) > 0.9 and 0.8 < real["density"] < 1.2
    assert noise["precision"] < 0.05 and noise["coverage"] < 0.05
    # the classifier's labels: train images are confidently one class each, in the proportions of the labels
    train_share = torch.bincount(mnist_features["train_labels"], minlength=10).double() / 10_000
    assert torch.allclose(torch.tensor(real["class_shares"], dtype=torch.float64), train_share, atol=0.02)
    assert real["mean_entropy"] < 0.1 and real["marginal_entropy"] > 0.99 * torch.log(torch.tensor(10.0)).item()


@pytest.mark.slow
def test_mnist_prdc_matches_the_prdc_package(mnist_features, capsys):
    prdc_reference = pytest.importorskip("prdc")
    # at n = 5,000: the package holds three [n, n] float64 matrices at once (600 MB here, 2.4 GB at 10,000)
    test_f, train_f = mnist_features["test"][0][:5000].double(), mnist_features["train"][0][:5000].double()
    ours = prdc(test_f, train_f, k=5)
    ref = prdc_reference.compute_prdc(test_f.numpy(), train_f.numpy(), nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-3), key  # a few ties of float32 features may differ
