"""A bare aio-pika consume-and-ack loop: the yardstick for the worker's own throughput.

Usage: python -m tests.bench.subjects.raw_consumer AMQP_URL QUEUE COUNT PREFETCH
Prints one JSON line: messages acked per second from the first delivery to the last,
and the CPU time per message.
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
    started = cpu = 0.0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal acked, started, cpu
        if not started:
            started, cpu = time.monotonic(), time.process_time()
        await message.ack()
        acked += 1
        if acked == count:
            done.set()

    await queue.consume(on_message)
    await done.wait()
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    await connection.close()
    # Timed from the first delivery, so the first message is not counted in the rate.
    counted = acked - 1
    rate, cpu_us = counted / elapsed, cpu / counted * 1e6
    print(json.dumps({"messages": acked, "seconds": elapsed, "per_second": rate, "cpu_us": cpu_us}))


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
