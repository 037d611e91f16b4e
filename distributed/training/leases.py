"""The coordinator's lease book: which trainer holds which dataset chunk until when, in one SQLite database.

Every move happens in one transaction under one lock, and expiry is decided at the moment of each call from the
clock it is given (no thread expires leases behind the others' backs): a lease past its expiry is free for the next
trainer that asks, and its holder's renewal or report is then refused. A chunk counts once per epoch: a report on a
lease that is no longer the chunk's current one (expired and reassigned) or on a chunk already done is refused with
the reason, never counted. When every chunk of an epoch is done, the next epoch starts with all of them pending.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Clock = Callable[[], float]

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    samples TEXT NOT NULL,            -- sample names, one per line
    state TEXT NOT NULL,              -- pending, leased, done
    lease TEXT,                       -- the current lease id (leased, or the one that finished it)
    peer TEXT,
    expires REAL,
    leases INTEGER NOT NULL DEFAULT 0 -- how many times it was leased this epoch
);
CREATE TABLE IF NOT EXISTS progress (
    epoch INTEGER NOT NULL, reports INTEGER NOT NULL, samples INTEGER NOT NULL, reassigned INTEGER NOT NULL,
    refused INTEGER NOT NULL, loss REAL
);
CREATE TABLE IF NOT EXISTS losses (at REAL NOT NULL, epoch INTEGER NOT NULL, peer TEXT, loss REAL NOT NULL);
"""


class LeaseRefused(LookupError):
    """HTTP 409: the lease is not (or no longer) the chunk's current one, or the chunk is already done."""


@dataclass(frozen=True)
class Lease:
    id: str
    chunk: int
    samples: list[str]
    expires_in_s: float
    epoch: int


@dataclass(frozen=True)
class Progress:
    epoch: int
    chunks: int
    pending: int
    leased: int
    done: int
    reports: int
    samples: int
    reassigned: int
    refused: int
    loss: float | None
    peers: list[str]


class LeaseBook:
    def __init__(self, path: Path | str, lease_s: float, clock: Clock = time.time) -> None:
        self.lease_s = lease_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        if self._db.execute("SELECT COUNT(*) FROM progress").fetchone()[0] == 0:
            self._db.execute("INSERT INTO progress VALUES (0, 0, 0, 0, 0, NULL)")

    def load(self, chunks: list[list[str]]) -> None:
        """The dataset's chunks, once (a coordinator restarted on the same database keeps its state)."""
        with self._lock, self._db:
            if self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]:
                return
            self._db.executemany(
                "INSERT INTO chunks (id, samples, state) VALUES (?, ?, 'pending')",
                [(number, "\n".join(names)) for number, names in enumerate(chunks)],
            )

    def _expire(self, now: float) -> None:
        self._db.execute("UPDATE chunks SET state = 'pending' WHERE state = 'leased' AND expires <= ?", (now,))

    def _epoch(self) -> int:
        return int(self._db.execute("SELECT epoch FROM progress").fetchone()[0])

    def lease(self, peer: str) -> Lease | None:
        """The next pending chunk (an expired lease's chunk included) for `peer`; None while all are held."""
        with self._lock, self._db:
            now = self._clock()
            self._expire(now)
            row = self._db.execute(
                "SELECT id, samples, leases FROM chunks WHERE state = 'pending' ORDER BY leases > 0 DESC, id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            number, samples, times = row
            lease_id = secrets.token_hex(8)
            self._db.execute(
                "UPDATE chunks SET state = 'leased', lease = ?, peer = ?, expires = ?, leases = leases + 1 "
                "WHERE id = ?",
                (lease_id, peer, now + self.lease_s, number),
            )
            if times > 0:  # it was leased before this epoch and not finished: reassigned
                self._db.execute("UPDATE progress SET reassigned = reassigned + 1")
            return Lease(lease_id, number, samples.split("\n"), self.lease_s, self._epoch())

    def _current(self, lease_id: str, now: float) -> tuple[int, str]:
        row = self._db.execute("SELECT id, state, expires FROM chunks WHERE lease = ?", (lease_id,)).fetchone()
        if row is None:
            self._db.execute("UPDATE progress SET refused = refused + 1")
            raise LeaseRefused(f"lease {lease_id} is not current: it expired and its chunk went to another trainer")
        number, state, expires = row
        if state == "done":
            self._db.execute("UPDATE progress SET refused = refused + 1")
            raise LeaseRefused(f"chunk {number} is already done (lease {lease_id} reported it)")
        if state != "leased" or expires <= now:
            self._db.execute("UPDATE progress SET refused = refused + 1")
            raise LeaseRefused(f"lease {lease_id} expired; chunk {number} is free for another trainer")
        return number, state

    def renew(self, lease_id: str) -> float:
        """Extends a current lease; returns its new time left."""
        with self._lock, self._db:
            now = self._clock()
            number, _ = self._current(lease_id, now)
            self._db.execute("UPDATE chunks SET expires = ? WHERE id = ?", (now + self.lease_s, number))
            return self.lease_s

    def report(self, lease_id: str, samples: int, loss: float) -> int:
        """The chunk is done (counted once); returns the epoch it counted in."""
        with self._lock, self._db:
            now = self._clock()
            number, _ = self._current(lease_id, now)
            peer = self._db.execute("SELECT peer FROM chunks WHERE id = ?", (number,)).fetchone()[0]
            epoch = self._epoch()
            self._db.execute("UPDATE chunks SET state = 'done', expires = NULL WHERE id = ?", (number,))
            self._db.execute(
                "UPDATE progress SET reports = reports + 1, samples = samples + ?, loss = ?", (samples, loss)
            )
            self._db.execute("INSERT INTO losses VALUES (?, ?, ?, ?)", (now, epoch, peer, loss))
            left = self._db.execute("SELECT COUNT(*) FROM chunks WHERE state != 'done'").fetchone()[0]
            if left == 0:  # the epoch is complete: every chunk again, for the next one
                self._db.execute("UPDATE chunks SET state = 'pending', lease = NULL, peer = NULL, leases = 0")
                self._db.execute("UPDATE progress SET epoch = epoch + 1")
            return epoch

    def progress(self) -> Progress:
        with self._lock, self._db:
            now = self._clock()
            self._expire(now)
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM chunks GROUP BY state").fetchall())
            epoch, reports, samples, reassigned, refused, loss = self._db.execute("SELECT * FROM progress").fetchone()
            peers = [p for (p,) in self._db.execute("SELECT DISTINCT peer FROM chunks WHERE state = 'leased'")]
            return Progress(
                epoch,
                sum(counts.values()),
                counts.get("pending", 0),
                counts.get("leased", 0),
                counts.get("done", 0),
                reports,
                samples,
                reassigned,
                refused,
                loss,
                sorted(peers),
            )

    def losses(self) -> list[tuple[float, int, str, float]]:
        with self._lock:
            return [tuple(row) for row in self._db.execute("SELECT at, epoch, peer, loss FROM losses ORDER BY at")]  # type: ignore[misc]

    def close(self) -> None:
        self._db.close()
