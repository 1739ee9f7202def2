"""driftline.streams: the Faust stream processor (agents, checkpoint, sinks, alerts, metrics)."""
