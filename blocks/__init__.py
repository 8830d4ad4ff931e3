"""Where JobCloud's files live and which container engine runs the jobs."""
