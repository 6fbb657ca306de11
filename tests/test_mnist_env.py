"""The IDX loader, the embedded MNIST copy and the MNIST contextual bandit."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import pytest
import torch

from sggraph.envs import mnist
from sggraph.envs.mnist import EMBEDDED_DATA_DIR, MnistBandit, load_idx, load_mnist
from sggraph.exceptions import ConfigError, DataError

IMAGES = EMBEDDED_DATA_DIR / "images-idx3-ubyte.gz"
LABELS = EMBEDDED_DATA_DIR / "labels-idx1-ubyte.gz"
# The checksums of the embedded 10,000-digit files as they were supplied (the data must not change)
SHA256 = {
    "images-idx3-ubyte.gz": "1b058f1b53a589d5925db78c86c816b5dcb4258eeb41b4eba2ae1acd727e84dd",
    "labels-idx1-ubyte.gz": "c68968326ac1d4ef8fbc4d5f70a0ebc4bf59e3d64097913c58ac405dd0196a5f",
}
COUNTS = {0: 1001, 1: 1127, 2: 991, 3: 1032, 4: 980, 5: 863, 6: 1014, 7: 1070, 8: 944, 9: 978}


@pytest.fixture(scope="module")
def embedded():
    return load_mnist(EMBEDDED_DATA_DIR)


@pytest.fixture(scope="module")
def plain_bytes():
    return gzip.decompress(IMAGES.read_bytes()), gzip.decompress(LABELS.read_bytes())


def _assert_data_error(excinfo, name):
    text = str(excinfo.value)
    assert name in text, text
    assert "Fix:" in text, text


# ---------------------------------------------------------------- the loader

def test_embedded_files_match_readme_sha256():
    for path in (IMAGES, LABELS):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[path.name]


def test_embedded_data_shape_and_class_counts(embedded):
    images, labels = embedded
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert dict(enumerate(np.bincount(labels, minlength=10).tolist())) == COUNTS
    assert images.max() == 255 and images.min() == 0


def test_gzip_and_plain_read_identically(tmp_path, plain_bytes, embedded):
    (tmp_path / "images-idx3-ubyte").write_bytes(plain_bytes[0])
    (tmp_path / "labels-idx1-ubyte").write_bytes(plain_bytes[1])
    np.testing.assert_array_equal(load_idx(tmp_path / "images-idx3-ubyte"), load_idx(IMAGES))
    images, labels = load_mnist(tmp_path)
    np.testing.assert_array_equal(images, embedded[0])
    np.testing.assert_array_equal(labels, embedded[1])


def test_gzip_detected_by_magic_not_extension(tmp_path, plain_bytes):
    # a gzip stream without .gz, and a plain file named .gz
    shutil.copyfile(LABELS, tmp_path / "a.idx")
    (tmp_path / "b.gz").write_bytes(plain_bytes[1])
    np.testing.assert_array_equal(load_idx(tmp_path / "a.idx"), load_idx(tmp_path / "b.gz"))


def test_wrong_magic_number(tmp_path, plain_bytes):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x12\x34\x08\x01" + plain_bytes[1][4:])
    with pytest.raises(DataError) as excinfo:
        load_idx(bad)
    _assert_data_error(excinfo, "bad-idx")
    assert "12 34 08 01" in str(excinfo.value)


def test_unsupported_element_type(tmp_path, plain_bytes):
    bad = tmp_path / "floats-idx"
    bad.write_bytes(b"\x00\x00\x0d\x01" + plain_bytes[1][4:])
    with pytest.raises(DataError) as excinfo:
        load_idx(bad)
    _assert_data_error(excinfo, "floats-idx")
    assert "0x08" in str(excinfo.value)


def test_truncated_plain_file(tmp_path, plain_bytes):
    cut = tmp_path / "cut-images-idx3-ubyte"
    cut.write_bytes(plain_bytes[0][:-100])
    with pytest.raises(DataError) as excinfo:
        load_idx(cut)
    _assert_data_error(excinfo, "cut-images-idx3-ubyte")
    text = str(excinfo.value)
    assert "7840000" in text and "7839900" in text and "truncated" in text


def test_plain_file_with_extra_bytes(tmp_path, plain_bytes):
    long = tmp_path / "long-labels"
    long.write_bytes(plain_bytes[1] + b"\x00\x01")
    with pytest.raises(DataError) as excinfo:
        load_idx(long)
    _assert_data_error(excinfo, "long-labels")
    assert "10002" in str(excinfo.value) and "10000" in str(excinfo.value)


def test_truncated_header(tmp_path, plain_bytes):
    cut = tmp_path / "header-only"
    cut.write_bytes(plain_bytes[0][:9])
    with pytest.raises(DataError) as excinfo:
        load_idx(cut)
    _assert_data_error(excinfo, "header-only")


@pytest.mark.parametrize("keep", [1000, -3])  # cut in the middle of the stream; cut into the trailer
def test_truncated_gzip_file(tmp_path, keep):
    cut = tmp_path / "cut-labels-idx1-ubyte.gz"
    cut.write_bytes(LABELS.read_bytes()[:keep])
    with pytest.raises(DataError) as excinfo:
        load_idx(cut)
    _assert_data_error(excinfo, "cut-labels-idx1-ubyte.gz")


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_idx(tmp_path / "nowhere-idx1-ubyte.gz")
    _assert_data_error(excinfo, "nowhere-idx1-ubyte.gz")
    assert "SGGRAPH_DATA" in str(excinfo.value)


def test_missing_pair_lists_names(tmp_path):
    shutil.copyfile(IMAGES, tmp_path / "images-idx3-ubyte.gz")  # labels missing
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    text = str(excinfo.value)
    _assert_data_error(excinfo, str(tmp_path))
    assert "train-images-idx3-ubyte" in text and "labels-idx1-ubyte" in text


def test_missing_directory(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path / "absent")
    _assert_data_error(excinfo, "absent")


def test_mismatched_counts(tmp_path, plain_bytes):
    shutil.copyfile(IMAGES, tmp_path / "images-idx3-ubyte.gz")
    labels = plain_bytes[1]
    short = labels[:4] + (9999).to_bytes(4, "big") + labels[8:-1]
    (tmp_path / "labels-idx1-ubyte").write_bytes(short)
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    _assert_data_error(excinfo, "labels-idx1-ubyte")
    assert "9999" in str(excinfo.value) and "10000" in str(excinfo.value)


def test_bad_split():
    with pytest.raises(ConfigError):
        load_mnist(EMBEDDED_DATA_DIR, split="validation")


def test_env_var_and_standard_train_names(tmp_path, monkeypatch, plain_bytes, embedded):
    # full-MNIST names, one plain and one gzip, found through SGGRAPH_DATA
    (tmp_path / "train-images-idx3-ubyte").write_bytes(plain_bytes[0])
    shutil.copyfile(LABELS, tmp_path / "train-labels-idx1-ubyte.gz")
    monkeypatch.setenv("SGGRAPH_DATA", str(tmp_path))
    images, labels = load_mnist()
    np.testing.assert_array_equal(images, embedded[0])
    np.testing.assert_array_equal(labels, embedded[1])
    np.testing.assert_array_equal(load_mnist(split="train")[1], embedded[1])
    with pytest.raises(DataError) as excinfo:
        load_mnist(split="test")
    assert "t10k-images-idx3-ubyte" in str(excinfo.value)
    # an explicit data_dir wins over the variable
    assert load_mnist(EMBEDDED_DATA_DIR)[0].shape == (10000, 28, 28)
    monkeypatch.setenv("SGGRAPH_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataError) as excinfo:
        load_mnist()
    assert "SGGRAPH_DATA" in str(excinfo.value)
    monkeypatch.delenv("SGGRAPH_DATA")
    assert load_mnist()[1].shape == (10000,)  # the embedded copy


def test_all_exports_exist():
    for name in mnist.__all__:
        assert hasattr(mnist, name)


# ---------------------------------------------------------------- the bandit

def test_classes_subset_maps_labels_and_splits(embedded):
    images, labels = embedded
    classes = (0, 1, 3, 4, 5, 6, 7, 8, 9)
    env = MnistBandit(images, labels, classes=classes, eval_size=2000)
    assert env.n_actions == 9
    assert env.n_train + env.n_eval == 10000 - COUNTS[2] and env.n_eval == 2000
    kept = np.isin(labels, classes)
    kept_labels = labels[kept]
    expected = np.array([classes.index(int(v)) for v in kept_labels])
    got = torch.cat([env.train_targets, env.eval_targets]).numpy()
    np.testing.assert_array_equal(got, expected)
    # the evaluation set is the last eval_size kept examples
    last = images[kept][-2000:].reshape(2000, -1).astype(np.float32)
    np.testing.assert_allclose(env.eval_contexts.numpy(), (last / 255 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    assert env.train_targets.dtype == torch.int64 and env.train_contexts.dtype == torch.float32
    # reordered classes permute the action indices
    env2 = MnistBandit(images[:50], labels[:50], classes=(9, 2), eval_size=1)
    lab = labels[:50][np.isin(labels[:50], (9, 2))]
    np.testing.assert_array_equal(torch.cat([env2.train_targets, env2.eval_targets]).numpy(),
                                  np.where(lab == 9, 0, 1))


def test_standardisation_constants():
    images = np.array([[0] * 784, [255] * 784], dtype=np.uint8).reshape(2, 28, 28)
    images = np.concatenate([images, images])
    env = MnistBandit(images, [0, 1, 0, 1], classes=(0, 1), eval_size=2)
    x = env.train_contexts
    assert x.shape == (2, 784)
    assert torch.allclose(x[0], torch.full((784,), -0.1307 / 0.3081))
    assert torch.allclose(x[1], torch.full((784,), (1 - 0.1307) / 0.3081))
    assert mnist.MNIST_MEAN == 0.1307 and mnist.MNIST_STD == 0.3081


def _small_env(p_flip=0.4, eval_size=100):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(400, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=400)
    return MnistBandit(images, labels, p_flip=p_flip, eval_size=eval_size, seed=3)


def test_reward_flip_rate_and_noiseless_eval():
    env = _small_env(p_flip=0.4)
    g = torch.Generator().manual_seed(1)
    n = 200_000
    targets = torch.randint(10, (n,), generator=g)
    actions = torch.where(torch.rand(n, generator=g) < 0.5, targets, (targets + 1) % 10)
    exact = (actions == targets).float()
    noisy = env.reward(actions, targets, g, train=True)
    assert noisy.dtype == torch.float32 and noisy.shape == (n,)
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}
    rate = float((noisy != exact).float().mean())
    assert abs(rate - 0.4) < 0.005  # ~4.5 standard errors
    assert torch.equal(env.reward(actions, targets, g, train=False), exact)
    assert torch.equal(env.reward(actions, targets, None, train=False), exact)
    with pytest.raises(ConfigError):
        env.reward(actions, targets, None, train=True)
    assert torch.equal(_small_env(p_flip=0.0).reward(actions, targets, g), exact)
    assert torch.equal(_small_env(p_flip=1.0).reward(actions, targets, g), 1 - exact)


def test_determinism_with_same_generator_seed():
    env = _small_env()

    def episode(seed):
        g = torch.Generator().manual_seed(seed)
        x, y = env.sample(32, g)
        actions = torch.randint(env.n_actions, (32,), generator=g)
        return x, y, env.reward(actions, y, g)

    a, b, c = episode(5), episode(5), episode(6)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[1], c[1]) or not torch.equal(a[2], c[2])


def test_sample_and_eval_batch():
    env = _small_env(eval_size=100)
    x, y = env.sample(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 784) and x.dtype == torch.float32 and y.shape == (64,) and y.dtype == torch.int64
    # in-order prefix when no generator and size <= n_eval
    ex, ey = env.eval_batch(30)
    assert torch.equal(ex, env.eval_contexts[:30]) and torch.equal(ey, env.eval_targets[:30])
    # more than n_eval: with replacement; deterministic without and with a generator
    big1, big2 = env.eval_batch(400), env.eval_batch(400)
    assert big1[0].shape == (400, 784) and torch.equal(big1[1], big2[1])
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(env.eval_batch(400, g1)[1], env.eval_batch(400, g2)[1])
    # with a generator and size <= n_eval: distinct evaluation examples
    sx, _ = env.eval_batch(100, torch.Generator().manual_seed(0))
    assert torch.unique(sx, dim=0).shape[0] == torch.unique(env.eval_contexts, dim=0).shape[0]
    # training samples never come from the evaluation set
    train_rows = {tuple(r) for r in env.train_contexts[:, :8].tolist()}
    assert all(tuple(r) in train_rows for r in x[:, :8].tolist())
    assert "n_train=300" in repr(env) and "n_eval=100" in repr(env)


@pytest.mark.parametrize("classes", [(0, 10), (-1, 2), (1, 1, 2), (3,), (), (0.5, 1), (True, 2)])
def test_bad_classes(classes):
    with pytest.raises(ConfigError) as excinfo:
        MnistBandit(np.zeros((10, 28, 28), np.uint8), [0, 1] * 5, classes=classes, eval_size=2)
    assert "Fix:" in str(excinfo.value)


@pytest.mark.parametrize("kwargs", [{"p_flip": 1.5}, {"eval_size": 0}, {"eval_size": 10}])
def test_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        MnistBandit(np.zeros((10, 28, 28), np.uint8), [0, 1] * 5, classes=(0, 1), **{"eval_size": 2, **kwargs})
