"""haproxy-asg-reconciler: keeps HAProxy backends equal to the InService instances of ASGs."""

__version__ = "0.1.0"
