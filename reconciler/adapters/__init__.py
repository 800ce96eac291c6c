"""
The adapters: the only code that talks to the outside world.

AWS (``aws/``), the HAProxy runtime socket (``haproxy_socket``), the config file and reloads
(``config_store``), the settings file (``settings_file``) and the status listener
(``status_server``). Each turns what it reads into the core's values and its failures into the
error taxonomy of ``reconciler.core.errors``.
"""
