"""Scheduling service: plans sessions from the course and the strategy in force."""
