"""Code that runs on Citadel's hosts at run time; roles only install and configure it.

Standard library only: hosts run it with Debian's own python3, with nothing from PyPI.

- :mod:`citadel_runtime.keydoc`: which API keys a key document accepts right now (shared
  with the controller, which writes those documents);
- :mod:`citadel_runtime.keyguard`: the TLS front of the model server on GPU hosts, which
  accepts only the gateway's internal API key and reloads its certificate and keys when
  the Vault agent renders new ones.
"""
