"""captioned-mnist: attributes measured on the digits, their captions, the fixed text encoder."""
from __future__ import annotations

import hashlib

import pytest
import torch

from ganray.config import DataConfig
from ganray.data import attributes as attr
from ganray.data import load_dataset
from ganray.data.captioned import (
    CAPTIONS_PER_IMAGE,
    caption_attributes,
    caption_digit,
    captions_for,
    encode,
    load_captioned_mnist,
)
from ganray.data.mnist5k import load_mnist5k
from ganray.data.text_encoder import EMBED_DIM, encode_one, features

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def train():
    return load_captioned_mnist(DataConfig(), "train")


def _image(pixels: list[tuple[int, int]], h: int = 28, w: int = 28) -> torch.Tensor:
    x = -torch.ones(1, 1, h, w)
    for r, c in pixels:
        x[0, 0, r, c] = 1.0
    return x


def test_measure_known_shapes():
    # A vertical bar 3 wide, 15 tall: mass 45, perimeter 2 * (15 + 3) = 36 -> thickness 90 / 36 = 2.5;
    # upright (no shear); box 15 x 3 of 784 pixels.
    bar = _image([(r, c) for r in range(5, 20) for c in range(10, 13)])
    assert attr.measure(bar).tolist() == [[2.5, 0.0, 45 / 784]]
    # A one-pixel diagonal from bottom-left to top-right (c = 20 - r): its top leans right, shear exactly 1.
    diag = _image([(r, 20 - r) for r in range(4, 17)])
    thickness, slant, size = attr.measure(diag)[0].tolist()
    assert slant == pytest.approx(1.0, abs=1e-12) and size == 13 * 13 / 784
    assert thickness == pytest.approx(2 * 13 / (4 * 13), abs=1e-12)  # each pixel alone: 4 edges
    mirrored = attr.measure(diag.flip(3))[0].tolist()
    assert mirrored[1] == pytest.approx(-1.0, abs=1e-12)
    assert attr.words(attr.buckets(attr.measure(torch.cat([diag, diag.flip(3)])))[1].tolist()) == (
        "thin", "left-slanted", "small")
    assert attr.measure(-torch.ones(2, 1, 14, 14)).tolist() == [[0.0, 0.0, 0.0]] * 2  # no ink: zeros


def test_cut_points_are_the_training_tertiles():
    x = load_mnist5k(DataConfig(), "train").x
    values = attr.measure(x)
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    assert tuple(torch.quantile(values[:, 0], q).tolist()) == attr.THICKNESS_CUTS
    assert tuple(torch.quantile(values[:, 2], q).tolist()) == attr.SIZE_CUTS
    shares = [[round(float((attr.buckets(values)[:, j] == k).double().mean()), 4) for k in range(3)] for j in range(3)]
    assert shares == [[0.3333, 0.3333, 0.3333], [0.1053, 0.4809, 0.4138], [0.3271, 0.3733, 0.2996]]


def test_captions_of_real_digits(train):
    expected = {  # train index: (digit, measured (thickness, slant, size), first caption)
        0: (0, (1.986012658584971, 0.34728746775181507, 320 / 784), "a right-slanted zero"),
        1000: (2, (1.802480634426946, 0.7237359610161976, 360 / 784), "a large, right-slanted two"),
        3157: (7, (1.6313574292305268, -0.14717352964278216, 320 / 784), "a thin, upright seven"),
        4499: (9, (2.596761427528801, -0.4092622261466325, 280 / 784), "a thick, left-slanted nine"),
    }
    for i, (digit, values, caption) in expected.items():
        assert int(train.y[i]) == digit
        assert attr.measure(train.x[i:i + 1])[0].tolist() == pytest.approx(list(values), abs=1e-12)
        assert train.captions[i][0] == caption
    assert train.captions[4499] == ("a thick, left-slanted nine", "a nine, thick, left-slanted",
                                    "a nine that is thick and left-slanted", "the digit nine, written thick and left-slanted")
    assert captions_for(8, (0, 1, 2)) == ("a large, thin, upright eight", "an eight, large, thin, upright",
                                          "an eight that is large, thin and upright",
                                          "the digit eight, written large, thin and upright")
    assert captions_for(1, (1, 1, 1))[0] == "an upright one"


