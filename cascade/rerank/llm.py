"""Listwise LLM reranking (RankGPT): an OpenAI-compatible chat model orders windows of candidates.

The model sees `window` numbered passages at a time and answers with an ordering like `[3] > [1] > [2]`.
Windows slide from the bottom of the list to the top by `step`, so a strong passage can climb all the way
up in one pass. The model's answer is never trusted blindly: ids it leaves out, repeats or invents are
ignored, and the passages it did not place keep their previous relative order below the ones it did.
A rate limit (429) or server error (5xx) is retried after a short backoff (the server's Retry-After when
it sends one, at most RETRY_WAIT_CAP_S); any other failure, or one that persists, makes the whole stage fall
back to the previous stage's order, marked degraded, so a flaky endpoint never reorders results half-way.
A reasoning model's `<think>...</think>` block is dropped before the ranking is read: ids it mentions while
thinking are not its answer.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cascade.errors import CascadeError
from cascade.rerank.base import Ranks
from cascade.rerank.budget import check_gone

SYSTEM = "You are RankGPT, an intelligent assistant that ranks passages by their relevance to a search query."
ID_PATTERN = re.compile(r"\[(\d+)\]")
THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)  # an unclosed block ran out of tokens: no answer
RETRIED = {429, 500, 502, 503, 504}
RETRY_WAIT_CAP_S = 5.0


@dataclass
class LLMRanking:
    """The stage's outcome: `order` indexes the input passages, best first."""

    order: np.ndarray
    degraded: bool = False
    reason: str = ""
    calls: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})


class LLMCallError(Exception):
    """One chat-completions call failed (timeout, HTTP error, unreadable body)."""


def parse_ranking(text: str, n: int) -> list[int]:
    """0-based order of `n` windowed passages from a model answer; missing ids keep their relative order.

    `[2] > [3] > [2] > [9]` with n=3 gives [1, 2, 0]: the repeat and the unknown [9] are ignored, and
    the unmentioned [1] goes after the placed ones.
    """
    placed: list[int] = []
    for match in ID_PATTERN.finditer(THINKING.sub("", text)):
        k = int(match.group(1)) - 1
        if 0 <= k < n and k not in placed:
            placed.append(k)
    return placed + [k for k in range(n) if k not in placed]


def windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """(start, end) spans from the bottom of an n-long list to the top, RankGPT's sliding order."""
    spans, end = [], n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


