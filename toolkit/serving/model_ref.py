"""Which model the engine serves, under which name: one answer for ``serve``, the stack, the endpoint and eval.

:func:`served_model` turns ``--model`` (a local checkpoint directory or a hub id, checked by
:func:`toolkit.modeling.resolve_model`, the toolkit's only such check) into what vLLM loads and the name it
serves it under: the directory's name, or the hub id itself (vLLM's own default). :func:`engine_model_id` asks a
running OpenAI-compatible engine which name it serves, for an engine the toolkit did not start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from toolkit.errors import ToolkitError
from toolkit.modeling import resolve_model


@dataclass(frozen=True)
class ServedModel:
    source: str  # vLLM's --model: the checkpoint directory or the hub id
    name: str  # vLLM's --served-model-name, and the `model` of every request the endpoint sends
    local_dir: Path | None  # the checkpoint on disk (its tokenizer budgets prompts); None for a hub id


def served_model(path_or_id: str | Path) -> ServedModel:
    """Resolve a directory or hub id (``gpt2``, ``org/name``); a path that does not exist is a one-line error."""
    source = resolve_model(path_or_id)
    p = Path(source)
    if p.is_dir():
        return ServedModel(source, p.name, p)
    return ServedModel(source, source, None)


def engine_model_id(engine_url: str, timeout_s: float = 10.0) -> str:
    """The first model id the engine at ``engine_url`` lists; a :class:`ToolkitError` saying why if it cannot."""
    url = f"{engine_url.rstrip('/')}/v1/models"
    try:
        resp = httpx.get(url, timeout=timeout_s)
        resp.raise_for_status()
        return str(resp.json()["data"][0]["id"])
    except httpx.HTTPStatusError as exc:
        raise ToolkitError(f"engine {engine_url}: {url} answered {exc.response.status_code}") from None
    except httpx.HTTPError as exc:  # refused, reset, timed out
        detail = (str(exc).splitlines() or [""])[0]
        raise ToolkitError(f"engine {engine_url}: unreachable ({type(exc).__name__}{': ' + detail if detail else ''})") \
            from None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ToolkitError(f"engine {engine_url}: {url} is not an OpenAI model list ({type(exc).__name__})") \
            from None
