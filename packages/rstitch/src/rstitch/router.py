"""R-Stitch+: a small router that decides, when the SLM is uncertain, whether escalating is worth it.

The router reads the SLM's last hidden state, the context length and the uncertainty, and outputs the
probability of escalating to the LLM. It is consulted only when the uncertainty exceeds τ; below τ the
SLM keeps the token as in R-Stitch. Training is REINFORCE with a group baseline: each problem is
decoded ``rollouts`` times with sampled decisions, the reward is

    correct − λ · estimated latency / estimated LLM-only latency

(latency from :class:`rstitch.cost_model.CostModel`, normalised so λ is unitless), and every decision's
log-probability is weighted by its rollout's reward minus the mean reward of the problem's group.
Architecture, features and the group baseline are our choices; the paper gives only the reward's form.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from accel_shared.checkpoint import (
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from accel_shared.cli import progress
from rstitch.answers import answers_match, extract_answer, reference_answer
from rstitch.cost_model import CostModel
from rstitch.generator import StitchedGenerator

__all__ = ["Router", "RouterTrainConfig", "train_router"]

_MAX_CONTEXT = 4096.0  # context-length feature: log(1 + L) / log(1 + _MAX_CONTEXT)


class Router(nn.Module):
    """MLP over [LayerNorm(hidden), context-length feature, uncertainty] → logit of escalating.

    Args:
        hidden_size: the SLM's hidden size.
        width: the MLP's hidden width.
    """

    def __init__(self, hidden_size: int, width: int = 64) -> None:
        super().__init__()
        self.hidden_size, self.width = hidden_size, width
        self.norm = nn.LayerNorm(hidden_size)
        head = nn.Linear(width, 1)
        # Start by escalating (as R-Stitch does) and let training find the tokens that need not.
        nn.init.constant_(head.bias, 2.0)
        self.net = nn.Sequential(nn.Linear(hidden_size + 2, width), nn.GELU(), head)

    def logit(self, hidden: torch.Tensor, context_length: int, uncertainty: float) -> torch.Tensor:
        """Escalation logit (a scalar tensor) for ``hidden`` [hidden_size]."""
        if hidden.shape != (self.hidden_size,):
            raise ValueError(
                f"Router: expected a hidden state of shape [{self.hidden_size}], got {tuple(hidden.shape)}"
            )
        device = self.norm.weight.device
        length = math.log1p(context_length) / math.log1p(_MAX_CONTEXT)
        extra = torch.tensor([length, uncertainty], dtype=torch.float32, device=device)
        # clone: the hidden state comes out of inference mode, and autograd cannot save inference tensors
        features = torch.cat([self.norm(hidden.float().to(device).clone()), extra])
        return self.net(features)[0]

    def decide(
        self,
        hidden: torch.Tensor,
        context_length: int,
        uncertainty: float,
        *,
        sample: bool,
        generator: torch.Generator | None,
    ) -> tuple[bool, torch.Tensor | None]:
        """(escalate?, log-probability of the decision when ``sample``); greedy decisions use p > 0.5."""
        with torch.set_grad_enabled(sample and self.training):
            logit = self.logit(hidden, context_length, uncertainty)
            if not sample:
                return bool(logit > 0), None
            p = torch.sigmoid(logit)
            escalate = bool(torch.rand((), generator=generator) < p.detach())
            log_prob = nn.functional.logsigmoid(logit if escalate else -logit)
            return escalate, log_prob

    def save(self, path: str | Path) -> Path:
        """``router.pt`` (state dict and sizes, loadable with ``weights_only``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"hidden_size": self.hidden_size, "width": self.width, "state_dict": self.state_dict()}, path
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Router:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Router.load: no such file {path}")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        router = cls(payload["hidden_size"], payload["width"])
        router.load_state_dict(payload["state_dict"])
        return router.eval()


