"""Pure-torch references of the FP8 ops (conversion, quantized inputs, FP8 attention)."""

from __future__ import annotations

import math

import torch

from kernels_core.masks import BlockIndices

E4M3_MAX = 448.0
CHUNK = 64  # keys per online-softmax step, as in the kernels


def quantize_fp8_e4m3(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """torch's own float32 -> float8_e4m3fn conversion of x / scale after clamping to ±448."""
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def fp8_attention(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    block_indices: BlockIndices | None,
    *,
    block_size: tuple[int, int],
    q_group: int,
    k_group: int,
    key_valid: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The steps of csrc/quant/fp8_attention.h, one query block at a time.

    q8 [B, Hq, Sq, D], k8/v8 [B, Hkv, Sk, D] (float8_e4m3fn); q_scale [B, Hq, ceil(Sq/q_group)],
    k_scale [B, Hkv, ceil(Sk/k_group)], v_scale [B, Hkv, D]. Returns out float32 [B, Hq, Sq, D]
    and lse float32 [B, Hq, Sq].
    """
    b, hq, sq, d = q8.shape
    hkv, sk = k8.shape[1], k8.shape[2]
    block_q, block_k = block_size
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    log2e = 1.0 / math.log(2.0)
    q = q8.float()
    k = k8.float()
    v = v8.float()
    q_tok = q_scale.float().repeat_interleave(q_group, dim=2)[:, :, :sq]
    k_tok = k_scale.float().repeat_interleave(k_group, dim=2)[:, :, :sk]
    out = torch.zeros(b, hq, sq, d)
    lse = torch.full((b, hq, sq), -math.inf)
    nqb, nkb = -(-sq // block_q), -(-sk // block_k)
    for bi in range(b):
        for h in range(hq):
            hk = h // (hq // hkv)
            for qb in range(nqb):
                rows = slice(qb * block_q, min(qb * block_q + block_q, sq))
                if block_indices is None:
                    blocks = list(range(nkb))
                else:
                    counts, indices = block_indices
                    c = int(counts.expand(b, hq, nqb)[bi, h, qb])
                    blocks = indices.expand(b, hq, nqb, indices.shape[-1])[bi, h, qb, :c].tolist()
                n = rows.stop - rows.start
                m = torch.full((n,), -math.inf)
                l_sum = torch.zeros(n)
                acc = torch.zeros(n, d)
                row_scale = q_tok[bi, h, rows] * scale * log2e
                for kb in blocks:
                    if kb < 0 or kb >= nkb:
                        continue
                    end = min(kb * block_k + block_k, sk)
                    for c0 in range(kb * block_k, end, CHUNK):
                        keys = slice(c0, min(c0 + CHUNK, end))
                        s = (
                            (q[bi, h, rows] @ k[bi, hk, keys].T)
                            * row_scale[:, None]
                            * k_tok[bi, hk, keys][None, :]
                        )
                        if key_valid is not None:
                            s = s.masked_fill(~key_valid[keys].cpu()[None, :], -math.inf)
                        m_new = torch.maximum(m, s.amax(dim=1))
                        m_use = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
                        alpha = torch.exp2(m - m_use)
                        p = torch.exp2(s - m_use[:, None])
                        l_sum = l_sum * alpha + p.sum(dim=1)
                        p8 = (p * E4M3_MAX).to(torch.float8_e4m3fn).float()
                        acc = acc * alpha[:, None] + p8 @ v[bi, hk, keys]
                        m = m_new
                seen = l_sum > 0
                norm = torch.where(seen, 1.0 / (E4M3_MAX * l_sum), torch.zeros_like(l_sum))
                out[bi, h, rows] = acc * v_scale[bi, hk].float()[None, :] * norm[:, None]
                lse[bi, h, rows] = torch.where(
                    seen, (m + torch.log2(l_sum)) / log2e, torch.full_like(m, -math.inf)
                )
    return out, lse
