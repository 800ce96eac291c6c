"""HAProxy: the config file parser and editor (pure), the runtime socket and the file store."""
