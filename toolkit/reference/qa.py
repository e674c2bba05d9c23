"""QA pairs about API objects (the chat prompt they are asked with is :mod:`toolkit.prompt`).

A pair asks about one object (``What does the function json.dumps do?``); the answer is the summary
sentence of that object's docstring, quoted verbatim from its document (``doc_id``). Only documents whose
answer is unambiguous qualify: the summary sentence must be unique across the whole corpus (this removes
boilerplate such as ``Return self==value.``), of reasonable length, prose rather than a signature, and not
an introduction to a list or an example. Each pair carries the split of its document, so training uses
train-split pairs only and evaluation uses test-split pairs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from toolkit.reference.corpus import Doc

QUESTION_TEMPLATES = {
    "module": "What is the {title} module for?",
    "class": "What is the class {title}?",
    "function": "What does the function {title} do?",
    "method": "What does the method {title} do?",
    "attribute": "What is the attribute {title}?",
}
_CALL_LIKE = re.compile(r"^[\w.]+\(")


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def answerable(doc: Doc, summary_counts: Counter, min_chars: int, max_chars: int) -> bool:
    """Whether ``doc``'s summary sentence is a clear, unique answer."""
    s = doc.summary
    return bool(
        s
        and min_chars <= len(s) <= max_chars
        and len(s.split()) >= 4
        and summary_counts[_norm(s)] == 1
        and not s.endswith((":", ","))
        and ">>>" not in s
        and not _CALL_LIKE.match(s)
        and s in doc.text
    )


def build_qa(docs: Sequence[Doc], assignment: dict[str, str], min_chars: int, max_chars: int) -> list[dict]:
    """One QA pair per answerable document, in corpus order: ``{"id", "question", "answer", "doc_id", "split"}``."""
    counts = Counter(_norm(d.summary) for d in docs if d.summary)
    pairs = []
    for d in docs:
        if not answerable(d, counts, min_chars, max_chars):
            continue
        pairs.append({
            "id": f"qa-{len(pairs):05d}",
            "question": QUESTION_TEMPLATES[d.kind].format(title=d.title),
            "answer": d.summary,
            "doc_id": d.id,
            "split": assignment[d.package],
        })
    return pairs
