"""Test infrastructure: real moto server and real HAProxy processes on loopback."""
