"""Code that runs on Citadel's hosts at run time; roles only install and configure it.

Hosts run it with Debian's own python3, with nothing from PyPI: the standard library, and
``cryptography`` from Debian's python3-cryptography where sealed data is opened. It never
imports ``inventory``, ``deploy``, ``roles`` or ``hardening`` (hosts have none of them);
those import from it. Each role copies the modules it needs to /usr/local/lib/citadel/runtime.

- :mod:`citadel_runtime.layout`: paths, ports and unit names on a host, each defined once
  (the roles and the catalog's checks read them too);
- :mod:`citadel_runtime.gateway`: the gateway service, clinical applications' only door to
  the model (routes, client keys and limits, the PHI guard, the HMAC-chained audit log,
  metrics), and its read-only checks for the audit;
- :mod:`citadel_runtime.keyguard`: the TLS front of the model server on GPU hosts, which
  accepts only the gateway's internal API key and reloads its certificate and keys when
  the Vault agent renders new ones;
- :mod:`citadel_runtime.keydoc`: which API keys a key document accepts right now (shared
  with the controller, which writes those documents);
- :mod:`citadel_runtime.sealed` and :mod:`citadel_runtime.sealed_sign`: the sealed model
  format (chunked AES-256-GCM, the signed manifest, the OpenSSF model-signing bundle),
  shared with the controller, which seals;
- :mod:`citadel_runtime.unseal`: ``citadel-unseal@NAME.service``, which checks a sealed
  model's signatures and decrypts it into RAM for the model server;
- :mod:`citadel_runtime.store_unlock`: opens and mounts the model store's LUKS2 volume
  (``citadel-store-unlock.service``, and the deploy over SSH);
- :mod:`citadel_runtime.uds`: HTTP over a Unix socket, how the host talks to vLLM;
- :mod:`citadel_runtime.vllm_ready`: waits until vLLM answers a real completion;
- :mod:`citadel_runtime.vllm_inspect` and :mod:`citadel_runtime.isolation_probe`: read-only
  facts about the model servers for the audit, and the probe that tries to leave their
  sandbox (``citadel-isolation-probe.timer``) and alerts when it can.
"""