def test_every_caption_names_its_digit_and_measured_buckets(train):
    b = attr.buckets(attr.measure(train.x)).tolist()
    for i in range(0, len(train), 37):
        for cap in train.captions[i]:
            assert caption_digit(cap) == int(train.y[i])
            assert caption_attributes(cap) == tuple(b[i]), cap
    assert caption_attributes("a thick seven") == (2, 1, 1)
    assert caption_attributes("a small, left-slanted zero") == (1, 0, 0)
    with pytest.raises(ValueError, match="names no digit"):
        caption_digit("a thick stroke")


def test_dataset_shapes_and_split(train):
    test = load_captioned_mnist(DataConfig(), "test")
    assert train.x.shape == (4500, 1, 28, 28) and test.x.shape == (500, 1, 28, 28)
    assert train.c.shape == (4500, CAPTIONS_PER_IMAGE, EMBED_DIM) and train.c.dtype == torch.float32
    assert len(train.captions) == 4500 and {len(t) for t in train.captions} == {CAPTIONS_PER_IMAGE}
    assert train.has_text and train.num_classes == 10 and train.class_names == tuple("0123456789")
    base = load_mnist5k(DataConfig(), "test")
    assert torch.equal(test.x, base.x) and torch.equal(test.y, base.y)
    # every row of c is the encoder's embedding of its caption
    assert torch.equal(train.c[1000], encode(list(train.captions[1000])))
    assert torch.allclose(train.c.norm(dim=2), torch.ones(4500, CAPTIONS_PER_IMAGE), atol=1e-6)


def test_subset_cap_and_shard_keep_conditions_aligned():
    ds = load_dataset(DataConfig(dataset="captioned-mnist", classes=(3, 7), n_train=301))
    assert len(ds) == 301 and set(ds.y.tolist()) == {3, 7}
    shards = [ds.shard(r, 4) for r in range(4)]
    assert [len(s) for s in shards] == [76, 75, 75, 75]
    for s in shards:
        assert s.c.shape == (len(s), CAPTIONS_PER_IMAGE, EMBED_DIM) and len(s.captions) == len(s)
        for i in (0, len(s) - 1):
            assert caption_digit(s.captions[i][0]) == int(s.y[i])
            assert torch.equal(s.c[i], encode(list(s.captions[i])))
            assert caption_attributes(s.captions[i][2]) == tuple(attr.buckets(attr.measure(s.x[i:i + 1]))[0].tolist())


def test_encoder_is_fixed_to_the_bit():
    e = encode(["a thick, right-slanted seven"])
    assert e.shape == (1, EMBED_DIM) and e.dtype == torch.float32
    # 4 words + 3 bigrams = 7 sign vectors: every entry is an odd sum of 7 signs over ||s||
    assert features("A thick, right-slanted seven") == ["w:a", "w:thick", "w:right-slanted", "w:seven",
                                                        "b:a|thick", "b:thick|right-slanted", "b:right-slanted|seven"]
    assert hashlib.sha256(e.numpy().tobytes()).hexdigest() == (
        "6efc656be781212ddbfc93d3b8b05bf48c28a0280305de69eaa381ab562e9077")
    assert e[0, :3].tolist() == [-0.012035096995532513, 0.012035096995532513, -0.012035096995532513]
    assert torch.equal(encode(["a thick, right-slanted seven"] * 2)[1], e[0])
    a, b, c = encode(["a thick seven", "a thick, upright seven", "a thin one"])
    assert float(a @ b) > 0.5 > 0.25 > float(a @ c)  # shared words and pairs -> nearer
    assert not encode_one("...").any() and encode([]).shape == (0, EMBED_DIM)
