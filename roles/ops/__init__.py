"""Citadel's own pyinfra operations, for what pyinfra's modules do not do safely."""
