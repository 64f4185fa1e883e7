"""A fixed text encoder for the offline captions (captioned-mnist): no training, no download.

What `encode(captions)` computes for one caption, exactly:
  1. tokens: the lower-cased caption's words, `re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*")`
     ("A thick, right-slanted seven" -> ["a", "thick", "right-slanted", "seven"]);
  2. features: every token "w:<token>" (a bag of words) and every pair of neighbours
     "b:<token>|<next token>" (bigrams: the word order), each counted as often as it occurs;
  3. each feature f has a fixed random sign vector v_f in {-1, +1}^E: bit i of
     SHAKE-256(utf-8 f) read for E bits (bit i = byte i // 8, bit i % 8 from the low end),
     +1 for a set bit; i.e. a random projection of the (unbounded) one-hot feature counts by a
     matrix whose column f is drawn from the feature's own hash: the same for every vocabulary;
  4. the embedding is s / ||s||_2 with s = sum_f count_f v_f (integer sums, normalised in float64,
     stored as float32); a caption without tokens gives zeros.

Every step is integer arithmetic or one IEEE-754 division by a correctly rounded square root,
so the same caption gives the same bits on every machine (a test pins one embedding's sha256).
Captions sharing words and word pairs get close embeddings (cosine = shared feature mass, up to
the ~1/sqrt(E) noise of random signs), so "a thick seven" sits nearer "a thick, upright seven"
than "a thin one".

EMBED_DIM = 1024, the size of CUB's char-CNN-RNN embeddings (ganray.data.cub200): StackGAN's
conditioning-augmentation layer reads the same size for both datasets, and at E = 1024 the random
signs keep unrelated features' cosines within about ±0.1 (3 / sqrt(E)).
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np
import torch

EMBED_DIM = 1024
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def tokens(caption: str) -> list[str]:
    return _TOKEN.findall(caption.lower())


def features(caption: str) -> list[str]:
    """The caption's unigram and bigram features, in order, repeated as often as they occur."""
    t = tokens(caption)
    return [f"w:{w}" for w in t] + [f"b:{a}|{b}" for a, b in zip(t, t[1:])]


@lru_cache(maxsize=65536)
def _signs(feature: str, dim: int) -> np.ndarray:
    """int64 [dim] in {-1, +1}: the bits of SHAKE-256(feature), low bit of each byte first."""
    raw = np.frombuffer(hashlib.shake_256(feature.encode("utf-8")).digest((dim + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:dim].astype(np.int64)
    out = 2 * bits - 1
    out.flags.writeable = False
    return out


def encode_one(caption: str, dim: int = EMBED_DIM) -> np.ndarray:
    """One caption -> float32 [dim], unit L2 norm (zeros for a caption without words)."""
    s = np.zeros(dim, dtype=np.int64)
    for f in features(caption):
        s += _signs(f, dim)
    norm = float(np.sqrt(float(np.dot(s, s))))
    if norm == 0.0:
        return np.zeros(dim, dtype=np.float32)
    return (s.astype(np.float64) / norm).astype(np.float32)


def encode(captions: list[str] | tuple[str, ...], dim: int = EMBED_DIM) -> torch.Tensor:
    """Captions -> float32 [n, dim]: each row `encode_one` of its caption (equal captions, equal rows)."""
    unique = {c: encode_one(c, dim) for c in dict.fromkeys(captions)}
    if not captions:
        return torch.zeros(0, dim)
    return torch.from_numpy(np.stack([unique[c] for c in captions]))
