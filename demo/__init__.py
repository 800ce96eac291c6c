"""
``make demo``: the whole system on one machine, with AWS played by moto on loopback.

``python -m demo`` starts a moto server on 127.0.0.1 holding an Auto Scaling group (its VPC is
``127.0.0.0/16``, so instance addresses are loopback addresses), an SNS topic and an SQS queue
subscribed to it; small HTTP servers answering ``hello from <instance-id>`` on each instance's
address; the real ``reconcile`` controller with that queue, rendering the shipped
``haproxy.cfg.j2``; and a real HAProxy started from the file the controller wrote. Then it plays a
scripted story (``demo.story``), showing ``reconcile drift`` after each step, and stops everything
it started. Everything lives in one temp dir, removed at the end. It prints the lines that run
``reconcile`` on its world from another shell; with ``--stay`` (``DEMO_STAY=1``) the world stays
up after the last step, a playground for the CLI, until Ctrl-C or SIGTERM.

Modules: ``demo.world`` builds and tears down the processes and servers; ``demo.story`` plays and
narrates the steps; ``demo.__main__`` parses the options and maps the outcome to an exit code.
"""
