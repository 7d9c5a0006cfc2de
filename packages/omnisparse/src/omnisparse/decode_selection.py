"""Which cached tokens each key/value head keeps for decoding (KV-cache slimming).

The decoding queries are not known at prefill time; the prompt's text after its last visual token (the
question that follows the video; at most ``observation_window`` tokens) stands in for them, as its
attention pattern is the closest one available. A prompt that ends with visual tokens uses its last
``observation_window`` tokens. For every key/value head (its query heads summed):

- text tokens and the ``recent_window`` newest tokens are always kept;
- a head whose observed attention puts less than ``head_visual_threshold`` of its mass on visual tokens
  is *visual-light* and keeps no visual token;
- any other head keeps its highest-scoring visual tokens until kept tokens cover ``decode_gamma`` of
  its attention mass.
"""

from __future__ import annotations

import torch

from omnisparse.config import OmniSparseConfig

__all__ = ["decode_keep_positions", "observed_attention"]


@torch.no_grad()
def observed_attention(q: torch.Tensor, k: torch.Tensor, window: int, scale: float) -> torch.Tensor:
    """Mean causal attention of the last ``window`` queries, summed per key/value head.

    Args:
        q: [B, Hq, Sq, D], the call's queries (the last Sq of the Sk keys); k: [B, Hkv, Sk, D].

    Returns:
        float32 [B, Hkv, Sk], each row summing to ``Hq / Hkv``.
    """
    batch, heads_q, sq, dim = q.shape
    heads_kv, sk = k.shape[1], k.shape[2]
    w = min(window, sq)
    groups = heads_q // heads_kv
    obs = q[:, :, sq - w :].float().reshape(batch, heads_kv, groups * w, dim)
    logits = torch.matmul(obs, k.float().transpose(-1, -2)) * scale  # [B, Hkv, G*W, Sk]
    query_pos = (sk - w + torch.arange(w, device=q.device)).repeat(groups)
    future = torch.arange(sk, device=q.device)[None, :] > query_pos[:, None]
    logits = logits.masked_fill(future, float("-inf"))
    return torch.softmax(logits, dim=-1).sum(dim=2) / w


@torch.no_grad()
def decode_keep_positions(
    q: torch.Tensor, k: torch.Tensor, visual: torch.Tensor, config: OmniSparseConfig, scale: float
) -> list[list[torch.Tensor]]:
    """Per item and key/value head, the sorted cache positions to keep.

    Args:
        q: [B, Hq, Sq, D]; k: [B, Hkv, Sk, D] (the whole cache after this call's update).
        visual: bool [B, Sk], True for image/video tokens.

    Returns:
        ``keep[b][h]``: int64 positions.
    """
    batch, heads_kv, sk = k.shape[0], k.shape[1], k.shape[2]
    if visual.shape != (batch, sk):
        raise ValueError(f"visual must be [B, Sk] = [{batch}, {sk}], got {list(visual.shape)}")
    visual = visual.to(k.device)
    sq = q.shape[2]
    positions = torch.arange(sk, device=k.device)
    last_visual = torch.where(visual, positions, torch.full_like(positions, -1)).amax(dim=1)  # [B]
    text_after = int((sk - 1 - last_visual).min())
    window = min(config.observation_window, text_after if text_after > 0 else sq, sq)
    mass = observed_attention(q, k, window, scale)  # [B, Hkv, Sk]
    recent = torch.arange(sk, device=k.device) >= sk - config.recent_window
    candidate = visual & ~recent[None, :]  # [B, Sk]
    keep: list[list[torch.Tensor]] = []
    for b in range(batch):
        always = (~candidate[b]).nonzero().flatten()
        cand = candidate[b].nonzero().flatten()
        row = []
        for h in range(heads_kv):
            m = mass[b, h].double()
            total = float(m.sum())
            cand_mass = m[cand]
            share = float(cand_mass.sum()) / total if total > 0 else 0.0
            if cand.numel() == 0 or share < config.head_visual_threshold:
                row.append(always)
                continue
            order = torch.argsort(cand_mass, descending=True, stable=True)
            if config.decode_gamma >= 1.0:
                count = cand.numel()  # full recall: every visual token, whatever its (rounded) mass
            else:
                need = config.decode_gamma * total - float(m[always].sum())
                covered = torch.cumsum(cand_mass[order], 0) - cand_mass[order]
                count = int((covered < need).sum()) if need > 0 else 0
            chosen = cand[order[:count]]
            row.append(torch.cat([always, chosen]).sort().values)
        keep.append(row)
    return keep
