"""
The world around the controller, played on one machine for the tests, ``make demo`` and ``bench``.

Real processes on loopback (127.0.0.0/8 only: HTTP backends and HAProxy refuse any other address):

- ``harness.moto``: a moto server as the AWS account (``Cloud`` builds groups on a loopback VPC and
  makes AWS misbehave on demand);
- ``harness.haproxy``: real HAProxy processes in master-worker mode with an admin socket, and HTTP
  backends answering on the instances' addresses;
- ``harness.faulty_socket``: a fault-injecting proxy in front of HAProxy's admin socket;
- ``harness.stack``: one deployment of all of them plus the real ``reconcile`` command, and its
  notification queue; ``harness.lifecycle`` and ``harness.load`` drive lifecycle hooks and client
  load through it; ``harness.messages`` builds the message bodies AWS sends.

And, for tests of the pure core and the CPU benchmark, ``harness.fakes``: hand-written in-memory
fakes of the ports.

Not shipped: the wheel holds only ``reconciler`` (``[tool.hatch.build.targets.wheel]``), and
nothing in ``reconciler`` imports this package. It knows nothing of pytest: ``tests/support`` wraps
it in fixtures, and a part that does not start or answer in time raises ``HarnessError``.
"""


class HarnessError(AssertionError):
    """
    A real part did not behave as the harness relies on: it did not start, answer or reach the
    state waited for in time, died, or answered what no working part answers.

    An ``AssertionError``, so a test meeting one fails as on any unmet expectation; the demo and
    the chaos suite catch it to report a run that broke down.
    """
