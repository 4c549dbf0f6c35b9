"""What the policy and revocation stores share in Redis: a hash of records, a revision
counter with its epoch, and the events channel that tells every worker about a change.

Keys, per hash (``<prefix>policies``, ``<prefix>revocations``): the hash itself,
``<hash>:revision`` (a counter), ``<hash>:revision:epoch`` (set when the counter starts: a
store time, or ``reseed-<time>`` when an operator restored it), ``<hash>:revision:count``
(how many records the last write left), ``<hash>:revision:lost`` (set by a worker that saw
the store lose data; ordinary writes are refused while it is there) and
``<hash>:revision:log`` (the write history: ``"<counter>:<id>"`` per write, newest first, the
last ``HISTORY`` of them). A write's id is a digest of the write before it, the store's time
and the write itself, so two histories that part (a failover to a replica that missed a
write, then a new write) never share an id again, even where their counters match.

A store loses data to a ``FLUSHALL``, a restart without persistence, eviction or a failover
to a lagging replica. What that looks like from here (``judge``): the epoch is gone, the
counter went backwards, fewer records than the last write left, a history that no longer
holds the last write the worker installed, or a new epoch that no operator made. A worker
holding a snapshot refuses such a store and keeps what it has; only ``extauthz store
reseed`` (a new ``reseed-`` epoch) moves it on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError

from extauthz.errors import StoreUnavailable
from extauthz.store.redis_client import redacted_url as redacted_url
from extauthz.store.redis_client import redis_client

RESEED_PREFIX = "reseed-"
HISTORY = 10_000  # writes each hash keeps the ids of: how far behind a worker can verify
LOST_REPLY = "EXTAUTHZ_STORE_LOST"
RESTORE_HINT = ("restore it with `extauthz store reseed --from-snapshot FILE` (a worker's "
                "store.snapshot_file) or `extauthz store reseed --policies-from DIR` (from git); "
                "`extauthz store status` shows what happened")

# The conditions a worker refuses a store for; the codes are metric labels and readiness text.
EPOCH_LOST = "epoch_lost"
REVISION_BACKWARDS = "revision_backwards"
RECORDS_LOST = "records_lost"
EPOCH_REPLACED = "epoch_replaced"
RESTORE_PENDING = "restore_pending"
HISTORY_DIVERGED = "history_diverged"
HISTORY_UNVERIFIABLE = "history_unverifiable"
CONDITIONS = {
    EPOCH_LOST: "the store lost its epoch (flushed, restarted without persistence, or evicted)",
    REVISION_BACKWARDS: "the store's revision went backwards (a failover to a lagging replica, "
                        "or a restore from an older backup)",
    RECORDS_LOST: "the store holds fewer records than its last write left (evicted)",
    EPOCH_REPLACED: "the store was re-created by an ordinary write after losing its data, "
                    "not restored",
    RESTORE_PENDING: "a worker saw the store lose data and it has not been restored yet",
    HISTORY_DIVERGED: "the store's write history does not hold the last write this worker "
                      "installed (a failover to a lagging replica followed by new writes, or "
                      "its history was evicted)",
    HISTORY_UNVERIFIABLE: f"this worker is further behind than the store's write history "
                          f"reaches (the last {HISTORY:,} writes), so it cannot tell whether "
                          "the store lost a write; the store is not marked. Restarting the "
                          "worker without its local snapshot (store.snapshot_file), or a "
                          "reseed, moves it on",
}
# What a worker does not mark the store lost for: a loss someone else already marked, and
# its own inability to check (the store itself may be whole).
NOT_MARKED = frozenset({RESTORE_PENDING, HISTORY_UNVERIFIABLE})


class StoreLost(StoreUnavailable):
    """The store lost data; ordinary writes are refused until an operator restores it."""

    code = "store_lost"


@dataclass(frozen=True)
class StoreState:
    """What a hash's metadata says, read in one step: cheap (no records are read)."""

    epoch: str | None
    counter: int
    count: int | None  # records the last write left; None: not recorded (an older release)
    records: int  # records there now
    lost: str | None = None  # the marker a worker left (JSON), if any
    # Recorded writes ("<counter>:<id>"), newest first: the store's last one, back to the
    # one a worker asked about (``state(since)``) as far as the store keeps them. A held
    # state keeps the first only. Empty: nothing recorded (an older writer, or lost).
    history: tuple[str, ...] = ()

    @property
    def revision(self) -> str:
        return f"{self.epoch or '-'}:{self.counter}"

    @property
    def write(self) -> str | None:
        """The last recorded write: what a worker compares, as well as the revision."""
        return self.history[0] if self.history else None

    @property
    def written(self) -> int | None:
        """The counter of the last recorded write (what ``state(since)`` asks about)."""
        return None if self.write is None else write_counter(self.write)

    @property
    def empty(self) -> bool:
        """Nothing was ever written (or everything, marker included, is gone)."""
        return (self.epoch is None and self.counter == 0 and not self.records and not self.count
                and not self.history)


