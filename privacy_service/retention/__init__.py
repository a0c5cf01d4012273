"""Retention: the rules engine that purges data when the policy says, legal holds, and purge runs."""
