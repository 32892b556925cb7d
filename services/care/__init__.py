"""The care application: commands on CarePlan, TherapyCourse and Inventory."""