def write_counter(entry: str) -> int:
    """The counter of a recorded write; -1 for anything malformed (never a match)."""
    counter = entry.partition(":")[0]
    return int(counter) if counter.isdigit() else -1


def _reseed_time(epoch: str) -> tuple[int, int] | None:
    if not epoch.startswith(RESEED_PREFIX):
        return None
    sec, _, usec = epoch[len(RESEED_PREFIX):].partition(".")
    return (int(sec), int(usec)) if sec.isdigit() and usec.isdigit() else None


def descends(held: str, history: Sequence[str]) -> bool | None:
    """Whether a store whose recorded writes (newest first) are ``history`` holds the write
    ``held``: True, False (it holds another write at that counter, or skips it), or None
    (its history does not reach back that far)."""
    mine = write_counter(held)
    for entry in history:
        counter = write_counter(entry)
        if counter == mine:
            return entry == held
        if counter < mine:
            return False
    return None if history else False


def _history(held: StoreState, remote: StoreState) -> str | None:
    """Within one epoch: does the store's history hold the last write the worker installed?
    Writes the worker missed are fine (it reads the whole set again); a write it installed
    that the store no longer has is a loss, whatever the counter says."""
    if held.write is None:
        return None  # held before writes were recorded: the counter is all there is
    if remote.write is None:
        return HISTORY_DIVERGED  # the history went, the epoch stayed
    found = descends(held.write, remote.history)
    if found is None:
        return HISTORY_UNVERIFIABLE
    return None if found else HISTORY_DIVERGED


def judge(held: StoreState | None, remote: StoreState) -> str | None:
    """Why ``remote`` must not replace what a worker holds (a CONDITIONS code), or None.

    ``held`` is the state of the snapshot in memory; None (or an empty store) when the
    worker has nothing worth keeping yet. ``remote`` was read with ``state(held.written)``,
    so its history reaches back to the worker's last write.
    """
    if held is None or held.empty:
        if remote.lost is not None:
            return RESTORE_PENDING
        if remote.epoch is None and not remote.empty:
            return EPOCH_LOST
    elif remote.epoch is None:
        return EPOCH_LOST
    elif remote.epoch == held.epoch:
        if remote.counter < held.counter:
            return REVISION_BACKWARDS
        if held.count is not None and remote.count is None:
            return RECORDS_LOST  # the count went, the epoch stayed: keys were evicted
        if (condition := _history(held, remote)) is not None:
            return condition
    else:
        new, old = _reseed_time(remote.epoch), _reseed_time(held.epoch or "")
        if new is None or (old is not None and new <= old):
            return EPOCH_REPLACED
    if remote.count is not None and remote.records < remote.count:
        return RECORDS_LOST
    if remote.count is not None and remote.write is None:
        return HISTORY_DIVERGED  # written by this release (a count), its history gone
    if remote.lost is not None:
        return RESTORE_PENDING  # another worker saw a loss: nothing is followed until a restore
    return None