@dataclass
class RouterTrainConfig:
    """Hyper-parameters of :func:`train_router`.

    Attributes:
        tau: the uncertainty threshold above which the router is consulted (lower than plain R-Stitch's:
            the router, not τ, filters the escalations).
        lam: λ, the latency weight of the reward (in units of the LLM-only latency).
        rollouts: sampled decodings per problem (the group of the baseline).
    """

    tau: float = 0.005
    lam: float = 0.5
    rollouts: int = 4
    steps: int = 300  # problems
    lr: float = 3e-3
    max_new_tokens: int = 160
    seed: int = 0
    ckpt_every: int = 25
    out_dir: str | Path = "runs/router"
    show_progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"RouterTrainConfig.tau must be in [0, 1], got {self.tau}")
        if self.lam < 0:
            raise ValueError(f"RouterTrainConfig.lam must be >= 0, got {self.lam}")
        for name in ("rollouts", "steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"RouterTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.rollouts < 2:
            raise ValueError(
                "RouterTrainConfig.rollouts must be >= 2 (the baseline is the group's mean reward)"
            )


def train_router(
    slm: Any,
    llm: Any,
    tokenizer: Any,
    problems: list[dict[str, str]],
    cost_model: CostModel,
    config: RouterTrainConfig,
    *,
    prompt_template: str = "Question: {question}\nAnswer:",
) -> tuple[Router, list[dict[str, float]]]:
    """Train a router on ``problems`` (dicts with ``question`` and ``answer``; cycled over ``config.steps``).

    Checkpoints go to ``config.out_dir`` every ``ckpt_every`` problems and a rerun resumes from the
    newest. Returns the router (also saved as ``out_dir/router.pt``) and the per-problem log."""
    if not problems:
        raise ValueError("train_router: problems is empty")
    out_dir = Path(config.out_dir)
    torch.manual_seed(config.seed)
    router = Router(slm.config.hidden_size)
    optimizer = torch.optim.Adam(router.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    log: list[dict[str, float]] = []
    start = 0
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        saved = json.loads(state["config"])
        changed = [
            k for k in ("tau", "lam", "rollouts", "max_new_tokens") if saved[k] != str(getattr(config, k))
        ]
        if changed:
            raise ValueError(
                f"train_router: {checkpoint} was trained with other settings ({', '.join(changed)}: "
                f"{[saved[k] for k in changed]}); use another out_dir or the same settings"
            )
        router.load_state_dict(state["router"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        log, start = json.loads(state["log"]), state["step"]
    stitched = StitchedGenerator(slm, llm, tokenizer, tau=config.tau, router=router)
    router.train()
    for step in progress(
        range(start, config.steps),
        desc="train router",
        total=config.steps - start,
        enabled=config.show_progress,
    ):
        row = problems[step % len(problems)]
        prompt = tokenizer(prompt_template.format(question=row["question"]), return_tensors="pt").input_ids
        outputs = [
            stitched.generate(
                prompt, max_new_tokens=config.max_new_tokens, router_sample=True, generator=generator
            )
            for _ in range(config.rollouts)
        ]
        # One latency unit per problem (the LLM alone at the group's mean length), so a rollout that
        # rambles on costs more rather than being normalised away.
        mean_length = round(sum(len(o.sources) for o in outputs) / len(outputs))
        reference = cost_model.decode_cost("llm", prompt.shape[1], max(1, mean_length))
        gold = reference_answer(row["answer"])
        correct = [
            float(
                answers_match(extract_answer(tokenizer.decode(o.new_tokens, skip_special_tokens=True)), gold)
            )
            for o in outputs
        ]
        costs = [cost_model.cost(o.calls) / reference for o in outputs]
        rewards = [ok - config.lam * cost for ok, cost in zip(correct, costs, strict=True)]
        log_probs = [
            torch.stack(o.router_log_probs).sum() if o.router_log_probs else torch.zeros(()) for o in outputs
        ]
        reward = torch.tensor(rewards)
        advantage = reward - reward.mean()
        loss = -(advantage * torch.stack(log_probs)).mean()
        optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            optimizer.step()
        log.append(
            {
                "step": step + 1,
                "reward": float(reward.mean()),
                "accuracy": sum(correct) / len(correct),
                "relative_cost": sum(costs) / len(costs),
            }
        )
        done = step + 1
        if done == config.steps or (config.ckpt_every and done % config.ckpt_every == 0):
            save_checkpoint(
                out_dir,
                done,
                {
                    "router": router.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "rng": get_rng_state(),
                    "log": json.dumps(log),
                    "step": done,
                    "config": json.dumps({k: str(v) for k, v in asdict(config).items()}),
                },
            )
    router.eval()
    router.save(out_dir / "router.pt")
    return router, log
