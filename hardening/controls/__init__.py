"""Control areas. Each module exports CONTROLS: list[hardening.model.Control]."""
