"""
The garbage collector tuned for a process whose cycles make tens of thousands of short-lived values.

CPython's cyclic collector goes through the youngest objects after every 700 net allocations of
container objects, and through every object the process holds once enough of them survived. A
cycle over a backend of 10,000 servers keeps some 45,000 such values alive until it ends (a parsed
server line, a file line and a report row per server...), so the default thresholds run some 65
collections per cycle, and now and then one through everything: a quarter of such a cycle's CPU
time (``bench/cpu.py``: 221 ms with the defaults, 164 ms with the collector off, before this).

None of it is needed to free a cycle's values: they hold no reference cycles, and reference
counting frees them when the cycle is over. ``tune``, which the controller calls at start-up (and
the CPU benchmark too, so that it measures what the controller runs), applies what the ``gc``
module's documentation offers for this:

- ``gc.freeze()`` once the objects of start-up exist (modules, settings, adapters and their AWS
  clients): they live as long as the process, and no collection goes through them again;
- a youngest-generation threshold of 50,000 instead of 700: about one collection per cycle of
  10,000 servers. The collector still runs and still frees the rare reference cycles (an
  exception's traceback); what waits for it is at most 50,000 young objects, a few MB.
"""

from __future__ import annotations

import gc


#: Net allocations of container objects between two collections of the youngest generation.
YOUNGEST_THRESHOLD = 50_000


def tune() -> None:
    """
    Freeze what exists now and raise the youngest generation's threshold: once at start-up (a
    second call freezes what exists by then).
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_THRESHOLD, middle, oldest)
