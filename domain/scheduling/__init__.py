"""Scheduling: the CourseSchedule aggregate."""
