"""A bare aio-pika consume-and-ack loop: the yardstick for the worker's own throughput.

Usage: python -m tests.bench.raw_consumer AMQP_URL QUEUE COUNT PREFETCH
Prints one JSON line: messages acked per second.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aio_pika
import uvloop


async def main(url: str, queue_name: str, count: int, prefetch: int) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(queue_name, passive=True)
    done = asyncio.Event()
    acked = 0
    started = time.monotonic()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal acked
        await message.ack()
        acked += 1
        if acked == count:
            done.set()

    await queue.consume(on_message)
    await done.wait()
    elapsed = time.monotonic() - started
    await connection.close()
    print(json.dumps({"messages": acked, "seconds": elapsed, "per_second": acked / elapsed}))


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
