"""In-memory stand-ins for external systems, faithful enough to test the real adapters against."""
