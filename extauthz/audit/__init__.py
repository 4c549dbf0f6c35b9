"""The audit trail: ``record`` (one decision as one JSON line), ``sinks`` (stdout and the Redis
Stream, written off the Check path), ``cli`` (``extauthz audit tail|export``)."""