class LLMReranker(Ranks):
    """RankGPT over any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp, Ollama...).

    `url` is the base URL (`http://host:8000/v1`) or the full `.../chat/completions` URL; the API key is
    read from the environment variable `api_key_env` (none sent when it is unset).
    """

    def __init__(self, url: str, model: str, *, window: int = 20, step: int = 10, timeout_s: float = 30.0,
                 api_key_env: str = "OPENAI_API_KEY", max_passage_words: int = 120, max_tokens: int | None = 512,
                 retries: int = 2):
        if not url.startswith(("http://", "https://")):
            raise CascadeError(f"--llm-url must be an http(s) URL, got {url!r}")
        if not model:
            raise CascadeError("--llm-model is required with --llm-url")
        if window < 2 or not 1 <= step <= window:
            raise CascadeError(f"need window >= 2 and 1 <= step <= window, got window {window}, step {step}")
        if not timeout_s > 0:
            raise CascadeError(f"LLM timeout must be > 0 seconds, got {timeout_s}")
        if (max_tokens is not None and max_tokens < 1) or retries < 0:
            raise CascadeError(f"need max_tokens >= 1 (or None) and retries >= 0, got {max_tokens}, {retries}")
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model_id = model
        self.window, self.step, self.timeout_s = window, step, timeout_s
        self.api_key_env = api_key_env
        self.max_passage_words = max_passage_words
        self.max_tokens, self.retries = max_tokens, retries  # a ranking of 20 ids is ~100 tokens; 512 leaves room

    def rerank(self, query: str, passages: Sequence[str]) -> LLMRanking:
        """Order `passages` (the previous stage's order) by the LLM: one call per window, each within timeout_s."""
        result = LLMRanking(order=np.arange(len(passages)))
        order = list(range(len(passages)))
        for start, end in windows(len(passages), self.window, self.step) if len(passages) > 1 else []:
            span = order[start:end]
            check_gone()  # one call per window, seconds each: stop between them once a server's client has left
            try:
                answer = self._chat(self._prompt(query, [passages[i] for i in span]), result)
            except LLMCallError as e:
                return self._fallback(result, str(e))
            order[start:end] = [span[k] for k in parse_ranking(answer, len(span))]
        result.order = np.asarray(order, dtype=np.int64)
        return result

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False, *,
                raw_scores: bool = False) -> np.ndarray:
        """Listwise scores: each query's documents ranked together, scored n, n-1, ..., 1 best first (the LLM
        ranks; it does not score, so there is nothing raw). `batch_size` is unused: a window is `window` passages."""
        scores = np.zeros(len(pairs), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        for query, items in by_query.items():
            order = self.rerank(query, [pairs[i][1] for i in items]).order
            scores[np.asarray(items)[order]] = np.arange(len(items), 0, -1)
        return scores

    @staticmethod
    def _fallback(result: LLMRanking, reason: str) -> LLMRanking:
        result.order = np.arange(len(result.order))
        result.degraded, result.reason = True, f"LLM rerank skipped, previous order kept: {reason}"
        return result

    def _prompt(self, query: str, texts: Sequence[str]) -> str:
        lines = [f"Rank the {len(texts)} passages below by their relevance to the search query: {query}", ""]
        for k, text in enumerate(texts, 1):
            words = text.split()
            lines.append(f"[{k}] {' '.join(words[: self.max_passage_words])}")
        lines += ["", f"Search query: {query}",
                  f"Rank all {len(texts)} passages, most relevant first, as identifiers separated by '>', "
                  "e.g. [2] > [1] > [3]. Answer with the ranking only."]
        return "\n".join(lines)

    def complete(self, prompt: str, system: str) -> str | None:
        """One answer to `prompt` (reasoning blocks dropped), or None when the endpoint fails after its retries:
        the same client, retries and timeout as ranking, for other jobs (e.g. writing pseudo-queries)."""
        try:
            return THINKING.sub("", self._chat(prompt, LLMRanking(order=np.arange(0)), system)).strip()
        except LLMCallError:
            return None

    def _chat(self, prompt: str, result: LLMRanking, system: str = SYSTEM) -> str:
        body = {"model": self.model_id, "temperature": 0,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                **({"max_tokens": self.max_tokens} if self.max_tokens else {})}
        headers = {"content-type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers)
        attempt = 0
        while True:
            result.calls += 1
            try:
                return self._send(request, result)
            except urllib.error.HTTPError as e:
                if e.code not in RETRIED or attempt == self.retries:
                    raise LLMCallError(f"HTTP {e.code} from {self.url}"
                                       + (f" after {attempt + 1} tries" if attempt else "")) from None
                wait = retry_wait(e.headers.get("retry-after") if e.headers else None, attempt)
            time.sleep(wait)
            attempt += 1

    def _send(self, request: urllib.request.Request, result: LLMRanking) -> str:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError:  # a status: _chat decides whether to retry
            raise
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LLMCallError(f"{self.url} unreachable or too slow ({reason})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LLMCallError(f"{self.url} answered with a body that is not JSON") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMCallError(f"{self.url} answered without choices[0].message.content") from None
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if isinstance(usage, dict):
            result.tokens["prompt"] += int(usage.get("prompt_tokens") or 0)
            result.tokens["completion"] += int(usage.get("completion_tokens") or 0)
        return content if isinstance(content, str) else ""


def retry_wait(retry_after: str | None, attempt: int) -> float:
    """Seconds to wait before retry `attempt` + 1: the server's Retry-After (seconds) if it gave one, else
    0.25 s doubling; never more than RETRY_WAIT_CAP_S, so a search's LLM stage cannot hang on it."""
    try:
        wait = float(retry_after) if retry_after is not None else 0.25 * 2 ** attempt
    except ValueError:  # an HTTP date: not worth parsing for a bounded wait
        wait = 0.25 * 2 ** attempt
    return min(max(wait, 0.0), RETRY_WAIT_CAP_S)
