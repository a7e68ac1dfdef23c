"""Pseudo-queries from any corpus, without labels: the raw material of a reranker that learns relevance.

Three kinds, each a question a reader could ask of one passage, and a fourth when an LLM endpoint is given:
- `title`: a document's title asks for its body (the title is taken out of the passage, or the pair is a
  string match);
- `cloze`: the passage's most salient sentence asks for the rest of the passage (inverse cloze: the
  sentence is removed, so the model must recognise the topic, not the words);
- `keywords`: the passage's highest tf-idf terms, the short keyword queries users type;
- `llm`: a question an LLM writes for the passage (InPars/Promptagator style), through the same
  OpenAI-compatible client as the LLM stage (`--llm-url`, `--llm-model`).

Each is kept only if our own first stage ranks its source document in its top `keep_top` (consistency
filtering, as in GPL and InPars: a query the retriever cannot connect to its source is usually a bad
query), and takes its hard negatives from the first stage's candidates below the very top (which may be
unjudged positives). Where the query states a direction (increases, lowers, does not...), the source
passage with that claim flipped becomes a contrast negative: close in every word, wrong in meaning.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from cascade.documents import Passage
from cascade.errors import CascadeError

KINDS = ("title", "cloze", "keywords")  # what needs no endpoint: the default
ALL_KINDS = (*KINDS, "llm")
ASK = ("Write one question that a person could ask a search engine and that the passage below answers. Answer "
       "with the question only.\n\nPassage: {passage}")
WRITER = "You write realistic search questions for passages."
Ask = Callable[[str], "str | None"]  # a prompt in, an answer (or None on failure) out: LLMReranker.complete
WORD = re.compile(r"[A-Za-z][A-Za-z\-]+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
STOPWORDS = frozenset("""a an and are as at be been being but by can could did do does for from had has have he
her his how i if in into is it its may might more most no nor not of on or our she should so such than that the
their them then there these they this those to under was we were what when where which while who why will with
would you your also both each other some any all only very between after before during about against among
however therefore thus whether""".split())

# Word pairs whose swap reverses a claim. Each maps both ways; case is kept at the call site.
OPPOSITES = dict(p for a, b in [
    ("increase", "decrease"), ("increases", "decreases"), ("increased", "decreased"), ("increasing", "decreasing"),
    ("raise", "lower"), ("raises", "lowers"), ("raised", "lowered"), ("higher", "lower"),
    ("enhances", "reduces"), ("enhanced", "reduced"), ("improves", "worsens"), ("improved", "worsened"),
    ("promotes", "inhibits"), ("promote", "inhibit"), ("promoted", "inhibited"),
    ("activates", "suppresses"), ("activated", "suppressed"), ("upregulates", "downregulates"),
    ("upregulated", "downregulated"), ("upregulation", "downregulation"), ("allows", "prohibits"),
    ("allow", "prohibit"), ("allowed", "prohibited"), ("greater", "smaller"), ("more", "less"),
    ("beneficial", "harmful"), ("benefits", "harms"),
    ("better", "worse"), ("faster", "slower"), ("longer", "shorter"), ("larger", "smaller"),
    ("positive", "negative"), ("positively", "negatively"), ("gain", "loss"),
] for p in ((a, b), (b, a)))
OPPOSITE = re.compile(r"\b(" + "|".join(sorted(OPPOSITES, key=len, reverse=True)) + r")\b", re.IGNORECASE)
NEGATED = re.compile(r"\b(is|are|was|were|does|do|did|can|could|will|may|has|have)\s+not\b", re.IGNORECASE)
BOILERPLATE = re.compile(r"copyright|©|all rights reserved|published by|wiley|elsevier", re.IGNORECASE)
AFFIRMED = re.compile(r"\b(is|are|was|were|can|could|will|may)\b(?!\s+not\b)", re.IGNORECASE)


@dataclass(frozen=True)
class PseudoQuery:
    kind: str
    query: str
    doc_id: str
    positive: str  # the source passage as the reranker reads it for this query
    strip_titles: bool  # title queries: every passage of the example is read without its title


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def document_frequencies(passages: Sequence[Passage]) -> tuple[Counter, int]:
    """How many passages contain each word: the idf that tells a salient term from a common one."""
    return Counter(w for p in passages for w in set(words(p.content))), len(passages)


def idf(df: Counter, n: int, word: str) -> float:
    return math.log((n + 1) / (df.get(word, 0) + 0.5))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def title_query(p: Passage, *_) -> PseudoQuery | None:
    """The title, when it is a real phrase (4+ words) and the body has something to say (30+ words)."""
    if len(p.title.split()) < 4 or len(p.text.split()) < 30:
        return None
    return PseudoQuery("title", p.title.strip(), p.doc_id, p.text, True)


def cloze_query(p: Passage, df: Counter, n: int) -> PseudoQuery | None:
    """The sentence (6-40 words) whose content words are rarest in the corpus yet recur in the rest of the
    passage: specific enough to find its source, connected enough to be answerable by it."""
    parts = sentences(p.text)
    if len(parts) < 3:
        return None
    best, best_score = -1, 0.0
    for i, s in enumerate(parts):
        terms = [w for w in words(s) if w not in STOPWORDS]
        if not 6 <= len(s.split()) <= 40 or not terms or not s[0].isupper() or BOILERPLATE.search(s):
            continue
        rest = set(words(p.title + " " + " ".join(parts[:i] + parts[i + 1:])))
        score = sum(idf(df, n, w) for w in terms if w in rest) / len(terms)
        if score > best_score:
            best, best_score = i, score
    if best < 0:
        return None
    rest = " ".join(parts[:best] + parts[best + 1:])
    content = f"{p.title} {rest}".strip() if p.title else rest
    return PseudoQuery("cloze", parts[best], p.doc_id, content, False)


def keyword_query(p: Passage, df: Counter, n: int, k: int = 4) -> PseudoQuery | None:
    """The passage's `k` highest tf-idf words, in the order they first appear."""
    terms = [w for w in words(p.content) if w not in STOPWORDS and len(w) > 2]
    if len(set(terms)) < 2 * k:
        return None
    tf = Counter(terms)
    top = set(sorted(tf, key=lambda w: (-tf[w] * idf(df, n, w), w))[:k])
    return PseudoQuery("keywords", " ".join(dict.fromkeys(w for w in terms if w in top)), p.doc_id, p.content,
                       False)


