"""The query cache in Redis, so several endpoint replicas behind a load balancer share it (``cache.backend: redis``).

Plain redis-py, not RedisVL: RedisVL's SemanticCache needs the RediSearch module (``FT.CREATE``), which Debian's
``redis-server`` 7 does not ship; the semantic lookup is done client-side with numpy instead, which at the
cache's size (about a thousand entries per index version) costs well under a millisecond.

Layout (``{v}`` index version, ``{f}`` :func:`toolkit.serving.cache.filter_key`, ``{h}`` sha256 of the
normalised query), every value JSON, every key with a TTL:

- exact entry ``toolkit:{v}:{f}:{h}`` = ``{embedding, hits, top_k}`` (``SET ... PX ttl``); the sorted set
  ``toolkit:{v}:#exact`` orders a version's entries by write time and bounds them to ``cache_size`` (a Lua
  script writes, indexes and evicts in one round trip). Eviction is least recently *written*, not used.
- semantic entry ``toolkit:{v}:{f}:{h}:sem`` = ``{query, hits, top_k}``, its answers in the hash
  ``...:{h}:ans``; the list ``toolkit:{v}:{f}:#sem`` holds (float32 unit embedding bytes + ``{h}``), newest
  first, capped at ``semantic_cache.size``, with a write counter ``#semseq``. Each replica mirrors the list
  and, per lookup, fetches only the items pushed since its last look (one round trip when nothing changed),
  then compares cosines locally.

Failure: short connect/read timeouts (``socket_timeout_ms``, default 50). Any Redis error is a cache miss,
counted in ``toolkit_cache_errors_total`` and logged once per outage; for ``RETRY_AFTER_S`` after an error
the cache is not asked (a dead Redis costs nothing per request), then the next request reconnects.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from toolkit.retrieval.chunking import Chunk
from toolkit.retrieval.index import Hit
from toolkit.serving.cache import CacheEntry, normalise
from toolkit.serving.semantic_cache import SemanticEntry, SemanticMatch, _unit, identifiers

log = logging.getLogger(__name__)
T = TypeVar("T")
PREFIX = "toolkit"
MIRRORED_PARTITIONS = 64  # (version, filter) lists a replica keeps mirrored; older ones are fetched again

# KEYS: entry, version index. ARGV: value, ttl ms (0: none), size, top_k, score. Keeps a deeper entry (the
# race of QueryCache.put: a k=3 miss finishing last must not replace a k=10 one), then evicts the oldest.
_PUT_EXACT = """
local old = redis.call('GET', KEYS[1])
if not (old and tonumber(cjson.decode(old)['top_k']) > tonumber(ARGV[4])) then
  if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1])
  else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
end
redis.call('ZADD', KEYS[2], ARGV[5], KEYS[1])
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
local n = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if n > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], n)
  for i = 1, #gone, 2 do redis.call('DEL', gone[i]) end
end
return 1
"""

# KEYS: entry, list, seq. ARGV: value, ttl ms (0: none), size, top_k, list item. Returns the stored value
# (the older one when it searched deeper).
_PUT_SEMANTIC = """
local old = redis.call('GET', KEYS[1])
if old and tonumber(cjson.decode(old)['top_k']) > tonumber(ARGV[4]) then return old end
if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('LPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('INCR', KEYS[3])
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[2]); redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return ARGV[1]
"""

# KEYS: list, seq. ARGV: the seq the caller mirrors. Returns {seq, full (0/1), items}: only the items pushed
# since then when the mirror can be extended, else the whole list. Atomic, so items and seq agree.
_SYNC = """
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local known = tonumber(ARGV[1])
local size = redis.call('LLEN', KEYS[1])
if seq == known then return {seq, 0, {}} end
if seq > known and known >= 0 and seq - known <= size then
  return {seq, 0, redis.call('LRANGE', KEYS[1], 0, seq - known - 1)}
end
return {seq, 1, redis.call('LRANGE', KEYS[1], 0, -1)}
"""


class RedisLink:
    """One redis-py client with short timeouts, through which every cache call goes: an error becomes the
    caller's default, one counted error, and one log line per outage (not per request)."""

    RETRY_AFTER_S = 1.0

    def __init__(self, url: str, socket_timeout_ms: float, errors: Any) -> None:
        timeout = socket_timeout_ms / 1000
        # one immediate retry on a connection error only: a pooled connection broken by a Redis restart is
        # replaced within the same call; a timeout is not retried (it would double the worst case)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           retry=Retry(NoBackoff(), 1, (redis.ConnectionError,)))
        self.url, self.errors = url, errors
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()
        self.put_exact = self.client.register_script(_PUT_EXACT)
        self.put_semantic = self.client.register_script(_PUT_SEMANTIC)
        self.sync = self.client.register_script(_SYNC)

    def call(self, fn: Callable[[redis.Redis], T], default: T) -> T:
        if time.monotonic() < self._down_until:
            return default  # known down: a miss at once, not another timeout
        try:
            result = fn(self.client)
        except (redis.RedisError, OSError) as exc:
            self.errors.inc()
            with self._lock:
                self._down_until = time.monotonic() + self.RETRY_AFTER_S
                first, self._down = not self._down, True
            if first:
                log.warning("query cache: Redis at %s failed (%s: %s); serving without the cache until it is back",
                            self.url, type(exc).__name__, exc)
            return default
        if self._down:
            with self._lock:
                first, self._down = self._down, False
            if first:
                log.warning("query cache: Redis at %s is back", self.url)
        return result


