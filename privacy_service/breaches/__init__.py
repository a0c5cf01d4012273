"""Personal data breaches: incidents, ENISA severity, the 72-hour clock, notifications, register, monitoring."""
