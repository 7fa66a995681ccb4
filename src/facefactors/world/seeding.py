"""Counter-based random numbers: a sample is a pure function of (world seed, stream, index).

Every random quantity of the world is drawn from a *stream* (a name such as ``"train/pose"``)
at an integer *index* (a sample index or an identity id). The numbers are the SplitMix64 hash
(Steele, Lea & Flood 2014) of ``(seed, stream, index, slot)``: no generator state, so sample 17
is the same whether it is drawn alone or in a batch, on any machine, and re-drawing one
factor's stream never disturbs another factor (interventions rely on this).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrap-around arithmetic is intended)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, stream: str) -> np.uint64:
    """A 64-bit key for (world seed, stream name); crc32 keeps it stable across processes."""
    with np.errstate(over="ignore"):
        s = _mix(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        h = np.array([zlib.crc32(stream.encode())], dtype=np.uint64)
        return _mix(s ^ (h * _GOLDEN))[0]


def uniform(seed: int, stream: str, index, n: int) -> np.ndarray:
    """``n`` uniforms in (0, 1) per index: (B,) int -> (B, n) float64, pure in (seed, stream, index)."""
    idx = np.asarray(index, dtype=np.int64).reshape(-1).astype(np.uint64)
    key = stream_key(seed, stream)
    with np.errstate(over="ignore"):
        base = _mix(key ^ _mix(idx + _GOLDEN))  # (B,)
        slots = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        bits = _mix(base[:, None] + slots)  # (B, n)
    # 53 random bits, shifted off 0 so log() and inverse CDFs are safe
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def normal(seed: int, stream: str, index, n: int) -> np.ndarray:
    """``n`` standard normals per index (Box-Muller on pairs of uniforms): (B,) -> (B, n)."""
    u = uniform(seed, stream, index, 2 * n)
    r = np.sqrt(-2.0 * np.log(u[:, :n]))
    return r * np.cos(2.0 * np.pi * u[:, n:])


class Draws:
    """Named uniforms/normals for one stream and a batch of indices, as float32 tensors.

    ``d.u(k)`` returns the next ``k`` uniform columns (B, k); columns are consumed in order,
    so the meaning of a slot is fixed by the order of the calls in the sampling code.
    """

    def __init__(self, seed: int, stream: str, index, n: int = 64):
        self._u = uniform(seed, stream, index, n)
        self._pos = 0

    def _take(self, k: int) -> np.ndarray:
        if self._pos + k > self._u.shape[1]:
            raise RuntimeError("Draws: stream exhausted; raise n")
        out = self._u[:, self._pos : self._pos + k]
        self._pos += k
        return out

    def u(self, k: int = 1) -> torch.Tensor:
        return torch.from_numpy(self._take(k).astype(np.float32))

    def n(self, k: int = 1) -> torch.Tensor:
        u = self._take(2 * k)
        z = np.sqrt(-2.0 * np.log(u[:, :k])) * np.cos(2.0 * np.pi * u[:, k:])
        return torch.from_numpy(z.astype(np.float32))

    def choice(self, num: int, k: int = 1) -> torch.Tensor:
        """Uniform integers in [0, num): (B, k) long."""
        return torch.from_numpy(np.minimum((self._take(k) * num).astype(np.int64), num - 1))
