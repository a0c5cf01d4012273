"""The PII vault: subjects, their identifiers and their records, all sealed per subject."""
