"""Everything that runs: the care application and its shared plumbing, the CLI."""
