"""The submission loop: every cell one task, results yielded as they complete, the workers'
"cell starts" events turned into `on_start` calls, and what ran where counted."""

from __future__ import annotations

import contextlib
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..sweep import Cell, Result
from . import faults
from .worker import START_TOPIC, run_task


@dataclass
class Tally:
    """What one sweep on the cluster did."""

    keys: dict[str, Cell] = field(default_factory=dict)  # task key -> cell
    counts: Counter = field(default_factory=Counter)  # worker address -> cells it ran
    where: dict[tuple, str] = field(default_factory=dict)  # cell key -> worker that ran it
    failed: int = 0  # failed cells
    restarted: int = 0  # cells started more than once (their worker died)

    def add(self, result: Result, worker: str | None) -> None:
        self.counts[worker or "(none)"] += 1
        if worker is not None:
            self.where[result.cell.key] = worker
        if result.status != "ok":
            self.failed += 1


def run_cells(client, cells: list[Cell], fn: Callable | None, on_start: Callable | None,
              address: str, tally: Tally) -> Iterator[Result]:
    """Run `cells` as tasks on `client`'s cluster, in plan order (earlier tasks go first),
    yielding each result as it completes. Keys are unique per sweep, so a rerun always
    reruns. Stopping early (an error, Ctrl-C, the caller closing the generator) cancels the
    cells not done."""
    from distributed import as_completed

    sweep_id = uuid.uuid4().hex[:8]
    starts: queue.SimpleQueue = queue.SimpleQueue()
    subscribed = _subscribe(client, sweep_id, starts)
    outstanding: dict[str, object] = {}  # key -> future not yet yielded
    seen: Counter = Counter()  # key -> times it started (more: its worker died)
    try:
        for i, cell in enumerate(cells):
            key = f"dagc-cell-{sweep_id}-{i}"
            tally.keys[key] = cell
            outstanding[key] = client.submit(run_task, cell, fn, sweep_id, key, key=key,
                                             pure=False, retries=0)
        pending = as_completed(list(outstanding.values()), loop=client.loop)
        while not pending.is_empty():
            _drain(starts, tally.keys, seen, on_start)
            batch = pending.next_batch(block=False)
            if not batch:
                time.sleep(0.05)
                continue
            for future in batch:
                settled = faults.settle(future, tally.keys[future.key],
                                        client.status in ("running", "connecting"), address)
                if settled is faults.WAIT_AGAIN:  # its result died with its worker
                    pending.add(future)  # as_completed emits it again when it ends
                    continue
                del outstanding[future.key]
                future.release()
                tally.add(*settled)
                yield settled[0]
        _drain(starts, tally.keys, seen, on_start)
        tally.restarted = sum(1 for n in seen.values() if n > 1)
    finally:
        if outstanding:
            with contextlib.suppress(Exception):
                client.cancel(list(outstanding.values()), force=True)
        if subscribed:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(START_TOPIC)


def _subscribe(client, sweep_id: str, starts: queue.SimpleQueue) -> bool:
    """Have the workers' "cell starts" events of this sweep put their keys on `starts`."""
    def handler(event) -> None:
        message = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if isinstance(message, dict) and message.get("sweep") == sweep_id:
            starts.put(message.get("key"))

    try:
        client.subscribe_topic(START_TOPIC, handler)
    except Exception:  # noqa: BLE001 - progress labels only
        return False
    return True


def _drain(starts: queue.SimpleQueue, by_key: dict, seen: Counter, on_start) -> None:
    while True:
        try:
            key = starts.get_nowait()
        except queue.Empty:
            return
        if key not in by_key:
            continue
        seen[key] += 1
        if seen[key] == 1 and on_start is not None:
            on_start(by_key[key])
