"""The receiver a user writes in an afternoon, for `make bench` to measure ours against.

aiohttp and aio-pika, one channel with publisher confirms, an API-key check,
`orjson.loads`, a persistent publish to a topic exchange bound to a quorum queue, and
200 after the confirm. No spool, no metrics, no log line.
"""

import os

import aio_pika
import orjson
from aiohttp import web


async def main() -> web.Application:
    prefix = os.environ["BUS_PREFIX"]
    keys = set(os.environ["WEBHOOK_API_KEYS"].split(","))
    connection = await aio_pika.connect(os.environ["AMQP_URL"])
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(f"{prefix}.naive", "topic", durable=True)
    queue = await channel.declare_queue(
        f"{prefix}.naive", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, "#")

    async def receive(request: web.Request) -> web.Response:
        if request.headers.get("X-api-key") not in keys:
            return web.json_response({"status": "unauthorized"}, status=401)
        body = await request.read()
        event = orjson.loads(body)
        name = str(event["EventName"])
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=name.lower().replace("_", "."),
        )
        return web.json_response({"status": "accepted"})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_post("/webhooks/avionte", receive)
    app.router.add_get("/readyz", readyz)
    return app


if __name__ == "__main__":
    web.run_app(main(), host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None)
