"""
The pure core: values, parsing, planning and verdicts.

Nothing here reads a file, opens a socket, runs a process, looks at the environment or imports
boto3; the import contracts in ``pyproject.toml`` hold it to that.
"""