def lost_message(description: str, marker: str) -> str:
    try:
        condition = str(json.loads(marker).get("condition", ""))
    except (ValueError, AttributeError):
        condition = ""
    why = CONDITIONS.get(condition, "the store lost data")
    return f"{description}: {why}; nothing was written. Do not re-apply by hand: {RESTORE_HINT}"


# Lua shared by every ordinary write. KEYS: 1 hash, 2 counter, 3 channel, 4 epoch, 5 lost
# marker, 6 count, 7 write history. A store that lost data refuses the write, so the next
# `policy apply` or `revoke` cannot quietly turn a flushed store into the new truth.
GUARD = f"""
local lost = redis.call('GET', KEYS[5])
if lost then return redis.error_reply('{LOST_REPLY} ' .. lost) end
local count = tonumber(redis.call('GET', KEYS[6]) or '-1')
local hlen = redis.call('HLEN', KEYS[1])
if redis.call('EXISTS', KEYS[4]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 or hlen > 0 or count > 0 then
    return redis.error_reply('{LOST_REPLY} {{"condition":"{EPOCH_LOST}"}}')
  end
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('{LOST_REPLY} {{"condition":"{REVISION_BACKWARDS}"}}')
elseif hlen < count then
  return redis.error_reply('{LOST_REPLY} {{"condition":"{RECORDS_LOST}"}}')
elseif count >= 0 and redis.call('EXISTS', KEYS[7]) == 0 then
  return redis.error_reply('{LOST_REPLY} {{"condition":"{HISTORY_DIVERGED}"}}')
end
"""
# Record the write numbered `rev` in the history: its id chains the write before it, the
# store's time and every argument of this one.
RECORD = f"""
local wtime = redis.call('TIME')
local wprev = redis.call('LINDEX', KEYS[7], 0) or ''
local wid = redis.sha1hex(wprev .. '|' .. wtime[1] .. '.' .. wtime[2] .. '|' .. table.concat(ARGV, '|'))
redis.call('LPUSH', KEYS[7], rev .. ':' .. string.sub(wid, 1, 16))
redis.call('LTRIM', KEYS[7], 0, {HISTORY - 1})
"""
# After the write: the epoch of a brand-new store, the count, the revision, its record in
# the history and the event.
BUMP = """
if redis.call('EXISTS', KEYS[4]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[4], t[1] .. '.' .. t[2])
end
redis.call('SET', KEYS[6], redis.call('HLEN', KEYS[1]))
local rev = redis.call('INCR', KEYS[2])
""" + RECORD + """
redis.call('PUBLISH', KEYS[3], cjson.encode({kind = ARGV[1], revision = rev}))
return redis.call('GET', KEYS[4]) .. ':' .. rev
"""
# An operator's restore. ARGV: 1 kind, 2 'replace' (the whole set) | 'add' (keep what is
# there, add what is missing), then field, value pairs. A new reseed- epoch, counter 1.
_RESEED = """
if ARGV[2] == 'replace' then redis.call('DEL', KEYS[1]) end
for i = 3, #ARGV - 1, 2 do
  if ARGV[2] == 'replace' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
local t = redis.call('TIME')
local epoch = string.format('reseed-%d.%06d', tonumber(t[1]), tonumber(t[2]))
redis.call('SET', KEYS[4], epoch)
redis.call('SET', KEYS[2], 1)
redis.call('DEL', KEYS[5], KEYS[7])
redis.call('SET', KEYS[6], redis.call('HLEN', KEYS[1]))
local rev = 1
""" + RECORD + """
redis.call('PUBLISH', KEYS[3], cjson.encode({kind = ARGV[1], revision = 1}))
return epoch
"""
# What a worker reads (the keys of the writes). ARGV: 1 the counter of the last write it
# installed ('' for none), 2 'all' (every record) | 'count'. One atomic step: the counter,
# epoch, count, marker, the recorded writes from the newest back to ARGV[1], and the records.
_READ = """
local meta = redis.call('MGET', KEYS[2], KEYS[4], KEYS[6], KEYS[5])
local history = {}
local head = redis.call('LINDEX', KEYS[7], 0)
if head then
  local since, newest = tonumber(ARGV[1]), tonumber(string.match(head, '^(%d+):'))
  if since and newest and newest > since then
    history = redis.call('LRANGE', KEYS[7], 0, newest - since)
  else
    history = {head}
  end
end
local records
if ARGV[2] == 'all' then records = redis.call('HGETALL', KEYS[1])
else records = redis.call('HLEN', KEYS[1]) end
return {meta, history, records}
"""


