"""Building an update: its data, its trigger, its sources, and the updater that runs it."""
