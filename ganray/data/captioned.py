"""captioned-mnist: mnist5k's digits, each with T = 4 captions built from its label and the stroke
attributes measured on it (ganray.data.attributes), embedded by the fixed text encoder
(ganray.data.text_encoder): the offline stand-in for cub200's captions and char-CNN-RNN embeddings.

The same images, labels, class names ("0".."9") and train/test split as mnist5k (450 / 50 per
digit). A digit whose measured (thickness, slant, size) buckets are (thick, right-slanted, small)
gets the captions, in this order (`captions_for`):
  "a small, thick, right-slanted seven"
  "a seven, small, thick, right-slanted"
  "a seven that is small, thick and right-slanted"
  "the digit seven, written small, thick and right-slanted"
A middle bucket of thickness or size has no word ("an upright seven"); slant always has one. The
four say the same thing in other word orders, so every caption of a digit names all three buckets
and `caption_attributes` reads them back exactly from any one of them.

Dataset: x float32 [N, 1, 28, 28], y int64 [N] the digit, c float32 [N, 4, EMBED_DIM] the
captions' embeddings, captions [N][4]. `encode(captions)` embeds any other caption (e.g. "a thick
seven" for a fixed (z, condition) grid) with the same encoder.
"""
from __future__ import annotations

from ganray.config import DataConfig
from ganray.data import Dataset, register_dataset
from ganray.data.attributes import WORDS, buckets, measure
from ganray.data.mnist5k import load_mnist5k
from ganray.data.text_encoder import EMBED_DIM, encode, tokens

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTIONS_PER_IMAGE = 4

__all__ = ["CAPTIONS_PER_IMAGE", "DIGIT_WORDS", "EMBED_DIM", "caption_attributes", "caption_digit",
           "captions_for", "encode", "load_captioned_mnist"]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"  # "an eight", "an upright seven"


def _and_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def captions_for(digit: int, bucket_row) -> tuple[str, ...]:
    """The CAPTIONS_PER_IMAGE captions of a digit with (thickness, slant, size) buckets `bucket_row`."""
    thickness, slant, size = (WORDS[j][int(b)] for j, b in enumerate(bucket_row))
    adjs = [w for w in (size, thickness, slant) if w]  # slant always has a word: never empty
    name = DIGIT_WORDS[int(digit)]
    return (
        f"{_article(adjs[0])} {', '.join(adjs)} {name}",
        f"{_article(name)} {name}, {', '.join(adjs)}",
        f"{_article(name)} {name} that is {_and_list(adjs)}",
        f"the digit {name}, written {_and_list(adjs)}",
    )


def caption_attributes(caption: str) -> tuple[int, int, int]:
    """The (thickness, slant, size) buckets a caption asks for (0, 1, 2 as ganray.data.attributes):
    a caption without a thickness or size word asks for the middle bucket, and one without a slant
    word for "upright" (bucket 1)."""
    said = set(tokens(caption))
    out = []
    for low, _, high in WORDS:
        out.append(0 if low in said else 2 if high in said else 1)
    return tuple(out)


def caption_digit(caption: str) -> int:
    """The digit a caption names (its first digit word); ValueError if it names none."""
    for t in tokens(caption):
        if t in DIGIT_WORDS:
            return DIGIT_WORDS.index(t)
    raise ValueError(f"caption names no digit ({', '.join(DIGIT_WORDS)}): {caption!r}")


@register_dataset("captioned-mnist")
def load_captioned_mnist(cfg: DataConfig, split: str = "train") -> Dataset:
    base = load_mnist5k(cfg, split)
    b = buckets(measure(base.x))  # int64 [N, 3]
    captions = tuple(captions_for(d, row) for d, row in zip(base.y.tolist(), b.tolist()))  # [N][T]
    flat = [cap for caps in captions for cap in caps]
    c = encode(flat).view(len(base), CAPTIONS_PER_IMAGE, EMBED_DIM)  # float32 [N, T, E]
    return Dataset("captioned-mnist", base.x, base.y, base.num_classes, base.class_names,
                   extra={"attribute_names": ("thickness", "slant", "size")}, c=c, captions=captions)
