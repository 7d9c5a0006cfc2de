"""R-Stitch: entropy-guided token stitching between a small (SLM) and a large (LLM) language model.

Algorithm 1 of the paper, for batch size 1:

- two runners, each with its own KV cache and the length of the shared sequence x ⊕ y it has seen;
  the SLM is active first;
- each step the active model produces the next-token distribution; when its cache is behind the
  sequence it first runs a partial prefill of only the missing suffix (one forward pass, which also
  gives the distribution);
- SLM active and uncertainty > τ: the SLM's token is discarded (it was never fed, so the SLM's cache
  already ends before it) and the LLM regenerates the position; with a router (R-Stitch+) the router
  decides between keeping the SLM token and escalating;
- LLM active and uncertainty ≤ τ: the LLM's token is kept and the SLM takes over from the next token.
  With ``switch_back="always"`` the LLM hands back after every token (per-token routing, as in R2R).

No full-sequence rollback ever happens: a model that takes over feeds only what it has not seen.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from rstitch.runner import ForwardCall, ModelRunner
from rstitch.uncertainty import UNCERTAINTY_MEASURES, uncertainty

__all__ = [
    "SWITCH_BACK",
    "RouterPolicy",
    "StitchOutput",
    "StitchedGenerator",
    "check_same_tokenizer",
    "default_eos_ids",
]

SWITCH_BACK = ("uncertainty", "always")
_FROM_MODEL: Any = object()  # eos_token_id default: take it from the tokenizer or the model's config


class RouterPolicy(Protocol):
    """What R-Stitch+ consults when the SLM is uncertain (see :class:`rstitch.router.Router`)."""

    def decide(
        self,
        hidden: torch.Tensor,
        context_length: int,
        uncertainty: float,
        *,
        sample: bool,
        generator: torch.Generator | None,
    ) -> tuple[bool, torch.Tensor | None]:
        """(escalate to the LLM?, log-probability of that decision when ``sample`` else None)."""
        ...


@dataclass
class StitchOutput:
    """What :meth:`StitchedGenerator.generate` returns.

    Attributes:
        sequences: [1, P + N] the prompt followed by the N generated tokens (on the CPU).
        sources: N labels, ``"slm"`` or ``"llm"``: which model produced each generated token.
        uncertainties: N values, the producing model's uncertainty for each token.
        switches: how many times the active model changed.
        calls: every forward pass of both models, in order (for latency attribution).
        router_log_probs: log-probabilities of the router's sampled decisions (R-Stitch+ training).
        latency_s: wall-clock time of the call.
    """

    sequences: torch.Tensor
    sources: list[str]
    uncertainties: list[float] = field(default_factory=list)
    switches: int = 0
    calls: list[ForwardCall] = field(default_factory=list)
    router_log_probs: list[torch.Tensor] = field(default_factory=list)
    latency_s: float = 0.0

    @property
    def new_tokens(self) -> torch.Tensor:
        """[N] the generated tokens."""
        return self.sequences[0, self.sequences.shape[1] - len(self.sources) :]

    @property
    def llm_share(self) -> float:
        """Share of the generated tokens that the LLM produced (0 when nothing was generated)."""
        return self.sources.count("llm") / len(self.sources) if self.sources else 0.0


def check_same_tokenizer(slm_tokenizer: Any, llm_tokenizer: Any) -> None:
    """Raise ``ValueError`` unless the two tokenizers map the same strings to the same ids."""
    a, b = slm_tokenizer.get_vocab(), llm_tokenizer.get_vocab()
    if a != b:
        only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
        moved = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
        raise ValueError(
            "R-Stitch needs the SLM and the LLM to share a tokenizer: the vocabularies differ "
            f"({only_a} tokens only in the SLM's, {only_b} only in the LLM's, {moved} with different ids)"
        )


def default_eos_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every EOS id the tokenizer and the model's generation config / config declare (chat models often
    list several, e.g. ``<|im_end|>`` and ``<|endoftext|>``)."""
    ids: list[int] = []
    candidates = [
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        getattr(getattr(model, "config", None), "eos_token_id", None),
    ]
    for value in candidates:
        for token in [value] if isinstance(value, int) else list(value or []):
            if int(token) not in ids:
                ids.append(int(token))
    return ids


