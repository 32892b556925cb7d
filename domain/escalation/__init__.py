"""Crisis escalation: the policy (configuration) and the Crisis aggregate."""
