"""driftline.online: drift detectors, feedback join, registry, the updater and the serving operation."""
