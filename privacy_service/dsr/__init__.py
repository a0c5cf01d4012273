"""Data-subject requests: intake, verification, the legal clock, and the answers (access, rectify, erase)."""
