"""
What test modules share: pytest fixtures over ``harness`` (``moto``, ``haproxy``, ``stack``,
registered in ``tests/conftest.py``) and helpers by noun; a test module never imports another.
"""
