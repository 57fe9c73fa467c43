"""What reaches out to hosts a profile names at apply time: the SMTP exchange, the OAuth token
client, and the rules for when a changed host keeps its credentials (`reach`). Every connection
here goes through `smtpconfig.core.netguard` first."""
