"""An OpenDSR 2.0 / OpenGDPR-compatible facade over the native data-subject requests."""
