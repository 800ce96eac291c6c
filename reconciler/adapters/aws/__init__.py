"""Adapters that talk to AWS: the only modules that import botocore."""
