"""Crisis escalation service: raises escalations from risk signals and escalates them
level by level until someone acknowledges."""
