"""Edge mode: a server that follows a central smtpconfig (`upstream`) instead of keeping a store."""
