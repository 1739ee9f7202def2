"""driftline.models: encoders, datasets, the classifier, training, export and the serving path."""