class RedisHash:
    kind = "data"  # the "kind" of its events

    def __init__(self, url: str, timeout: float, key: str, revision_key: str, channel: str) -> None:
        self.description = f"redis {redacted_url(url)}"
        self.client: Any = redis_client(url, timeout)
        self.key = key
        self.revision_key = revision_key
        # Set when the counter starts: after a flush and a re-seed the counter repeats, the
        # epoch does not, so no worker mistakes new content for what it already has.
        self.epoch_key = revision_key + ":epoch"
        self.lost_key = revision_key + ":lost"
        self.count_key = revision_key + ":count"
        self.log_key = revision_key + ":log"
        self.channel = channel
        self._reseed = self.client.register_script(_RESEED)
        self._read = self.client.register_script(_READ)

    def unavailable(self, e: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"{self.description}: {e.__class__.__name__}: {e}")

    def keys(self) -> list[str]:
        return [self.key, self.revision_key, self.channel, self.epoch_key, self.lost_key,
                self.count_key, self.log_key]

    async def state(self, since: int | None = None) -> StoreState:
        """The revision, the counts, any loss marker and the writes recorded since the
        counter ``since`` (a worker's last write): one round trip, no records read."""
        meta, history, records = await self.run(self._read, ["" if since is None else since,
                                                             "count"])
        return self._state(meta, history, int(records))

    @staticmethod
    def _state(meta: Sequence[str | None], history: Sequence[str], records: int) -> StoreState:
        counter, epoch, count, lost = meta
        return StoreState(epoch or None, int(counter or 0),
                          int(count) if count is not None else None, records, lost,
                          tuple(history))

    async def revision(self) -> str:
        return (await self.state()).revision

    async def read_state(self, since: int | None = None) -> tuple[StoreState, dict[str, str]]:
        """The state and every record, read together (one script: atomic)."""
        meta, history, flat = await self.run(self._read, ["" if since is None else since, "all"])
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return self._state(meta, history, len(raw)), raw

    async def read(self) -> tuple[str, dict[str, str]]:
        state, raw = await self.read_state()
        return state.revision, raw

    async def run(self, script: Any, args: list[Any]) -> Any:
        try:
            return await script(keys=self.keys(), args=args)
        except ResponseError as e:
            text = str(e)
            if text.startswith(LOST_REPLY):
                raise StoreLost(lost_message(self.description, text[len(LOST_REPLY):].strip())) from e
            raise self.unavailable(e) from e
        except (RedisError, OSError) as e:
            raise self.unavailable(e) from e

    async def mark_lost(self, condition: str, held: str | None, seen: str, at: float) -> bool:
        """Leave the marker that stops ordinary writes and tells starting workers to wait.
        The first worker's marker stays (SET NX): it names what was held before the loss."""
        marker = json.dumps({"condition": condition, "held": held, "seen": seen, "at": int(at)},
                            separators=(",", ":"))
        try:
            return bool(await self.client.set(self.lost_key, marker, nx=True))
        except (RedisError, OSError) as e:
            raise self.unavailable(e) from e

    async def reseed(self, fields: Sequence[tuple[str, str]], *, replace: bool) -> str:
        """Restore the hash under a new ``reseed-`` epoch (an operator's explicit act)."""
        args: list[str] = [self.kind, "replace" if replace else "add"]
        for field, value in fields:
            args += [field, value]
        return str(await self.run(self._reseed, args))

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