def _vocab_size(model: Any, label: str) -> int:
    size = getattr(model.config, "vocab_size", None)
    if size is None:
        raise TypeError(f"StitchedGenerator: {label} has no config.vocab_size; pass a transformers causal LM")
    return int(size)


def _choose(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    """Greedy argmax, or a sample after temperature, top-k and top-p (nucleus) filtering."""
    if not do_sample:
        return int(logits.argmax())
    scaled = logits / temperature
    if 0 < top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_probs.cumsum(0) - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class StitchedGenerator:
    """Token-level stitching of ``slm`` and ``llm`` (transformers causal LMs sharing a tokenizer).

    Args:
        slm, llm: the small and the large model (any dtype and device each).
        tokenizer: the shared tokenizer; needed for ``stop_strings`` and to take ``eos_token_id``
            from. Its length bounds the vocabulary (models may pad their embedding tables).
        tau: the uncertainty threshold τ in [0, 1]. 0 escalates every SLM token (LLM greedy output);
            1 never escalates (SLM greedy output).
        uncertainty: ``"entropy"`` (normalised entropy) or ``"max_prob"`` (1 − max probability).
        router: R-Stitch+: consulted only when the SLM's uncertainty exceeds τ.
        switch_back: ``"uncertainty"`` (R-Stitch: back to the SLM once the LLM is confident) or
            ``"always"`` (per-token routing: the LLM produces one token, then the SLM resumes).
        llm_tokenizer: the LLM's own tokenizer, if loaded separately: it must map the same strings
            to the same ids as ``tokenizer`` (checked).
    """

    def __init__(
        self,
        slm: Any,
        llm: Any,
        tokenizer: Any = None,
        *,
        tau: float = 0.02,
        uncertainty: str = "entropy",
        router: RouterPolicy | None = None,
        switch_back: str = "uncertainty",
        llm_tokenizer: Any = None,
    ) -> None:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"StitchedGenerator: tau must be in [0, 1], got {tau}")
        if uncertainty not in UNCERTAINTY_MEASURES:
            raise ValueError(
                f"StitchedGenerator: uncertainty must be one of {UNCERTAINTY_MEASURES}, got {uncertainty!r}"
            )
        if switch_back not in SWITCH_BACK:
            raise ValueError(
                f"StitchedGenerator: switch_back must be one of {SWITCH_BACK}, got {switch_back!r}"
            )
        sizes = {"slm": _vocab_size(slm, "slm"), "llm": _vocab_size(llm, "llm")}
        self.vocab_size = min(sizes.values())
        if tokenizer is not None:
            if len(tokenizer) > self.vocab_size:
                raise ValueError(
                    f"StitchedGenerator: the tokenizer has {len(tokenizer)} tokens but the models' vocabularies "
                    f"are {sizes}: the models do not share this tokenizer"
                )
            self.vocab_size = len(tokenizer)
        elif sizes["slm"] != sizes["llm"]:
            raise ValueError(
                f"StitchedGenerator: the models' vocabulary sizes differ ({sizes}); pass the shared tokenizer "
                "so the common vocabulary is known (or check that they really share one)"
            )
        if llm_tokenizer is not None:
            if tokenizer is None:
                raise ValueError(
                    "StitchedGenerator: llm_tokenizer needs tokenizer (the SLM's) to compare with"
                )
            check_same_tokenizer(tokenizer, llm_tokenizer)
        self.slm, self.llm, self.tokenizer = slm, llm, tokenizer
        self.tau, self.uncertainty, self.router, self.switch_back = tau, uncertainty, router, switch_back

    def _default_eos(self) -> list[int]:
        return default_eos_ids(self.tokenizer, self.llm)

    def generate(
        self,
        input_ids: torch.Tensor | Sequence[int],
        *,
        max_new_tokens: int = 256,
        eos_token_id: int | Sequence[int] | None = _FROM_MODEL,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        stop_strings: Sequence[str] | None = None,
        streamer: Any = None,
        router_sample: bool = False,
    ) -> StitchOutput:
        """Generate up to ``max_new_tokens`` after ``input_ids`` ([1, P] or [P]).

        ``eos_token_id=None`` disables stopping at EOS (the default comes from the tokenizer, else the
        LLM's generation config). ``stop_strings`` stop once the generated text contains one of them
        (the token that completes it is kept). ``streamer`` gets ``put(prompt_ids)``, then
        ``put(tensor([token]))`` per token and ``end()``, like transformers' ``TextStreamer``.
        ``router_sample`` samples the router's decisions and records their log-probabilities.
        """
        prompt = self._check_input(input_ids)
        if max_new_tokens < 1:
            raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
        if do_sample and temperature <= 0:
            raise ValueError(f"generate: temperature must be > 0 when sampling, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
        if stop_strings and self.tokenizer is None:
            raise ValueError("generate: stop_strings need the tokenizer (StitchedGenerator(..., tokenizer=))")
        eos = self._default_eos() if eos_token_id is _FROM_MODEL else eos_token_id
        eos_ids = set() if eos is None else {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}
        if top_k < 0:
            raise ValueError(f"generate: top_k must be >= 0 (0: off), got {top_k}")
        choose = functools.partial(
            _choose,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )

        started = time.perf_counter()
        p = prompt.shape[1]
        sequence = torch.empty((1, p + max_new_tokens), dtype=torch.long)
        sequence[:, :p] = prompt
        out = StitchOutput(sequences=sequence, sources=[])
        runners = {
            "slm": ModelRunner(self.slm, "slm", output_hidden=self.router is not None, calls=out.calls),
            "llm": ModelRunner(self.llm, "llm", calls=out.calls),
        }
        if streamer is not None:
            streamer.put(prompt)
        active, n = "slm", p
        while n < p + max_new_tokens:
            seen = sequence[:, :n]
            logits = runners[active].next_logits(seen)[: self.vocab_size]
            u = uncertainty(logits, self.uncertainty)
            if (
                active == "slm"
                and not u <= self.tau  # a NaN uncertainty (overflow) escalates
                and self._escalate(runners["slm"], n, u, router_sample, generator, out)
            ):
                active = "llm"
                out.switches += 1
                logits = runners["llm"].next_logits(seen)[: self.vocab_size]
                u = uncertainty(logits, self.uncertainty)
            token = choose(logits)
            sequence[0, n] = token
            n += 1
            out.sources.append(active)
            out.uncertainties.append(u)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if active == "llm" and (self.switch_back == "always" or u <= self.tau):
                active = "slm"
                out.switches += 1
            if token in eos_ids or (stop_strings and self._hit_stop(sequence[0, p:n], stop_strings)):
                break
        if streamer is not None:
            streamer.end()
        out.sequences = sequence[:, :n].clone()
        out.latency_s = time.perf_counter() - started
        return out

    def _escalate(
        self,
        slm: ModelRunner,
        length: int,
        u: float,
        sample: bool,
        generator: torch.Generator | None,
        out: StitchOutput,
    ) -> bool:
        """Whether an uncertain SLM step goes to the LLM: always for R-Stitch; the router's call for R-Stitch+."""
        if self.router is None:
            return True
        assert slm.hidden is not None
        escalate, log_prob = self.router.decide(slm.hidden, length, u, sample=sample, generator=generator)
        if log_prob is not None:
            out.router_log_probs.append(log_prob)
        return escalate

    def _check_input(self, input_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        ids = torch.as_tensor(input_ids, dtype=torch.long).cpu()
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"generate: input_ids must be [1, P] or [P] with P >= 1, got {tuple(ids.shape)}")
        if ids.shape[0] != 1:
            raise ValueError(
                f"generate: R-Stitch decodes one sequence at a time (batch size 1), got a batch of {ids.shape[0]}; "
                "call generate once per row"
            )
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f"generate: input_ids must lie in [0, {self.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]"
            )
        return ids

    def _hit_stop(self, generated: torch.Tensor, stop_strings: Sequence[str]) -> bool:
        # A stop string of b UTF-8 bytes spans at most b + 1 tokens (a token is at least one byte).
        window = max(len(s.encode("utf-8")) for s in stop_strings) + 1
        text = self.tokenizer.decode(generated[-window:].tolist(), skip_special_tokens=False)
        return any(s in text for s in stop_strings)
