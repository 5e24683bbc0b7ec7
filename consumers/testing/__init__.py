"""Testing a consumer without a broker: its handlers run in-process, with the worker's rules.

```python
from consumers.testing import deliver, sample

async def test_sync_fetches_the_placement():
    outcome = await deliver(consumer, sample("placement_updated", tenant=6, PlacementId=86635))
    assert outcome.status == "ok"
```

- `sample`: an event shaped as Avionté sends it, from the simulator's generator.
- `deliver`: the fate a worker would give it (`consumers.runtime.fate` decides for both),
  as an `Outcome`; dedupe keeps its records in a `MemoryDedupe`.
- `avionte_api`: Avionté's documented API on loopback, with the client pointed at it.

Nothing here needs a broker, a database or a network.
"""

from consumers.testing.avionte import AvionteAPI, avionte_api
from consumers.testing.delivery import Outcome, Status, deliver
from consumers.testing.events import sample
from consumers.testing.memory import MemoryDedupe

__all__ = [
    "AvionteAPI",
    "MemoryDedupe",
    "Outcome",
    "Status",
    "avionte_api",
    "deliver",
    "sample",
]
