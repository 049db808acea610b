"""The ``JwtVerifier``'s cache of verified tokens: bounded, short-lived, keyed to the keys.

A bounded LRU keyed by the exact token bytes, as Envoy ``jwt_authn``'s
``jwt_cache_config`` does, and in front of it the same entries under the
credential as it came in (the raw ``Authorization`` value): a client sending the
same header again is answered without cutting the token out of it. Pure: time
is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from qanat.security.identity import Identity
from qanat.security.keys import KeySet

Entry = tuple[Identity, float, float]  # (identity, verified_at, until)


@dataclass(frozen=True, slots=True)
class TokenCacheStats:
    """What the cache holds and how its lookups went, for metrics and the dashboard.

    Every lookup by token is a hit or a miss; after a miss the verifier checks
    the token in full (base64, JSON, signature), so ``misses`` counts those
    verifications and ``hits + alias_hits`` the answers that skipped them.
    """

    entries: int  # verified tokens held
    aliases: int  # credentials (raw ``Authorization`` values) filed under a token's entry
    hits: int  # lookups by token answered from the cache
    alias_hits: int  # lookups by credential answered: no token extracted, no lookup by token
    misses: int  # lookups by token with no valid entry: the token was then verified in full


class TokenCache:
    """Remembers verified tokens for at most ``ttl`` seconds (0 turns it off), ``size`` at most.

    An entry holds ``(identity, verified_at, until)`` with ``until =
    min(exp + leeway, verified_at + ttl)``: a hit needs ``verified_at <= now
    < until``, which re-checks ``exp`` against ``now`` and, because ``nbf``
    held at ``verified_at``, ``nbf`` too (a clock that went back verifies
    afresh). New ``keys`` (a JWKS refresh or rotation hands over a new
    ``KeySet``) empty the cache; failures are never stored.

    ``alias(value, raw)`` lets ``get_alias(value, ...)`` answer with ``raw``'s
    entry: the very entry (same ``verified_at`` and ``until``), so an alias holds
    no longer than the token's own entry would, and new ``keys`` drop it too. At
    most ``size`` aliases are kept (the oldest goes first).

    ``stats()`` counts the lookups (see ``TokenCacheStats``).
    """

    __slots__ = ("_alias_hits", "_aliases", "_entries", "_hits", "_keys", "_misses", "_size",
                 "_ttl")

    def __init__(self, size: int, ttl: float) -> None:
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._keys: KeySet | None = None  # the ``keys`` the cached entries were checked with
        self._aliases: dict[bytes, Entry] = {}  # alias -> its token's entry
        self._size = size if ttl > 0 else 0
        self._ttl = ttl
        self._hits = 0
        self._alias_hits = 0
        self._misses = 0

    def get_alias(self, value: bytes, now: float, keys: KeySet | None) -> Identity | None:
        """``get`` for the token aliased as ``value``: its identity when still valid at
        ``now`` under ``keys``, or None (then find the token and ``get`` it)."""
        entry = self._aliases.get(value)
        if entry is not None and entry[1] <= now < entry[2] and keys is self._keys:
            self._alias_hits += 1
            return entry[0]
        return None

    def alias(self, value: bytes, raw: bytes) -> None:
        """Let ``get_alias(value, ...)`` answer with the entry cached for token ``raw``."""
        entry = self._entries.get(raw)
        if entry is None:
            return
        aliases = self._aliases
        aliases[value] = entry
        if len(aliases) > self._size:
            del aliases[next(iter(aliases))]

    def get(self, raw: bytes, now: float, keys: KeySet | None) -> Identity | None:
        """The identity cached for ``raw`` and still valid at ``now`` under ``keys``, or None."""
        entries = self._entries
        if keys is not self._keys:
            entries.clear()  # other keys may not verify what the old ones did
            self._aliases.clear()
            self._keys = keys
        hit = entries.get(raw)
        if hit is not None:
            if hit[1] <= now < hit[2]:
                entries.move_to_end(raw)
                self._hits += 1
                return hit[0]
            del entries[raw]
        self._misses += 1
        return None

    def put(self, raw: bytes, identity: Identity, now: float, leeway: float) -> None:
        """Remember ``identity``, verified from ``raw`` at ``now``; evict the least recent."""
        if not self._size:
            return
        exp = identity.expires_at
        until = now + self._ttl
        if exp is not None:
            until = min(until, exp + leeway)
        entries = self._entries
        entries[raw] = (identity, now, until)
        if len(entries) > self._size:
            entries.popitem(last=False)

    def stats(self) -> TokenCacheStats:
        """A snapshot: what the cache holds now and its lookups since it was made."""
        return TokenCacheStats(len(self._entries), len(self._aliases), self._hits,
                               self._alias_hits, self._misses)


__all__ = ["TokenCache", "TokenCacheStats"]
