"""Moved to `dcrl.targets.entropy_control` (entropy control belongs to the targets that own a
controller); this name stays for existing imports."""

from dcrl.targets.entropy_control import EntropyControl, EntropyControlFields

__all__ = ["EntropyControl", "EntropyControlFields"]
