"""The engine loop's waiting requests, by job, and the order in which admission tries them.

A job is one `Group`: one submit or generate_many call (one HTTP request, one `run`, one
TUI classify). Jobs are tried by priority first (interactive doors before batch jobs),
then by self-clocked fair queuing: each job carries the virtual finish time (`tag`) of
its next request; a backlogged job's tag grows by one per admitted request, a job that
starts waiting begins one past the virtual time of the latest admission, and a job that
has had nothing admitted yet goes first on a tie. So a one-text job is admitted at the
next free slot instead of after a big job's backlog, a big job still gets its turn
among a stream of small ones, and requests of one job keep their submission order.

Slots are shared too (`over_share`): a job holding its share of the slots (all of them
when it is alone) takes another only while a free slot stays for each other active job.
A client sending one text after another gets its slot back at once instead of finding
it taken by a big job in the moment between two of its requests.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_guard.engine.handles import Group, Handle


def over_share(g: Group, n_slots: int, n_free: int, n_jobs: int) -> bool:
    """True when job `g` may not take a free slot now: it already holds its share of the
    `n_slots` (divided among the `n_jobs` jobs running or waiting, rounded up), and taking
    one would leave fewer free slots than there are other jobs."""
    share = -(-n_slots // max(1, n_jobs))
    return g.active >= share and n_free - 1 < n_jobs - 1


class WaitingJobs:
    """Requests waiting for a slot, grouped by job (used by the loop thread only)."""

    def __init__(self) -> None:
        self._jobs: list[Group] = []
        self._clock = 0  # the tag of the latest admitted request
        self._arrivals = itertools.count()
        self._n = 0
        self.admissions = itertools.count()  # numbers each admitted request (Handle.admitted)

    def __len__(self) -> int:
        return self._n

    def add(self, h: Handle) -> None:
        g = h.group
        if not g.waiting:
            g.tag = max(g.last, self._clock) + 1
            g.arrival = next(self._arrivals)
            self._jobs.append(g)
        g.waiting.append(h)
        self._n += 1

    def remove(self, h: Handle) -> bool:
        """Take `h` out of the queue; False when it was not waiting."""
        g = h.group
        if g.waiting and g.waiting[0] is h:
            g.waiting.popleft()
        else:
            try:
                g.waiting.remove(h)
            except ValueError:
                return False
        self._n -= 1
        if not g.waiting:
            self._jobs.remove(g)
        return True

    def admitted(self, h: Handle) -> None:
        """`h` leaves the queue for a slot: its job's virtual time moves on."""
        self.remove(h)
        g = h.group
        h.admitted = next(self.admissions)
        g.admitted += 1
        g.last = g.tag
        self._clock = max(self._clock, g.tag)
        g.tag += 1

    def order(self) -> list[Group]:
        """The jobs with waiting requests, in the order admission tries them."""
        return sorted(self._jobs, key=lambda g: (-g.priority, g.tag, g.admitted > 0, g.arrival))

    def jobs(self) -> list[Group]:
        return list(self._jobs)

    def handles(self) -> list[Handle]:
        """Every waiting request (a copy)."""
        return [h for g in self._jobs for h in g.waiting]