def llm_query(p: Passage, ask: Ask, max_words: int = 200) -> PseudoQuery | None:
    """The LLM's question for the passage: its first line, 3-40 words; None when the endpoint fails or
    answers with something that is not a short question."""
    lines = (ask(ASK.format(passage=" ".join(p.content.split()[:max_words]))) or "").strip().splitlines()
    question = lines[0].strip().strip('"').strip() if lines else ""
    if not 3 <= len(question.split()) <= 40:
        return None
    return PseudoQuery("llm", question, p.doc_id, p.content, False)


MAKERS: dict[str, Callable[..., PseudoQuery | None]] = {"title": title_query, "cloze": cloze_query,
                                                        "keywords": keyword_query}


def pseudo_queries(passages: Sequence[Passage], count: int, kinds: Sequence[str] = KINDS,
                   seed: int = 13, ask: Ask | None = None) -> list[PseudoQuery]:
    """Up to `count` pseudo-queries, the kinds in turn, from distinct documents drawn in a seeded order
    (deterministic: the same corpus, count and seed give the same queries, and the same LLM answers)."""
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        raise CascadeError(f"unknown pseudo-query kind(s) {unknown or '(none)'}; choose from {', '.join(ALL_KINDS)}")
    if "llm" in kinds and ask is None:
        raise CascadeError("the llm pseudo-query kind needs an LLM endpoint: give --llm-url and --llm-model")
    makers = {**MAKERS, "llm": lambda p, df, n: llm_query(p, ask)}
    df, n = document_frequencies(passages)
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    out, used, turn = [], set(), 0
    for i in order:
        p = passages[i]
        if len(out) >= count:
            break
        if p.doc_id in used:
            continue
        for attempt in range(len(kinds)):  # this kind, or the next one this passage can make
            made = makers[kinds[(turn + attempt) % len(kinds)]](p, df, n)
            if made is not None:
                out.append(made)
                used.add(p.doc_id)
                turn += 1
                break
    return out


def _match_case(word: str, like: str) -> str:
    return word.upper() if like.isupper() and len(like) > 1 else word.capitalize() if like[0].isupper() else word


def swap_opposites(text: str, only: set[str] | None = None) -> str:
    """Each direction word (or each in `only`) replaced by its opposite, keeping its case."""
    def swap(m: re.Match) -> str:
        word = m.group(0)
        return _match_case(OPPOSITES[word.lower()], word) if only is None or word.lower() in only else word

    return OPPOSITE.sub(swap, text)


def remove_negations(text: str) -> str:
    return NEGATED.sub(lambda m: m.group(1), text)


def flip_claim(text: str) -> str | None:
    """`text` with its claim reversed once: its negations removed, or else its opposites swapped
    (increases -> decreases), or else one negation inserted ("is" -> "is not"); never two of these, which
    would cancel. None when nothing in it can flip."""
    for flip in (remove_negations, swap_opposites,
                 lambda t: AFFIRMED.sub(lambda m: m.group(0) + " not", t, count=1)):
        flipped = flip(text)
        if flipped != text:
            return flipped
    return None


def direction_words(text: str) -> set[str]:
    return {w.lower() for w in OPPOSITE.findall(text)}


def contrast_negative(pq: PseudoQuery) -> str | None:
    """The source passage saying the opposite of what the query states: the direction words the two share
    swapped, or else the negation both make removed. None when the query states no direction."""
    shared = direction_words(pq.query) & direction_words(pq.positive)
    if shared:
        return swap_opposites(pq.positive, shared)
    if NEGATED.search(pq.query) and NEGATED.search(pq.positive):
        return remove_negations(pq.positive)
    return None


def consistent(pool: Sequence[int], passages: Sequence[Passage], doc_id: str, keep_top: int) -> bool:
    """Whether the first stage ranks any passage of `doc_id` in its top `keep_top`."""
    return any(passages[i].doc_id == doc_id for i in pool[:keep_top])


def hard_negatives(pool: Sequence[int], passages: Sequence[Passage], doc_id: str, skip_top: int,
                   strip_titles: bool) -> list[str]:
    """First-stage candidates from other documents, below the top `skip_top` (which may answer it too)."""
    return [passages[i].text if strip_titles else passages[i].content
            for i in pool[skip_top:] if passages[i].doc_id != doc_id]


def filtered(made: Sequence[PseudoQuery], passages: Sequence[Passage], first_stage: Callable[[str], list[int]],
             keep_top: int = 20, skip_top: int = 3, progress: bool = True) -> list[tuple[PseudoQuery, list[str]]]:
    """The consistent pseudo-queries, each with its negatives (a contrast negative first, where one exists)."""
    kept = []
    for pq in tqdm(made, desc="filtering pseudo-queries", unit="q", disable=not progress):
        pool = first_stage(pq.query)
        if not consistent(pool, passages, pq.doc_id, keep_top):
            continue
        negatives = hard_negatives(pool, passages, pq.doc_id, skip_top, pq.strip_titles)
        contrast = contrast_negative(pq)
        if negatives:
            kept.append((pq, ([contrast] if contrast else []) + negatives))
    return kept