def _digest(query: str) -> str:
    return hashlib.sha256(normalise(query).encode()).hexdigest()


def _ttl_ms(ttl_s: float | None) -> int:
    return 0 if ttl_s is None else max(1, round(ttl_s * 1000))


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {"score": hit.score, "row": hit.row, "chunk": asdict(hit.chunk)}


def _hit(d: dict[str, Any]) -> Hit:
    return Hit(float(d["score"]), Chunk(**d["chunk"]), int(d["row"]))


def _vec_json(vec: np.ndarray) -> dict[str, Any]:
    v = np.ascontiguousarray(vec, dtype=np.float32)
    return {"shape": list(v.shape), "b64": base64.b64encode(v.tobytes()).decode()}


def _vec(d: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.float32).reshape(d["shape"]).copy()


class RedisQueryCache:
    """:class:`toolkit.serving.cache.ExactCache` in Redis; hits are :class:`Hit` objects (JSON in Redis)."""

    def __init__(self, link: RedisLink, size: int, ttl_s: float | None) -> None:
        self.link, self.size, self.ttl_ms = link, size, _ttl_ms(ttl_s)
        self._version = ""  # the last version asked about, for __len__ (/healthz)

    @staticmethod
    def key(version: str, query: str, filter_key: str = "") -> str:
        return f"{PREFIX}:{version}:{filter_key}:{_digest(query)}"

    def get(self, version: str, query: str, filter_key: str = "") -> CacheEntry | None:
        if self.size <= 0:
            return None
        self._version = version
        raw = self.link.call(lambda r: r.get(self.key(version, query, filter_key)), None)
        if raw is None:
            return None
        d = json.loads(raw)
        return CacheEntry(_vec(d["embedding"]), [_hit(h) for h in d["hits"]], int(d["top_k"]))

    def put(self, version: str, query: str, entry: CacheEntry, filter_key: str = "") -> None:
        if self.size <= 0:
            return
        self._version = version
        value = json.dumps({"embedding": _vec_json(entry.embedding), "hits": [_hit_json(h) for h in entry.hits],
                            "top_k": entry.top_k})
        keys = [self.key(version, query, filter_key), f"{PREFIX}:{version}:#exact"]
        self.link.call(lambda r: self.link.put_exact(keys, [value, self.ttl_ms, self.size, entry.top_k,
                                                            time.time()], client=r), None)

    def __len__(self) -> int:
        """Entries of the last index version used (0 when Redis does not answer)."""
        return int(self.link.call(lambda r: r.zcard(f"{PREFIX}:{self._version}:#exact"), 0))


@dataclass
class RedisSemanticEntry(SemanticEntry):
    key: str = ""  # its Redis key, to which put_answer adds


@dataclass
class _Mirror:
    seq: int
    matrix: np.ndarray  # (n, d) unit vectors, newest first
    digests: list[str]


