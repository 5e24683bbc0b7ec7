"""The faults a chaos run injects; each one undoes itself after its planned seconds.

Faults of one kind on one part wait for each other (one broker node down at a time,
so the quorum queues keep their majority); faults of different kinds overlap freely.
"""

from __future__ import annotations

import asyncio
import signal

from tests.chaos.plan import Action
from tests.chaos.record import Journal
from tests.chaos.system import System
from tests.tools.postgres_faults import starting_up


async def inject(system: System, action: Action, journal: Journal) -> None:
    """Run one fault from the plan, recording when it began and ended."""
    fault = _FAULTS[action.what]
    await fault(system, action, journal)


async def _node_kill(system: System, action: Action, journal: Journal) -> None:
    async with system.broker_lock:
        done = journal.begin(action.what, f"node {action.target + 1}", action.at)
        system.node_kill(action.target)
        await asyncio.sleep(action.seconds)
        await system.node_up(action.target)
        journal.end(done, f"down {action.seconds:.1f} s, then restarted")


async def _memory_alarm(system: System, action: Action, journal: Journal) -> None:
    async with system.broker_lock:
        done = journal.begin(action.what, f"node {action.target + 1}", action.at)
        node = system.cluster.nodes[action.target]
        await asyncio.to_thread(node.memory_alarm, True)
        await asyncio.sleep(action.seconds)
        await asyncio.to_thread(node.memory_alarm, False)
        journal.end(done)


async def _link(system: System, action: Action, journal: Journal) -> None:
    slot = system.receivers[action.target % 2]
    async with slot.lock:
        done = journal.begin(action.what, f"receiver {slot.index + 1}", action.at)
        if action.what == "link-cut":
            for proxy in slot.proxies:
                proxy.refuse(True)
            await asyncio.gather(*(proxy.cut() for proxy in slot.proxies))
        else:
            for proxy in slot.proxies:
                proxy.stall()
        await asyncio.sleep(action.seconds)
        for proxy in slot.proxies:
            proxy.refuse(False)
            proxy.resume()
        journal.end(done)


async def _receiver(system: System, action: Action, journal: Journal) -> None:
    # Only the first receiver: the second's spool lives on a filesystem of its process.
    slot = system.receivers[0]
    async with slot.lock:
        done = journal.begin(action.what, "receiver 1", action.at)
        assert slot.process is not None
        signum = signal.SIGKILL if action.what == "receiver-kill" else signal.SIGTERM
        slot.process.send_signal(signum)
        code = await asyncio.wait_for(slot.process.wait(), 60)
        await asyncio.sleep(min(action.seconds, 3.0))
        await system.start_receiver(slot)
        journal.end(done, f"exited {code}, restarted on its spool")


async def _worker_kill(system: System, action: Action, journal: Journal) -> None:
    async with system.worker_lock:
        live = [
            (name, replica)
            for name, replicas in sorted(system.workers.items())
            for replica in replicas
            if replica.process.returncode is None
        ]
        if not live:
            return
        name, replica = live[action.target % len(live)]
        done = journal.begin(action.what, name, action.at)
        replica.process.kill()
        await replica.process.wait()
        system.workers[name].remove(replica)
        await asyncio.sleep(action.seconds)
        await system.start_worker(name)
        journal.end(done, f"SIGKILL, restarted after {action.seconds:.1f} s")


async def _postgres(system: System, action: Action, journal: Journal) -> None:
    proxy = system.postgres
    assert proxy is not None
    async with system.postgres_lock:
        done = journal.begin(action.what, "postgresql", action.at)
        if action.what == "postgres-down":
            proxy.refuse(True)
        else:
            proxy.answer(starting_up)
        await proxy.cut()
        await asyncio.sleep(action.seconds)
        proxy.refuse(False)
        proxy.answer(None)
        journal.end(done)


async def _spool_full(system: System, action: Action, journal: Journal) -> None:
    slot = system.receivers[1]
    assert slot.disk is not None
    async with system.disk_lock:
        done = journal.begin(action.what, "receiver 2", action.at)
        await asyncio.to_thread(slot.disk.fill)
        await asyncio.sleep(action.seconds)
        slot.disk.free()
        journal.end(done)


_FAULTS = {
    "node-kill": _node_kill,
    "memory-alarm": _memory_alarm,
    "link-cut": _link,
    "link-stall": _link,
    "receiver-kill": _receiver,
    "receiver-stop": _receiver,
    "worker-kill": _worker_kill,
    "postgres-down": _postgres,
    "postgres-starting": _postgres,
    "spool-full": _spool_full,
}
