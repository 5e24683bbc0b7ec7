"""Retries held back by RabbitMQ: found, and released the way the runbook says.

A quorum queue dead-letters at least once: an expired retry stays in its retry queue
until the target queue confirms it. When the target's leader dies at that moment,
RabbitMQ 3.10 can leave such messages there, neither ready nor unacked, until the
retry queue's leader moves (rabbitmq-server issue #12625). The run counts them, and
releases them as an operator would: restarting the RabbitMQ application on the node
that leads the queue (`docs/operating/runbooks/stuck-retries.md`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from tests.chaos.system import System


@dataclass(frozen=True)
class HeldBack:
    queue: str
    queue_leader: str
    count: int


async def held_back(system: System) -> list[HeldBack]:
    """Queues holding messages that are neither ready nor unacked."""
    node = system.up_nodes()[0]
    done = await asyncio.to_thread(
        node.ctl,
        "list_queues",
        "name",
        "leader",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "--formatter",
        "json",
        "-q",
    )
    if done.returncode != 0:
        return []
    found = []
    for queue in json.loads(done.stdout or "[]"):
        count = queue["messages"] - queue["messages_ready"] - queue["messages_unacknowledged"]
        if count > 0 and ".retry." in queue["name"]:
            found.append(HeldBack(queue["name"], queue["leader"], count))
    return found


async def release(system: System, leader: str) -> None:
    """Restart the RabbitMQ application on `leader`: its queues' leaders move elsewhere."""
    node = next(node for node in system.cluster.nodes if node.name == leader)
    await asyncio.to_thread(node.stop_app)
    await asyncio.to_thread(node.start_app)
    await asyncio.to_thread(node.must, "await_startup", timeout=120)