class RedisSemanticCache:
    """:class:`toolkit.serving.cache.SemanticStore` in Redis, same semantics as
    :class:`toolkit.serving.semantic_cache.SemanticCache` except that the size bound evicts the oldest write."""

    CANDIDATES = 4  # entries fetched per lookup, most similar first (expired ones are passed over)

    def __init__(self, link: RedisLink, size: int, threshold: float, ttl_s: float | None = None,
                 match_identifiers: bool = False) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.link, self.size, self.threshold, self.ttl_ms = link, size, threshold, _ttl_ms(ttl_s)
        self.match_identifiers = match_identifiers
        self._mirrors: OrderedDict[tuple[str, str], _Mirror] = OrderedDict()
        self._lock = threading.Lock()
        self._version = ""
        self.hits = self.misses = 0

    @staticmethod
    def _base(version: str, filter_key: str) -> str:
        return f"{PREFIX}:{version}:{filter_key}"

    def _sync(self, version: str, filter_key: str) -> _Mirror | None:
        """The partition's list, brought up to date with one round trip; None if Redis did not answer."""
        part, base = (version, filter_key), self._base(version, filter_key)
        with self._lock:
            known = self._mirrors.get(part)
        reply = self.link.call(lambda r: self.link.sync([f"{base}:#sem", f"{base}:#semseq"],
                                                        [known.seq if known else -1], client=r), None)
        if reply is None:
            return None
        seq, full, items = int(reply[0]), int(reply[1]), reply[2]
        if known is not None and not full and not items:
            return known
        vecs = [np.frombuffer(it[:-64], dtype=np.float32) for it in items]
        digests = [it[-64:].decode() for it in items]
        if not full and known is not None and known.digests:
            vecs += list(known.matrix)
            digests += known.digests
        vecs, digests = vecs[:self.size], digests[:self.size]  # the LTRIM the server did
        mirror = _Mirror(seq, np.stack(vecs) if vecs else np.zeros((0, 1), np.float32), digests)
        with self._lock:
            self._mirrors[part] = mirror
            self._mirrors.move_to_end(part)
            while len(self._mirrors) > MIRRORED_PARTITIONS:
                self._mirrors.popitem(last=False)
        return mirror

    def lookup(self, version: str, embedding: np.ndarray, top_k: int = 1, filter_key: str = "",
               query: str | None = None) -> SemanticMatch | None:
        if self.size <= 0:
            return None
        if self.match_identifiers and query is None:
            raise ValueError("the identifier guard needs the query text")
        self._version = version
        match = self._lookup(version, _unit(embedding), top_k, filter_key, query)
        with self._lock:
            if match is None:
                self.misses += 1
            else:
                self.hits += 1
        return match

    def _lookup(self, version: str, v: np.ndarray, top_k: int, filter_key: str,
                query: str | None) -> SemanticMatch | None:
        mirror = self._sync(version, filter_key)
        if mirror is None or not mirror.digests or mirror.matrix.shape[1] != v.shape[0]:
            return None
        sims = mirror.matrix @ v
        order, seen = [], set()
        for i in np.argsort(-sims):  # distinct entries above the threshold, most similar first
            if sims[i] < self.threshold or len(order) == self.CANDIDATES:
                break
            if mirror.digests[i] not in seen:
                seen.add(mirror.digests[i])
                order.append(int(i))
        if not order:
            return None
        base = self._base(version, filter_key)

        def fetch(r: redis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for i in order:
                pipe.get(f"{base}:{mirror.digests[i]}:sem")
                pipe.hgetall(f"{base}:{mirror.digests[i]}:ans")
            return pipe.execute()

        replies = self.link.call(fetch, None)
        if replies is None:
            return None
        idents = identifiers(query) if self.match_identifiers and query is not None else frozenset()
        for n, i in enumerate(order):
            raw, answers = replies[2 * n], replies[2 * n + 1]
            if raw is None:
                continue  # expired; its list item goes with the cap
            entry = self._entry(json.loads(raw), mirror.matrix[i], f"{base}:{mirror.digests[i]}", answers)
            if self.match_identifiers and entry.idents != idents:
                continue  # about another API: the next most similar entry may be about this one
            # the most similar live entry decides (as in SemanticCache): a shallower one is a miss
            return SemanticMatch(entry, float(sims[i])) if entry.top_k >= top_k else None
        return None

    @staticmethod
    def _entry(d: dict[str, Any], vec: np.ndarray, key: str, answers: dict[bytes, bytes] | None = None
               ) -> RedisSemanticEntry:
        return RedisSemanticEntry(d["query"], np.array(vec, dtype=np.float32), [_hit(h) for h in d["hits"]],
                                  int(d["top_k"]), float(d["created"]),
                                  {k.decode(): json.loads(a) for k, a in (answers or {}).items()},
                                  identifiers(d["query"]), key=key)

    def put(self, version: str, query: str, embedding: np.ndarray, hits: list[Any], top_k: int,
            filter_key: str = "") -> SemanticEntry:
        """Store the entry of ``query`` (or keep a deeper one already there); returns the stored entry."""
        v, digest = _unit(embedding), _digest(query)
        key = f"{self._base(version, filter_key)}:{digest}"
        d = {"query": query, "hits": [_hit_json(h) for h in hits], "top_k": top_k, "created": time.time()}
        entry = self._entry(d, v, key)
        if self.size <= 0:
            return entry
        self._version = version
        base = self._base(version, filter_key)
        value = json.dumps(d)
        stored = self.link.call(lambda r: self.link.put_semantic(
            [f"{key}:sem", f"{base}:#sem", f"{base}:#semseq"],
            [value, self.ttl_ms, self.size, top_k, v.astype(np.float32).tobytes() + digest.encode()], client=r), None)
        if stored is not None and stored != value.encode():
            entry = self._entry(json.loads(stored), v, key)  # the deeper entry another request stored
        return entry

    def put_answer(self, entry: SemanticEntry, answer_key: str, answer: dict[str, Any]) -> None:
        """Attach a finished answer to ``entry`` (in Redis, so every replica may replay it)."""
        entry.answers[answer_key] = answer
        key = getattr(entry, "key", "")
        if not key:
            return

        def write(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.hset(f"{key}:ans", answer_key, json.dumps(answer))
            if self.ttl_ms:
                pipe.pexpire(f"{key}:ans", self.ttl_ms)
            pipe.execute()

        self.link.call(write, None)

    def __len__(self) -> int:
        """List items of the last index version's unfiltered partition (0 when Redis does not answer)."""
        return int(self.link.call(lambda r: r.llen(f"{self._base(self._version, '')}:#sem"), 0))
