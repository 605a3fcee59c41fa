"""ganforge's built-in plugins, installed as ``ganforge_plugins`` and found through entry points."""
