"""The latency cost model and the R-Stitch+ router: fitting, costs, decisions, REINFORCE training, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import rstitch.cost_model as cost_module
import rstitch.router as router_module
from rstitch.arithmetic import make_problems
from rstitch.cost_model import CostModel, LinearCost
from rstitch.generator import StitchedGenerator
from rstitch.router import Router, RouterTrainConfig, train_router
from rstitch.runner import ForwardCall

HIDDEN = 32  # the conftest SLM's hidden size

# --- CostModel --------------------------------------------------------------------------------------------

TRUE_COSTS = {
    "small": LinearCost(fixed=2e-4, per_token=3e-6, per_context=5e-7),
    "large": LinearCost(fixed=9e-4, per_token=2e-5, per_context=4e-6),
}


def test_linear_cost_formula() -> None:
    cost = LinearCost(fixed=1.0, per_token=0.5, per_context=2.0)
    # t(n, c) = fixed + per_token · n + per_context · n · (c + n) / 1000
    assert cost(4, 96) == pytest.approx(1.0 + 0.5 * 4 + 2.0 * 4 * 100 / 1000)
    assert cost(1, 0) == pytest.approx(1.0 + 0.5 + 2.0 / 1000)


def test_fit_recovers_known_coefficients(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def exact(model: str, new_tokens: int, cached: int, vocab_size: int, repeats: int) -> float:
        seen.append((model, new_tokens, cached, vocab_size, repeats))
        return TRUE_COSTS[model](new_tokens, cached)

    monkeypatch.setattr(cost_module, "_median_forward_time", exact)
    new_tokens, cached = (1, 2, 8, 32), (0, 16, 200)
    fitted = CostModel.fit(
        {"slm": "small", "llm": "large"}, vocab_size=77, new_tokens=new_tokens, cached=cached, repeats=3
    )
    assert set(fitted.costs) == {"slm", "llm"}
    for name, truth in (("slm", TRUE_COSTS["small"]), ("llm", TRUE_COSTS["large"])):
        got = fitted.costs[name]
        assert got.fixed == pytest.approx(truth.fixed, rel=1e-6)
        assert got.per_token == pytest.approx(truth.per_token, rel=1e-6)
        assert got.per_context == pytest.approx(truth.per_context, rel=1e-6)
    # every grid point of every model was timed, with the vocabulary size and repeats passed through
    expected = {(m, n, c, 77, 3) for m in ("small", "large") for n in new_tokens for c in cached}
    assert set(seen) == expected and len(seen) == len(expected)


def test_fit_never_returns_negative_coefficients(monkeypatch: pytest.MonkeyPatch) -> None:
    falling = LinearCost(fixed=1e-3, per_token=-1e-6, per_context=2e-6)  # a negative slope to clamp
    monkeypatch.setattr(cost_module, "_median_forward_time", lambda _m, n, c, _v, _r: falling(n, c))
    fitted = CostModel.fit({"slm": None}, vocab_size=8, new_tokens=(1, 4, 16), cached=(0, 64))
    cost = fitted.costs["slm"]
    assert min(cost.fixed, cost.per_token, cost.per_context) >= 0.0


def test_cost_sums_the_calls() -> None:
    model = CostModel({"slm": TRUE_COSTS["small"], "llm": TRUE_COSTS["large"]})
    calls = [
        ForwardCall("slm", 12, 0),
        ForwardCall("slm", 1, 12),
        ForwardCall("llm", 14, 0),
        ForwardCall("slm", 2, 13),
    ]
    expected = (
        TRUE_COSTS["small"](12, 0)
        + TRUE_COSTS["small"](1, 12)
        + TRUE_COSTS["large"](14, 0)
        + TRUE_COSTS["small"](2, 13)
    )
    assert model.cost(calls) == pytest.approx(expected, rel=1e-12)
    assert model.cost([]) == 0.0


def test_decode_cost_is_a_prefill_then_one_step_per_token() -> None:
    fixed, per_token, per_context = 1e-3, 2e-5, 3e-6
    model = CostModel({"llm": LinearCost(fixed, per_token, per_context)})
    prompt, new = 10, 5
    prefill = fixed + per_token * prompt + per_context * prompt * prompt / 1000
    # the prefill gives the first token; each later token is fed alone on top of prompt + i cached ones
    steps = sum(fixed + per_token + per_context * (prompt + i + 1) / 1000 for i in range(new - 1))
    assert model.decode_cost("llm", prompt, new) == pytest.approx(prefill + steps, rel=1e-12)
    assert model.decode_cost("llm", prompt, 1) == pytest.approx(prefill, rel=1e-12)
    assert model.decode_cost("llm", prompt, 0) == 0.0


def test_decode_cost_matches_the_calls_of_decoding_alone(vocab_pair: tuple[Any, Any]) -> None:
    """decode_cost is the estimate of exactly the forward passes decode_alone runs."""
    from rstitch.baselines import decode_alone

    _, llm = vocab_pair
    prompt = torch.arange(3, 10)[None]
    out = decode_alone(llm, prompt, label="llm", max_new_tokens=6)
    model = CostModel({"llm": TRUE_COSTS["large"]})
    assert model.cost(out.calls) == pytest.approx(model.decode_cost("llm", prompt.shape[1], 6), rel=1e-12)


def test_cost_model_save_load_round_trip(tmp_path: Path) -> None:
    model = CostModel({"slm": TRUE_COSTS["small"], "llm": TRUE_COSTS["large"]})
    path = model.save(tmp_path / "sub" / "cost_model.json")
    assert path.is_file()
    assert CostModel.load(path) == model


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        json.dumps({"slm": {"fixed": 1.0, "per_token": 0.0}}),  # a field missing
        json.dumps({"slm": {"fixed": 1.0, "per_token": 0.0, "per_context": 0.0, "extra": 1}}),
        json.dumps({"slm": [1.0, 2.0, 3.0]}),
        json.dumps([1.0, 2.0, 3.0]),  # valid JSON, but not an object
    ],
    ids=["not-json", "missing-field", "extra-field", "list-values", "json-list"],
)
def test_cost_model_load_rejects_bad_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"bad\.json|JSON|Expecting"):
        CostModel.load(path)


def test_real_fit_on_tiny_models(model_factory: Any) -> None:
    """Unpatched timing of a 1-layer and a 12-layer model (small grids: about a second).

    Medians of 7 runs and a 12x layer ratio: the order must survive a machine busy with other jobs
    (3 runs and 6 layers were flipped once by a CI run that shared its 2 cores)."""
    shallow = model_factory(hidden=32, layers=1, seed=0)
    deep = model_factory(hidden=32, layers=12, seed=1)
    fitted = CostModel.fit(
        {"slm": shallow, "llm": deep}, vocab_size=64, new_tokens=(1, 4, 16), cached=(0, 16, 64), repeats=7
    )
    for cost in fitted.costs.values():
        values = (cost.fixed, cost.per_token, cost.per_context)
        assert all(math.isfinite(v) and v >= 0.0 for v in values), cost
        assert cost(1, 16) > 0.0
    # twelve layers against one: several times the per-step cost, so a plain ">" is a safe margin
    assert fitted.costs["llm"](1, 16) > fitted.costs["slm"](1, 16)
    assert fitted.decode_cost("llm", 16, 8) > fitted.decode_cost("slm", 16, 8)


# --- Router -----------------------------------------------------------------------------------------------


def hidden_states(n: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, HIDDEN, generator=torch.Generator().manual_seed(seed))


def make_router(seed: int = 0) -> Router:
    torch.manual_seed(seed)
    return Router(HIDDEN)


def escalation_probability(router: Router, states: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.stack([torch.sigmoid(router.logit(h, 20, 0.5)) for h in states]).mean())


def test_a_fresh_router_escalates() -> None:
    # the output bias starts at 2: escalating (as R-Stitch does) is the initial policy
    assert escalation_probability(make_router(), hidden_states(32)) > 0.8


def test_greedy_decisions_are_deterministic_and_carry_no_log_prob() -> None:
    router = make_router()
    for h in hidden_states(8):
        first = router.decide(h, 17, 0.3, sample=False, generator=None)
        second = router.decide(h, 17, 0.3, sample=False, generator=None)
        assert first == second and first[1] is None
        assert first[0] == bool(router.logit(h, 17, 0.3) > 0)


def test_sampled_decisions_have_a_differentiable_log_prob() -> None:
    router = make_router().train()
    with torch.inference_mode():  # the generator's hidden states are inference tensors
        h = hidden_states(1)[0] * 1.0
    escalate, log_prob = router.decide(h, 17, 0.3, sample=True, generator=torch.Generator().manual_seed(3))
    assert isinstance(log_prob, torch.Tensor) and log_prob.shape == () and log_prob.requires_grad
    logit = router.logit(h, 17, 0.3).detach()
    expected = torch.nn.functional.logsigmoid(logit if escalate else -logit)
    assert torch.allclose(log_prob.detach(), expected) and float(log_prob.detach()) <= 0.0
    log_prob.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in router.parameters())
    assert router.net[-1].bias.grad.abs().sum() > 0  # type: ignore[union-attr]
    # the same seed gives the same decision
    again = router.decide(h, 17, 0.3, sample=True, generator=torch.Generator().manual_seed(3))
    assert again[0] == escalate and torch.equal(again[1].detach(), log_prob.detach())  # type: ignore[union-attr]


def test_sampled_decisions_follow_the_escalation_probability() -> None:
    router = make_router()
    with torch.no_grad():
        router.net[-1].bias.fill_(0.0)  # p away from 0 and 1
    h = hidden_states(1)[0]
    with torch.no_grad():
        p = float(torch.sigmoid(router.logit(h, 40, 0.7)))
    generator = torch.Generator().manual_seed(0)
    n = 2000
    with torch.no_grad():
        hits = sum(router.decide(h, 40, 0.7, sample=True, generator=generator)[0] for _ in range(n))
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3


@pytest.mark.parametrize("shape", [(HIDDEN + 1,), (1, HIDDEN), ()])
def test_router_rejects_wrong_hidden_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=str(HIDDEN)):
        make_router().decide(torch.zeros(shape), 5, 0.5, sample=False, generator=None)


def test_router_save_load_round_trip(tmp_path: Path) -> None:
    router = make_router(seed=4)
    with torch.no_grad():
        for p in router.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = router.save(tmp_path / "deep" / "router.pt")
    loaded = Router.load(path)
    assert not loaded.training and (loaded.hidden_size, loaded.width) == (router.hidden_size, router.width)
    for h in hidden_states(6):
        assert torch.equal(loaded.logit(h, 33, 0.2), router.logit(h, 33, 0.2))
        assert loaded.decide(h, 33, 0.2, sample=False, generator=None) == router.decide(
            h, 33, 0.2, sample=False, generator=None
        )
    with pytest.raises(FileNotFoundError):
        Router.load(tmp_path / "missing.pt")


# --- RouterTrainConfig ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rollouts": 1}, "rollouts"),
        ({"rollouts": 0}, "rollouts"),
        ({"tau": -0.01}, "tau"),
        ({"tau": 1.5}, "tau"),
        ({"lam": -0.1}, "lam"),
        ({"steps": 0}, "steps"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_router_config_validation(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RouterTrainConfig(**overrides)


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_router_config_accepts_the_ends_of_the_tau_range(tau: float) -> None:
    assert RouterTrainConfig(tau=tau).tau == tau


# --- train_router -----------------------------------------------------------------------------------------

# Tiny random models never answer correctly, so with a large λ the reward is pure (negative) cost:
# escalating to the LLM only ever lowers it, and the policy gradient must teach the router not to.
COSTS = CostModel({"slm": LinearCost(0.001, 0.0, 0.0), "llm": LinearCost(0.01, 0.0, 0.0)})


@pytest.fixture(scope="module")
def problems() -> list[dict[str, str]]:
    return [p.as_row() for p in make_problems(4, seed=3)]


def router_config(out_dir: Path, **overrides: Any) -> RouterTrainConfig:
    options: dict[str, Any] = {
        "tau": 0.0,  # the router is consulted on every SLM token
        "lam": 2.0,
        "rollouts": 4,
        "steps": 24,
        "lr": 0.05,
        "max_new_tokens": 16,
        "seed": 0,
        "ckpt_every": 0,
        "out_dir": out_dir,
        "show_progress": False,
    }
    options.update(overrides)
    return RouterTrainConfig(**options)


def test_train_router_learns_to_stop_paying_for_useless_escalations(
    vocab_pair: tuple[Any, Any], tokenizer: Any, problems: list[dict[str, str]], tmp_path: Path
) -> None:
    slm, llm = vocab_pair
    states = hidden_states(64)
    before = escalation_probability(make_router(seed=0), states)  # train_router's initial router (seed 0)
    router, log = train_router(slm, llm, tokenizer, problems, COSTS, router_config(tmp_path))

    assert [row["step"] for row in log] == list(range(1, 25))
    assert all(row["accuracy"] == 0.0 for row in log)  # the premise: random models never solve a problem
    for row in log:  # reward = accuracy − λ · relative cost, averaged over the rollouts
        assert row["reward"] == pytest.approx(row["accuracy"] - 2.0 * row["relative_cost"], abs=1e-6)
    first = sum(row["relative_cost"] for row in log[:5]) / 5
    last = sum(row["relative_cost"] for row in log[-5:]) / 5
    assert first > 0.9  # escalating early: the LLM produces almost every token
    assert last < first - 0.2, [round(row["relative_cost"], 2) for row in log]
    after = escalation_probability(router, states)
    assert after < 0.5 * before, (before, after)
    # the saved router is the trained one
    saved = Router.load(tmp_path / "router.pt")
    assert all(
        torch.equal(a, b)
        for a, b in zip(saved.state_dict().values(), router.state_dict().values(), strict=True)
    )


def test_train_router_without_latency_weight_does_not_move(
    vocab_pair: tuple[Any, Any], tokenizer: Any, problems: list[dict[str, str]], tmp_path: Path
) -> None:
    """λ = 0 and no correct answer: every reward is 0, the advantage is 0, the router keeps its weights."""
    slm, llm = vocab_pair
    router, log = train_router(
        slm, llm, tokenizer, problems, COSTS, router_config(tmp_path, lam=0.0, steps=3)
    )
    initial = make_router(seed=0)
    assert all(row["reward"] == 0.0 for row in log)
    for a, b in zip(initial.state_dict().values(), router.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-7)


def test_train_router_rejects_an_empty_problem_list(
    vocab_pair: tuple[Any, Any], tokenizer: Any, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="empty"):
        train_router(*vocab_pair, tokenizer, [], COSTS, router_config(tmp_path))


class InterruptingGenerator(StitchedGenerator):
    """StitchedGenerator whose ``generate`` raises KeyboardInterrupt on its ``at``-th call overall."""

    at = 0
    calls = 0

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        if type(self).calls == type(self).at:
            raise KeyboardInterrupt
        return super().generate(*args, **kwargs)


def test_train_router_resumes_exactly(
    vocab_pair: tuple[Any, Any],
    tokenizer: Any,
    problems: list[dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from accel_shared.checkpoint import latest_checkpoint, load_checkpoint

    slm, llm = vocab_pair
    options = {"steps": 5, "rollouts": 2, "max_new_tokens": 8, "ckpt_every": 1}
    straight, straight_log = train_router(
        slm, llm, tokenizer, problems, COSTS, router_config(tmp_path / "a", **options)
    )

    out_dir = tmp_path / "b"
    with monkeypatch.context() as patch:
        patch.setattr(InterruptingGenerator, "calls", 0)
        patch.setattr(InterruptingGenerator, "at", 3 * 2 + 2)  # the second rollout of step 4
        patch.setattr(router_module, "StitchedGenerator", InterruptingGenerator)
        with pytest.raises(KeyboardInterrupt):
            train_router(slm, llm, tokenizer, problems, COSTS, router_config(out_dir, **options))
    checkpoint = latest_checkpoint(out_dir)
    assert checkpoint is not None and load_checkpoint(checkpoint)["step"] == 3
    assert not (out_dir / "router.pt").exists()

    resumed, resumed_log = train_router(
        slm, llm, tokenizer, problems, COSTS, router_config(out_dir, **options)
    )
    assert resumed_log == straight_log
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_nonnegative_least_squares_drops_columns_a_free_fit_makes_negative() -> None:
    from rstitch.cost_model import _nonnegative_least_squares

    a = torch.tensor(
        [[1.0, 0.0, 1.0], [1.0, 1.0, 2.0], [1.0, 2.0, 3.1], [1.0, 3.0, 3.9]], dtype=torch.float64
    )
    b = torch.tensor([1.0, 1.9, 3.1, 3.9], dtype=torch.float64)
    free = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
    assert (free < 0).any()
    x = _nonnegative_least_squares(a, b)
    assert (x >= 0).all()
    # no feasible point with the same support does better (checked against the refit on the kept columns)
    kept = [i for i in range(3) if x[i] > 0]
    refit = torch.linalg.lstsq(a[:, kept], b[:, None]).solution[:, 0]
    assert torch.allclose(x[kept], refit)
