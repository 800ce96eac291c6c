"""
Benchmarks of issue 7: ``make bench`` (``python -m bench``), ``python -m bench --quick``.

Everything runs for real on loopback: moto in server mode as the AWS account, real HAProxy
processes, HTTP servers on the instances' 127.x addresses, the real ``reconcile`` command (or the
real cycle with the real adapters), and ``bench/naive.py`` as the per-message script compared with.

- ``convergence``: latency from SNS notification to HAProxy, per mode, and the requests that fail
  meanwhile (parts 1 and 4);
- ``burst``: 200 notifications at once (part 2);
- ``scale``: one cycle at 1,000 and 5,000 instances, split (part 3);
- ``cpu``: parse + plan + render of 10,000 servers, no I/O (part 3);
- ``world``, ``handlers``, ``load``, ``stats``, ``profile``, ``report``: the parts they share.
"""
