"""(query, passage) pairs assembled from token ids: each text tokenised once, never past what a pair holds.

Handing pairs to the tokenizer re-tokenises the query once per passage and every passage on every
request, and a fast tokenizer given a huge text builds all of it (and its overflow windows) before it
truncates: a 600 KB query cost 4 GB and 40 s in the server. Here each text is cut to `WORD_CAP` x
max_length words first (a word is at least one token, so a text under that is tokenised whole and its
length is exact), tokenised without special tokens (a list's uncached texts in one call), and kept
(passages in an LRU, so a served corpus is tokenised once per process). Measured by
benchmarks/pair_tokens.py: 30 SciFact pairs 9.4 ms -> 0.27 ms once cached (10.0 ms cold); a 600 KB
query 851 ms -> 30 ms. A pair then takes the head of each, sized by `fit`, which reproduces the tokenizer's
own `longest_first` truncation exactly (checked against it for every length pair up to 44 tokens, at two
budgets). The one difference: when both texts pass the word cap, which one counts as longer may differ,
which moves one token between them. A probe at load compares assembled pairs with the tokenizer's; a
tokenizer this does not reproduce is used the old way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

WORD_CAP = 4  # texts are cut to WORD_CAP x max_length words before tokenising
CACHE_SIZE = 50_000  # passages whose token ids are kept (a few hundred bytes each)


def fit(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each text when a pair of n1 + n2 tokens must fit `budget`: the shorter keeps up to half
    (rounded down), the longer the rest; on a tie the first counts as the shorter (the tokenizer's rule)."""
    if n1 + n2 <= budget:
        return n1, n2
    if n1 > n2:
        short = min(n2, budget // 2)
        return budget - short, short
    short = min(n1, budget // 2)
    return short, budget - short


def cut(text: str, words: int) -> str:
    """At most `words` whitespace-separated words of `text` (the text itself when it has no more)."""
    parts = text.split(None, words)
    return " ".join(parts[:words]) if len(parts) > words else text


class PairTokens:
    """Token ids of pairs for one tokenizer and pair length; thread-safe."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        self.words = WORD_CAP * max_length
        self.template = self.special_tokens()
        self.cache: OrderedDict[str, tuple[list[int], int]] = OrderedDict()
        self.lock = threading.Lock()
        self.exact = self.reproduces_tokenizer()

    def ids(self, texts: Sequence[str], keep: bool = True) -> list[tuple[list[int], int]]:
        """(the first `budget` token ids, the token count) of each text, the uncached ones tokenised in one
        call; `keep` caches them (passages, not queries)."""
        with self.lock:
            found = {t: self.cache[t] for t in dict.fromkeys(texts) if t in self.cache}
            for t in found:
                self.cache.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            batch = self.tokenizer([cut(t, self.words) for t in missing], add_special_tokens=False)["input_ids"]
            fresh = {t: (ids[: self.budget], len(ids)) for t, ids in zip(missing, batch)}
            found |= fresh
            if keep:
                with self.lock:
                    self.cache.update(fresh)
                    while len(self.cache) > CACHE_SIZE:
                        self.cache.popitem(last=False)
        return [found[t] for t in texts]

    def remember(self, texts: Sequence[str], known: Sequence[tuple[list[int], int]]) -> None:
        """Cache passages' (token ids, count) read from an index (`Index.passage_tokens`) instead of tokenising them."""
        with self.lock:
            for text, (ids, count) in zip(texts, known):
                self.cache[text] = (ids[: self.budget], count)
                self.cache.move_to_end(text)
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)

    def special_tokens(self) -> dict[str, tuple] | None:
        """Where the tokenizer puts its special tokens and token types around a pair, read off one it builds
        (e.g. BERT: [CLS] q [SEP] d [SEP], types 0...0 1...1); None if the layout cannot be read."""
        q, d = self.tokenizer("alpha", add_special_tokens=False)["input_ids"], \
            self.tokenizer("omega", add_special_tokens=False)["input_ids"]
        pair = self.tokenizer("alpha", "omega")
        ids, types = pair["input_ids"], pair.get("token_type_ids")
        i = next((k for k in range(len(ids)) if ids[k:k + len(q)] == q), None)
        j = next((k for k in range(i + len(q), len(ids)) if ids[k:k + len(d)] == d), None) if i is not None else None
        if j is None:
            return None
        spans = ((0, i), (i + len(q), j), (j + len(d), len(ids)))
        return {"ids": tuple(ids[a:b] for a, b in spans),
                "types": None if types is None else (tuple(types[a:b] for a, b in spans), types[i], types[j])}

    def features(self, pairs: Sequence[tuple[str, str]]) -> tuple[dict, list[bool]]:
        """Model inputs of every pair (lists, unpadded) and whether each passage was cut to fit."""
        if self.template is None:
            raise ValueError("no special-token layout for this tokenizer")
        (pre, mid, post), types = self.template["ids"], self.template["types"]
        distinct = list(dict.fromkeys(q for q, _ in pairs))  # usually one query for the whole list
        queries = dict(zip(distinct, self.ids(distinct, keep=False)))
        passages = self.ids([d for _, d in pairs])
        out: dict[str, list] = {"input_ids": [], "attention_mask": []} | ({"token_type_ids": []} if types else {})
        truncated = []
        for (q, _), (d_ids, nd) in zip(pairs, passages):
            q_ids, nq = queries[q]
            a, b = fit(nq, nd, self.budget)
            ids = [*pre, *q_ids[:a], *mid, *d_ids[:b], *post]
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            if types:
                (t_pre, t_mid, t_post), t_q, t_d = types
                out["token_type_ids"].append([*t_pre, *[t_q] * a, *t_mid, *[t_d] * b, *t_post])
            truncated.append(b < nd)
        return out, truncated

    def reproduces_tokenizer(self) -> bool:
        """Whether assembled pairs equal the tokenizer's own, on short, long-query and long-passage probes."""
        short, long_ = "what raises tides", " ".join(["the moon pulls the oceans"] * self.max_length)
        probes = [(short, "The Moon raises tides."), (long_, short), (short, long_), (long_, long_ + " again")]
        try:
            built, _ = self.features(probes)
        except ValueError:
            return False
        finally:
            self.cache.clear()
        reference = self.tokenizer([q for q, _ in probes], [d for _, d in probes], truncation="longest_first",
                                   max_length=self.max_length)
        return set(built) == set(reference) and all(built[k] == reference[k] for k in built)
