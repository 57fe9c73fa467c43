"""smtpconfig server."""
