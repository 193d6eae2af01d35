"""The adversarial tier's harness: the real gateway on loopback and a recording stand-in model
server (implemented in tests/gateway_harness.py, which the gateway's service tests share)."""

from tests.gateway_harness import AUDIT_KEY, CHAT, Behaviour, Gateway, RecordingUpstream, Seen, free_port

__all__ = ["AUDIT_KEY", "CHAT", "Behaviour", "Gateway", "RecordingUpstream", "Seen", "free_port"]
